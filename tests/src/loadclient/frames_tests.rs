use serde_json::{Map, Value, json};
use ziraai_proto::signalr::{HubProtocol, ServerMessage};
use ziraai_proto::{EventFrame, ServerFrame};

use super::*;

fn data(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn event(seq: u64, data_v: Value) -> ServerFrame {
    ServerFrame::Event(EventFrame {
        seq,
        id: format!("evt-{seq}"),
        kind: "analysis.completed".into(),
        data: data(data_v),
        occurred_at: None,
    })
}

#[test]
fn native_events_give_their_sequence_and_analysis_id_in_both_encodings() {
    for msgpack in [false, true] {
        let enc = |f: &ServerFrame| {
            if msgpack {
                f.to_msgpack()
            } else {
                f.to_json().into_bytes()
            }
        };
        let e = enc(&event(7, json!({"analysisId": "a-1", "x": [1, 2]})));
        assert_eq!(
            native(msgpack, &e),
            Ok(Native::Event {
                seq: 7,
                analysis_id: "a-1".into()
            })
        );
        let numeric = enc(&event(8, json!({"analysisId": 42})));
        assert_eq!(
            native(msgpack, &numeric),
            Ok(Native::Event {
                seq: 8,
                analysis_id: "42".into()
            })
        );
        let odd = enc(&event(9, json!({"analysisId": 1.5})));
        assert_eq!(
            native(msgpack, &odd),
            Ok(Native::Event {
                seq: 9,
                analysis_id: "evt-9".into()
            }),
            "without a usable analysisId, the event id"
        );
        let welcome = enc(&ServerFrame::Welcome {
            connection_id: "c".into(),
            user_id: "u".into(),
            resumed_after: 3,
            gap: false,
            oldest_available: None,
            device_id: Some("d".into()),
        });
        assert_eq!(native(msgpack, &welcome), Ok(Native::Welcome));
        assert_eq!(native(msgpack, &enc(&ServerFrame::Pong)), Ok(Native::Other));
        let err = enc(&ServerFrame::Error {
            code: "slow_consumer".into(),
            message: "m".into(),
        });
        assert!(
            matches!(native(msgpack, &err), Ok(Native::Error { code, .. }) if code == "slow_consumer")
        );
    }
}

#[test]
fn native_acks_are_what_the_gateway_decodes() {
    let Message::Text(t) = native_ack(false, 12) else {
        panic!("JSON ack is text")
    };
    assert_eq!(
        ClientFrame::from_json(t.as_str()).ok(),
        Some(ClientFrame::Ack { seq: 12 })
    );
    let Message::Binary(b) = native_ack(true, u64::MAX) else {
        panic!("MessagePack ack is binary")
    };
    assert_eq!(
        ClientFrame::from_msgpack(&b).ok(),
        Some(ClientFrame::Ack { seq: u64::MAX })
    );
}

#[test]
fn bad_native_frames_are_errors_not_panics() {
    for bytes in [
        &b""[..],
        b"{",
        b"null",
        b"{\"type\":\"event\"}",
        b"{\"type\":3}",
        &[0xc1],
        &[0x91; 4000],
    ] {
        assert!(native(false, bytes).is_err(), "{bytes:?}");
        assert!(native(true, bytes).is_err(), "{bytes:?}");
    }
}

#[test]
fn hub_messages_are_split_and_classified_in_both_protocols() {
    let arg = data(json!({"analysisId": "a-9", "result": {"deep": [1]}}));
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        let msgpack = protocol == HubProtocol::MessagePack;
        let mut frame = Vec::new();
        for m in [
            ServerMessage::Invocation {
                target: "AnalysisCompleted",
                argument: &arg,
            },
            ServerMessage::Ping,
            ServerMessage::CompletionError {
                invocation_id: "1",
                error: "x",
            },
            ServerMessage::Sequence(4),
            ServerMessage::Ack(2),
            ServerMessage::Close {
                error: Some("Server is restarting; reconnect."),
                allow_reconnect: true,
            },
        ] {
            frame.extend(m.encode(protocol));
        }
        assert_eq!(
            hub(msgpack, &frame),
            Ok(vec![
                Hub::Invocation {
                    analysis_id: "a-9".into()
                },
                Hub::Ping,
                Hub::Tracked,
                Hub::Sequence(4),
                Hub::Ack(2),
                Hub::Close {
                    error: Some("Server is restarting; reconnect.".into()),
                    allow_reconnect: true
                },
            ]),
            "{protocol:?}"
        );
        let close = ServerMessage::Close {
            error: Some("connection_limit"),
            allow_reconnect: false,
        }
        .encode(protocol);
        assert!(matches!(
            hub(msgpack, &close).as_deref(),
            Ok([Hub::Close {
                allow_reconnect: false,
                ..
            }])
        ));
    }
}

#[test]
fn bad_hub_messages_are_errors_not_panics() {
    for bytes in [
        &b"{\"type\":1}"[..],
        b"{}\x1e",
        b"not json\x1e",
        b"{\"type\":8}\x1e",
    ] {
        assert!(hub(false, bytes).is_err(), "{bytes:?}");
    }
    for bytes in [
        &[0x05, 0x91][..],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0x01, 0xc1],
        &[0x02, 0x91, 0xa1],
        &[0x01, 0x80],
    ] {
        assert!(hub(true, bytes).is_err(), "{bytes:?}");
    }
    assert_eq!(hub(true, &[]), Ok(vec![]));
    assert_eq!(hub(true, &[0x02, 0x91, 0x63]), Ok(vec![Hub::Other]));
}

#[test]
fn handshakes() {
    assert_eq!(handshake_response(b"{}\x1e"), Ok(&b""[..]));
    assert_eq!(
        handshake_response(b"{}\x1e{\"type\":6}\x1e"),
        Ok(&b"{\"type\":6}\x1e"[..])
    );
    assert!(handshake_response(b"{\"error\":\"no\"}\x1e").is_err());
    assert!(handshake_response(b"{}").is_err());
    let Message::Text(t) = handshake_request(true, 2) else {
        panic!("text")
    };
    assert_eq!(
        ziraai_proto::signalr::parse_handshake(t.as_bytes()).map(|h| (h.protocol, h.version)),
        Ok((HubProtocol::MessagePack, 2))
    );
}
