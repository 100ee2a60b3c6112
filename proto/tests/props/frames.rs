//! Native frames (`GET /ws`) in both subprotocols: client frames as the gateway decodes
//! them, server frames as the gateway encodes them and clients decode them.

use proptest::prelude::*;
use serde_json::{Value, json};
use ziraai_proto::{ClientFrame, ClientFrameError, EventFrame, ServerFrame};

use crate::mangle::{apply, damages};
use crate::strategy::{any_text, nested_arrays, object, object_with_keys, value};

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        Just(ClientFrame::Ping),
        any::<u64>().prop_map(|seq| ClientFrame::Ack { seq }),
    ]
}

pub(crate) fn event_frame() -> impl Strategy<Value = EventFrame> {
    (
        any::<u64>(),
        any_text(),
        any_text(),
        object(),
        prop::option::of(any_text()),
    )
        .prop_map(|(seq, id, kind, data, occurred_at)| EventFrame {
            seq,
            id,
            kind,
            data,
            occurred_at,
        })
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    let welcome = (
        any_text(),
        any_text(),
        any::<u64>(),
        any::<bool>(),
        prop::option::of(any::<u64>()),
        prop::option::of(any_text()),
    )
        .prop_map(
            |(connection_id, user_id, resumed_after, gap, oldest_available, device_id)| {
                ServerFrame::Welcome {
                    connection_id,
                    user_id,
                    resumed_after,
                    gap,
                    oldest_available,
                    device_id,
                }
            },
        );
    prop_oneof![
        welcome,
        event_frame().prop_map(ServerFrame::Event),
        Just(ServerFrame::Pong),
        (any_text(), any_text()).prop_map(|(code, message)| ServerFrame::Error { code, message }),
    ]
}

/// The outcome is a frame or a classified error; a decoded ack's `seq` is the one sent.
fn check_client_decode(decoded: Result<ClientFrame, ClientFrameError>, sent: &Value) {
    if let Ok(ClientFrame::Ack { seq }) = decoded {
        assert_eq!(sent.get("seq").and_then(Value::as_u64), Some(seq), "{sent}");
    }
}

proptest! {
    #[test]
    fn client_json_from_any_text_never_panics(text in any_text()) {
        let _ = ClientFrame::from_json(&text);
    }

    #[test]
    fn client_msgpack_from_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ClientFrame::from_msgpack(&bytes);
    }

    #[test]
    fn client_frames_round_trip_in_both_encodings(frame in client_frame()) {
        let text = serde_json::to_string(&frame).expect("encode JSON");
        prop_assert_eq!(ClientFrame::from_json(&text).ok(), Some(frame.clone()));
        let packed = rmp_serde::to_vec_named(&frame).expect("encode MessagePack");
        prop_assert_eq!(ClientFrame::from_msgpack(&packed).ok(), Some(frame));
    }

    #[test]
    fn plausible_client_objects_decode_or_are_refused(
        v in object_with_keys(&["type", "seq"]),
        ty in prop::option::of(prop_oneof![Just(json!("ping")), Just(json!("ack")), value()]),
    ) {
        let mut v = v;
        if let (Some(ty), Value::Object(m)) = (ty, &mut v) {
            m.insert("type".into(), ty);
        }
        let text = v.to_string();
        let decoded = ClientFrame::from_json(&text);
        prop_assert!(!matches!(decoded, Err(ClientFrameError::Undecodable(_))), "{text}");
        check_client_decode(decoded, &v);
        let packed = rmp_serde::to_vec_named(&v).expect("encode MessagePack");
        check_client_decode(ClientFrame::from_msgpack(&packed), &v);
    }

    #[test]
    fn damaged_client_frames_never_panic(frame in client_frame(), dmg in damages()) {
        let text = serde_json::to_vec(&frame).expect("encode JSON");
        let _ = ClientFrame::from_json(&String::from_utf8_lossy(&apply(&text, &dmg)));
        let packed = rmp_serde::to_vec_named(&frame).expect("encode MessagePack");
        let _ = ClientFrame::from_msgpack(&apply(&packed, &dmg));
    }

    #[test]
    fn server_frames_round_trip_in_both_encodings(frame in server_frame()) {
        let back: ServerFrame = serde_json::from_str(&frame.to_json()).expect("decode JSON");
        prop_assert_eq!(&back, &frame);
        let back: ServerFrame = rmp_serde::from_slice(&frame.to_msgpack()).expect("decode MessagePack");
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn damaged_server_frames_never_panic_a_client(frame in server_frame(), dmg in damages()) {
        let _ = serde_json::from_slice::<ServerFrame>(&apply(frame.to_json().as_bytes(), &dmg));
        let _ = rmp_serde::from_slice::<ServerFrame>(&apply(&frame.to_msgpack(), &dmg));
    }
}

#[test]
fn deeply_nested_client_frames_are_refused_without_overflow() {
    for depth in [64, 200, 1_000, 5_000, 100_000] {
        let text = format!(r#"{{"type":"ack","seq":{}}}"#, "[".repeat(depth));
        assert!(ClientFrame::from_json(&text).is_err(), "{depth}");
        let mut packed = vec![0x82, 0xa4];
        packed.extend_from_slice(b"type");
        packed.extend_from_slice(&[0xa3, b'a', b'c', b'k', 0xa3, b's', b'e', b'q']);
        packed.extend(std::iter::repeat_n(0x91, depth));
        packed.push(0xc0);
        assert!(ClientFrame::from_msgpack(&packed).is_err(), "{depth}");
        let json = nested_arrays(depth.min(100)).to_string();
        assert!(ClientFrame::from_json(&json).is_err());
    }
}

#[test]
fn huge_msgpack_lengths_are_refused_without_allocating() {
    // array32 / map32 / str32 / bin32 claiming 4 GiB with nothing behind them.
    for marker in [0xdd, 0xdf, 0xdb, 0xc6] {
        let bytes = [marker, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            ClientFrame::from_msgpack(&bytes),
            Err(ClientFrameError::Undecodable(_))
        ));
    }
}
