//! Both SignalR hub protocols: the handshake, JSON records ending in 0x1E, and
//! MessagePack messages behind a VarInt length. Client messages are encoded here as the
//! reference client lays them out; server messages by the production encoder.

use proptest::prelude::*;
use serde_json::{Value, json};
use ziraai_proto::signalr::{
    ClientMessage, HandshakeError, HubMessageError, HubProtocol, MAX_VERSION, RS, ServerMessage,
    parse_handshake, parse_messages, read_varint, write_varint,
};

use crate::mangle::{apply, damages};
use crate::strategy::{any_text, nested_arrays, object, object_with_keys, value};

const MAX: usize = 32 * 1024;

fn protocol() -> impl Strategy<Value = HubProtocol> {
    prop_oneof![Just(HubProtocol::Json), Just(HubProtocol::MessagePack)]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            prop::option::of("[^\\x00]{1,12}"),
            any_text(),
            any::<bool>()
        )
            .prop_map(
                |(invocation_id, target, streaming)| ClientMessage::Invocation {
                    invocation_id,
                    target,
                    streaming,
                }
            ),
        Just(ClientMessage::Ping),
        Just(ClientMessage::Close),
        any::<u64>().prop_map(ClientMessage::Ack),
        any::<u64>().prop_map(ClientMessage::Sequence),
        prop_oneof![Just(2u64), Just(3), Just(5), 10u64..1000].prop_map(|_| ClientMessage::Other),
    ]
}

/// A client message as the reference clients frame it.
fn encode_client(m: &ClientMessage, protocol: HubProtocol) -> Vec<u8> {
    let json_protocol = protocol == HubProtocol::Json;
    let v = match (m, json_protocol) {
        (
            ClientMessage::Invocation {
                invocation_id,
                target,
                streaming,
            },
            true,
        ) => {
            let kind = if *streaming { 4 } else { 1 };
            let mut v = json!({"type": kind, "target": target, "arguments": [1, "x"]});
            if let Some(id) = invocation_id {
                v["invocationId"] = json!(id);
            }
            v
        }
        (
            ClientMessage::Invocation {
                invocation_id,
                target,
                streaming,
            },
            false,
        ) => {
            let kind = if *streaming { 4 } else { 1 };
            json!([kind, {}, invocation_id, target, [1, "x"], []])
        }
        (ClientMessage::Ping, true) => json!({"type": 6}),
        (ClientMessage::Ping, false) => json!([6]),
        (ClientMessage::Close, true) => json!({"type": 7, "error": "bye"}),
        (ClientMessage::Close, false) => json!([7, "bye", true]),
        (ClientMessage::Ack(n), true) => json!({"type": 8, "sequenceId": n}),
        (ClientMessage::Ack(n), false) => json!([8, n]),
        (ClientMessage::Sequence(n), true) => json!({"type": 9, "sequenceId": n}),
        (ClientMessage::Sequence(n), false) => json!([9, n]),
        (ClientMessage::Other, true) => json!({"type": 3, "invocationId": "1", "result": 2}),
        (ClientMessage::Other, false) => json!([3, {}, "1", 3, 2]),
    };
    frame(&v, protocol)
}

/// Frames one message body: JSON text + RS, or VarInt length + MessagePack.
fn frame(v: &Value, protocol: HubProtocol) -> Vec<u8> {
    match protocol {
        HubProtocol::Json => {
            let mut out = serde_json::to_vec(v).expect("encode");
            out.push(RS);
            out
        }
        HubProtocol::MessagePack => {
            let body = rmp_serde::to_vec(v).expect("encode");
            let mut out = Vec::new();
            write_varint(body.len(), &mut out);
            out.extend_from_slice(&body);
            out
        }
    }
}

/// What a client reads back from a server message (the same codec serves both sides).
fn expected_from_server(m: &ServerMessage<'_>) -> ClientMessage {
    match m {
        ServerMessage::Invocation { target, .. } => ClientMessage::Invocation {
            invocation_id: None,
            target: (*target).to_owned(),
            streaming: false,
        },
        ServerMessage::CompletionError { .. } => ClientMessage::Other,
        ServerMessage::Ping => ClientMessage::Ping,
        ServerMessage::Close { .. } => ClientMessage::Close,
        ServerMessage::Ack(n) => ClientMessage::Ack(*n),
        ServerMessage::Sequence(n) => ClientMessage::Sequence(*n),
    }
}

