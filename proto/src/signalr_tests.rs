//! Byte-exact checks against the examples of the protocol reference (§6, §12).

use super::*;

/// The limit callers pass: the gateway's configured default
/// (`ziraai_common::config::DEFAULT_SIGNALR_MAX_MESSAGE`, .NET's 32 KiB). The codec
/// itself has no default; the limit is always the caller's.
const MAX_MESSAGE: usize = 32 * 1024;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect()
}

fn arg() -> Map<String, Value> {
    let Value::Object(m) = json!({"analysisId": "a1", "status": "ok"}) else {
        unreachable!()
    };
    m
}

#[test]
fn msgpack_server_messages_match_the_reference_bytes() {
    use HubProtocol::MessagePack as M;
    let a = arg();
    let invocation = ServerMessage::Invocation {
        target: "AnalysisCompleted",
        argument: &a,
    };
    assert_eq!(
        invocation.encode(M),
        hex(
            "31 96 01 80 C0 B1 41 6E 61 6C 79 73 69 73 43 6F 6D 70 6C 65 74 65 64 91 82 AA 61 6E 61 6C 79 73 69 73 49 64 A2 61 31 A6 73 74 61 74 75 73 A2 6F 6B 90"
        )
    );
    assert_eq!(ServerMessage::Ping.encode(M), hex("02 91 06"));
    let close = ServerMessage::Close {
        error: None,
        allow_reconnect: false,
    };
    assert_eq!(close.encode(M), hex("04 93 07 C0 C2"));
    let bye = ServerMessage::Close {
        error: Some("bye"),
        allow_reconnect: true,
    };
    assert_eq!(bye.encode(M), hex("07 93 07 A3 62 79 65 C3"));
    assert_eq!(ServerMessage::Ack(5).encode(M), hex("03 92 08 05"));
    assert_eq!(ServerMessage::Sequence(3).encode(M), hex("03 92 09 03"));
    let completion = ServerMessage::CompletionError {
        invocation_id: "0",
        error: "x",
    };
    assert_eq!(completion.encode(M), hex("08 95 03 80 A1 30 01 A1 78"));
}

#[test]
fn json_server_messages_are_records_the_js_client_accepts() {
    use HubProtocol::Json as J;
    let a = arg();
    let bytes = ServerMessage::Invocation {
        target: "AnalysisCompleted",
        argument: &a,
    }
    .encode(J);
    assert_eq!(bytes.last(), Some(&RS));
    let v: Value = serde_json::from_slice(&bytes[..bytes.len() - 1]).expect("json");
    assert_eq!(
        v,
        json!({"type": 1, "target": "AnalysisCompleted", "arguments": [{"analysisId": "a1", "status": "ok"}]})
    );
    assert!(
        v.get("invocationId").is_none(),
        "never send invocationId: null"
    );
    assert_eq!(ServerMessage::Ping.encode(J), b"{\"type\":6}\x1e");
    assert_eq!(
        ServerMessage::Close {
            error: None,
            allow_reconnect: false
        }
        .encode(J),
        b"{\"type\":7}\x1e"
    );
    let v: Value = serde_json::from_slice(
        ServerMessage::Close {
            error: Some("restarting"),
            allow_reconnect: true,
        }
        .encode(J)
        .strip_suffix(&[RS])
        .expect("RS"),
    )
    .expect("json");
    assert_eq!(
        v,
        json!({"type": 7, "error": "restarting", "allowReconnect": true})
    );
    let evicted = ServerMessage::Close {
        error: Some("connection_limit"),
        allow_reconnect: false,
    }
    .encode(J);
    let v: Value = serde_json::from_slice(evicted.strip_suffix(&[RS]).expect("RS")).expect("json");
    assert_eq!(
        v,
        json!({"type": 7, "error": "connection_limit", "allowReconnect": false})
    );
}

#[test]
fn varints_match_the_reference() {
    for (n, bytes) in [
        (53, "35"),
        (128, "80 01"),
        (5248, "80 29"),
        (2_147_483_647, "FF FF FF FF 07"),
    ] {
        let mut out = Vec::new();
        write_varint(n, &mut out);
        assert_eq!(out, hex(bytes), "{n}");
        assert_eq!(read_varint(&out), Ok((n, out.len())));
    }
    assert!(
        read_varint(&hex("FF FF FF FF 08")).is_err(),
        "fifth byte above 0x07"
    );
    assert!(read_varint(&hex("80 80")).is_err(), "truncated");
}

#[test]
fn handshakes() {
    let h = parse_handshake(b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":6}\x1e")
        .expect("valid");
    assert_eq!((h.protocol, h.version), (HubProtocol::Json, 1));
    assert_eq!(h.rest, b"{\"type\":6}\x1e");
    let h = parse_handshake(b"{\"version\":2,\"protocol\":\"messagepack\",\"extra\":true}\x1e")
        .expect("valid");
    assert_eq!((h.protocol, h.version), (HubProtocol::MessagePack, 2));
    assert_eq!(
        parse_handshake(b"{\"protocol\":\"json\""),
        Err(HandshakeError::Incomplete)
    );
    let e = parse_handshake(b"{\"protocol\":\"xml\",\"version\":1}\x1e").expect_err("unsupported");
    assert_eq!(e.to_string(), "The protocol 'xml' is not supported.");
    let e = parse_handshake(b"{\"protocol\":\"json\",\"version\":3}\x1e").expect_err("version");
    assert_eq!(
        e.to_string(),
        "The server does not support version 3 of the 'json' protocol."
    );
    for bad in [
        &b"{\"protocol\":\"json\"}\x1e"[..],
        b"nope\x1e",
        b"{\"version\":1}\x1e",
    ] {
        assert_eq!(parse_handshake(bad), Err(HandshakeError::Malformed));
    }
    assert_eq!(handshake_response(None), hex("7B 7D 1E"));
    let err = handshake_response(Some(&HandshakeError::UnsupportedProtocol("x".into())));
    assert_eq!(
        err,
        b"{\"error\":\"The protocol 'x' is not supported.\"}\x1e"
    );
}