proptest! {
    #[test]
    fn handshakes_from_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        match parse_handshake(&bytes) {
            Err(HandshakeError::Incomplete) => prop_assert!(!bytes.contains(&RS)),
            Ok(h) => prop_assert!((1..=MAX_VERSION).contains(&h.version)),
            Err(_) => {}
        }
    }

    #[test]
    fn plausible_handshakes_parse_or_are_refused(
        v in object_with_keys(&["protocol", "version"]),
        name in prop::option::of(prop_oneof![Just(json!("json")), Just(json!("messagepack")), value()]),
        version in prop::option::of(prop_oneof![(0u64..4).prop_map(|n| json!(n)), value()]),
        rest in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut v = v;
        if let Value::Object(m) = &mut v {
            name.map(|n| m.insert("protocol".into(), n));
            version.map(|n| m.insert("version".into(), n));
        }
        let mut bytes = serde_json::to_vec(&v).expect("encode");
        bytes.push(RS);
        bytes.extend_from_slice(&rest);
        if let Ok(h) = parse_handshake(&bytes) {
            let name = if h.protocol == HubProtocol::Json { "json" } else { "messagepack" };
            prop_assert_eq!(v.get("protocol"), Some(&json!(name)));
            prop_assert_eq!(v.get("version").and_then(Value::as_u64), Some(h.version));
            prop_assert_eq!(h.rest, rest);
        }
    }

    #[test]
    fn messages_from_any_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        protocol in protocol(),
        max in prop_oneof![0usize..64, Just(MAX), Just(usize::MAX)],
    ) {
        let _ = parse_messages(protocol, &bytes, max);
    }

    #[test]
    fn client_messages_round_trip(
        msgs in prop::collection::vec(client_message(), 1..5),
        protocol in protocol(),
    ) {
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode_client(m, protocol)).collect();
        prop_assert_eq!(parse_messages(protocol, &bytes, MAX), Ok(msgs));
    }

    #[test]
    fn server_messages_read_back(
        target in any_text(),
        argument in object(),
        text in any_text(),
        flag in any::<bool>(),
        n in any::<u64>(),
        pick in 0usize..6,
        protocol in protocol(),
    ) {
        let m = match pick {
            0 => ServerMessage::Invocation { target: &target, argument: &argument },
            1 => ServerMessage::CompletionError { invocation_id: &text, error: &target },
            2 => ServerMessage::Ping,
            3 => ServerMessage::Close { error: flag.then_some(text.as_str()), allow_reconnect: flag },
            4 => ServerMessage::Ack(n),
            _ => ServerMessage::Sequence(n),
        };
        let bytes = m.encode(protocol);
        prop_assert_eq!(parse_messages(protocol, &bytes, usize::MAX), Ok(vec![expected_from_server(&m)]));
        if let ServerMessage::Invocation { .. } = m {
            // The argument arrives as the one element of `arguments`.
            let v: Value = match protocol {
                HubProtocol::Json => serde_json::from_slice(&bytes[..bytes.len() - 1]).expect("JSON"),
                HubProtocol::MessagePack => {
                    let (len, used) = read_varint(&bytes).expect("length");
                    prop_assert_eq!(used + len, bytes.len());
                    let v: Value = rmp_serde::from_slice(&bytes[used..]).expect("MessagePack");
                    json!({"arguments": v[4]})
                }
            };
            prop_assert_eq!(&v["arguments"], &json!([argument]));
        }
    }

    #[test]
    fn damaged_messages_never_panic(
        msgs in prop::collection::vec(client_message(), 1..4),
        protocol in protocol(),
        dmg in damages(),
    ) {
        let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode_client(m, protocol)).collect();
        let _ = parse_messages(protocol, &apply(&bytes, &dmg), MAX);
    }

    #[test]
    fn plausible_message_shapes_parse_or_are_refused(
        v in prop_oneof![
            object_with_keys(&["type", "target", "invocationId", "sequenceId", "arguments"]),
            prop::collection::vec(value(), 0..7).prop_map(Value::Array),
        ],
        ty in prop::option::of(0u64..12),
        protocol in protocol(),
    ) {
        let mut v = v;
        match (&mut v, ty) {
            (Value::Object(m), Some(t)) => { m.insert("type".into(), json!(t)); }
            (Value::Array(a), Some(t)) if !a.is_empty() => a[0] = json!(t),
            _ => {}
        }
        let _ = parse_messages(protocol, &frame(&v, protocol), MAX);
    }

    #[test]
    fn varints_round_trip(len in 0usize..(1 << 31), tail in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut bytes = Vec::new();
        write_varint(len, &mut bytes);
        prop_assert!(bytes.len() <= 5);
        let used = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(read_varint(&bytes), Ok((len, used)));
    }

    #[test]
    fn huge_lengths_are_refused_before_reading(
        prefix in prop::collection::vec(0x80u8..=0xff, 0..5),
        last in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = prefix;
        bytes.push(last);
        bytes.extend_from_slice(&body);
        match parse_messages(HubProtocol::MessagePack, &bytes, MAX) {
            Err(HubMessageError::TooLarge(n)) => prop_assert!(n > MAX),
            Err(HubMessageError::Malformed(_)) => {}
            Ok(msgs) => prop_assert!(!msgs.is_empty() || bytes.is_empty()),
        }
    }
}

#[test]
fn deeply_nested_messages_are_refused_without_overflow() {
    for depth in [200, 1_000, 5_000, 100_000] {
        for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
            let mut bytes = match protocol {
                HubProtocol::Json => format!(
                    r#"{{"type":1,"target":"x","arguments":{}"#,
                    "[".repeat(depth)
                )
                .into_bytes(),
                HubProtocol::MessagePack => {
                    let mut body = vec![0x95, 0x01, 0x80, 0xc0, 0xa1, b'x'];
                    body.extend(std::iter::repeat_n(0x91, depth));
                    body.push(0xc0);
                    let mut out = Vec::new();
                    write_varint(body.len(), &mut out);
                    out.extend_from_slice(&body);
                    out
                }
            };
            if protocol == HubProtocol::Json {
                bytes.push(RS);
            }
            assert!(
                parse_messages(protocol, &bytes, usize::MAX).is_err(),
                "{depth} {protocol:?}"
            );
        }
    }
    let nested = frame(
        &json!([1, {}, null, "x", [nested_arrays(100)], []]),
        HubProtocol::MessagePack,
    );
    assert!(parse_messages(HubProtocol::MessagePack, &nested, usize::MAX).is_ok());
}