#[test]
fn json_client_messages_batch_and_fail_clearly() {
    let batch = b"{\"type\":6}\x1e{\"type\":1,\"invocationId\":\"1\",\"target\":\"Foo\",\"arguments\":[]}\x1e{\"type\":1,\"target\":\"Bar\",\"arguments\":[]}\x1e{\"type\":8,\"sequenceId\":4}\x1e{\"type\":42}\x1e{\"type\":7}\x1e";
    let msgs = parse_json_messages(batch, MAX_MESSAGE).expect("valid");
    assert_eq!(
        msgs,
        vec![
            ClientMessage::Ping,
            ClientMessage::Invocation {
                invocation_id: Some("1".into()),
                target: "Foo".into(),
                streaming: false
            },
            ClientMessage::Invocation {
                invocation_id: None,
                target: "Bar".into(),
                streaming: false
            },
            ClientMessage::Ack(4),
            ClientMessage::Other,
            ClientMessage::Close,
        ]
    );
    for bad in [
        &b"{\"type\":6}"[..],
        b"{nope}\x1e",
        b"{\"target\":\"x\"}\x1e",
        b"{\"type\":1}\x1e",
        b"{\"type\":8}\x1e",
    ] {
        assert!(
            matches!(
                parse_json_messages(bad, MAX_MESSAGE),
                Err(HubMessageError::Malformed(_))
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let big = format!("{{\"type\":6,\"pad\":\"{}\"}}\x1e", "x".repeat(100));
    assert_eq!(
        parse_json_messages(big.as_bytes(), 64),
        Err(HubMessageError::TooLarge(big.len() - 1))
    );
}

#[test]
fn msgpack_client_messages_batch_and_fail_clearly() {
    let mut batch = hex("02 91 06");
    let inv = rmp_serde::to_vec(&json!([1, {}, "7", "Foo", [], []])).expect("encode");
    write_varint(inv.len(), &mut batch);
    batch.extend(&inv);
    let old = rmp_serde::to_vec(&json!([4, {}, "8", "Stream", []])).expect("encode");
    write_varint(old.len(), &mut batch);
    batch.extend(&old);
    batch.extend(hex("03 92 09 03"));
    let msgs = parse_msgpack_messages(&batch, MAX_MESSAGE).expect("valid");
    assert_eq!(
        msgs,
        vec![
            ClientMessage::Ping,
            ClientMessage::Invocation {
                invocation_id: Some("7".into()),
                target: "Foo".into(),
                streaming: false
            },
            ClientMessage::Invocation {
                invocation_id: Some("8".into()),
                target: "Stream".into(),
                streaming: true
            },
            ClientMessage::Sequence(3),
        ]
    );
    for bad in [
        hex("05 91 06"),
        hex("02 C1 C1"),
        hex("02 81 06"),
        hex("01 90"),
    ] {
        assert!(
            matches!(
                parse_msgpack_messages(&bad, MAX_MESSAGE),
                Err(HubMessageError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        parse_msgpack_messages(&hex("80 01"), 64),
        Err(HubMessageError::TooLarge(128))
    );
    // Found by the property tests: an invocation whose argument nests ~700 arrays
    // overflowed the stack and aborted the gateway; it is refused as malformed.
    let mut body = hex("95 01 80 C0 A1 78");
    body.extend(std::iter::repeat_n(0x91, 1_000));
    body.push(0xc0);
    let mut deep = Vec::new();
    write_varint(body.len(), &mut deep);
    deep.extend(&body);
    assert!(matches!(
        parse_msgpack_messages(&deep, MAX_MESSAGE),
        Err(HubMessageError::Malformed(_))
    ));
}

#[test]
fn targets_are_pascal_case_of_the_kind() {
    assert_eq!(target_for_kind("analysis.completed"), "AnalysisCompleted");
    assert_eq!(target_for_kind("analysis.failed"), "AnalysisFailed");
    assert_eq!(target_for_kind("crop.alert_raised"), "CropAlertRaised");
    assert_eq!(target_for_kind("x"), "X");
}

#[test]
fn frames_cost_as_many_messages_as_they_carry() {
    assert_eq!(count_messages(HubProtocol::Json, b"{\"type\":6}\x1e"), 1);
    assert_eq!(
        count_messages(HubProtocol::Json, &b"{\"type\":6}\x1e".repeat(7)),
        7
    );
    // A frame without a separator still costs one.
    assert_eq!(count_messages(HubProtocol::Json, b"{}"), 1);
    let mut batch = Vec::new();
    for _ in 0..5 {
        write_varint(2, &mut batch);
        batch.extend_from_slice(&[0x91, 0x06]);
    }
    assert_eq!(count_messages(HubProtocol::MessagePack, &batch), 5);
    // A length prefix beyond the frame ends the count (the parser refuses the frame).
    let mut bad = batch.clone();
    write_varint(1000, &mut bad);
    assert_eq!(count_messages(HubProtocol::MessagePack, &bad), 6);
    assert_eq!(count_messages(HubProtocol::MessagePack, &[]), 1);
}
