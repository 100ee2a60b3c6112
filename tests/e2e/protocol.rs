//! Client frames: ping/pong, acks, and each kind of bad input with its close code.

use serde_json::json;
use ziraai_e2e::*;
use ziraai_proto::ServerFrame;

fn error_code(frames: &[ServerFrame]) -> Option<String> {
    frames.iter().find_map(|f| match f {
        ServerFrame::Error { code, .. } => Some(code.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn ping_gets_pong_and_acks_are_accepted_in_both_encodings() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("ping");
    let mut j = WsClient::open(&gw.ws_url(), &u).await;
    j.send_text(r#"{"type":"ack","seq":1}"#).await;
    j.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(j.frame().await, ServerFrame::Pong);

    let mut m = WsClient::open_with(&gw.ws_url(), &u, Some("ziraai.v1.msgpack")).await;
    m.send_binary(rmp_serde::to_vec_named(&json!({"type": "ack", "seq": 3})).expect("encode"))
        .await;
    m.send_binary(rmp_serde::to_vec_named(&json!({"type": "ping"})).expect("encode"))
        .await;
    assert_eq!(m.frame().await, ServerFrame::Pong);
}

#[tokio::test]
async fn each_bad_frame_gets_an_error_frame_and_its_close_code_and_spares_others() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let (victim, bystander) = (user("bad"), user("fine"));
    let mut other = WsClient::open(&gw.ws_url(), &bystander).await;
    let mut same_user = WsClient::open(&gw.ws_url(), &victim).await;

    let oversized = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(64 * 1024));
    // (name, sent as text?, bytes, error code, close code)
    let cases: Vec<(&str, bool, Vec<u8>, &str, u16)> = vec![
        ("not JSON", true, b"{nope".to_vec(), "invalid_frame", 1007),
        (
            "not MessagePack",
            false,
            vec![0xc1, 0xff],
            "invalid_frame",
            1007,
        ),
        (
            // 1 KiB of nested arrays used to overflow the stack and abort the gateway.
            "nested 1,000 deep",
            false,
            [vec![0x91; 1_000], vec![0xc0]].concat(),
            "invalid_frame",
            1007,
        ),
        (
            "unknown type",
            true,
            br#"{"type":"subscribe","subject":">"}"#.to_vec(),
            "unsupported_frame",
            1008,
        ),
        (
            "ack without seq",
            true,
            br#"{"type":"ack"}"#.to_vec(),
            "unsupported_frame",
            1008,
        ),
        (
            "oversized",
            true,
            oversized.into_bytes(),
            "frame_too_large",
            1009,
        ),
    ];
    for (name, text, bytes, code, close) in cases {
        let mut c = WsClient::open(&gw.ws_url(), &victim).await;
        if text {
            c.send_text(&String::from_utf8(bytes).expect("utf8")).await;
        } else {
            c.send_binary(bytes).await;
        }
        let (frames, got) = c.until_close().await;
        assert_eq!(got, Some(close), "{name}");
        assert_eq!(
            error_code(&frames).as_deref(),
            Some(code),
            "{name}: {frames:?}"
        );
    }
    // Nobody else noticed: the other sockets still get their events.
    let (_, p) = publish_completed(&publisher, &victim, json!(1)).await;
    assert_eq!(same_user.event().await.seq, p.seq);
    let (_, q) = publish_completed(&publisher, &bystander, json!(2)).await;
    assert_eq!(other.event().await.seq, q.seq);
}

#[tokio::test]
async fn unknown_subprotocols_and_plain_http_are_refused_with_json() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("proto");
    let refused = WsClient::connect(&gw.ws_url(), Some(&token(&u)), Some("graphql-ws"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"], "unsupported_subprotocol");
    let (status, body) = http_get(gw.addr, &format!("/ws?access_token={}", token(&u))).await;
    assert!((400..500).contains(&status), "{status}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["error"], "not_a_websocket");
    assert_eq!(gw.probe.users(), 0);
}

#[tokio::test]
async fn a_socket_that_does_not_read_is_closed_as_slow_without_hurting_others() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_GATEWAY_OUTBOUND_QUEUE", "32"),
            ("ZIRAAI_GATEWAY_WRITE_TIMEOUT", "1s"),
        ],
    ))
    .await;
    let publisher = nats.publisher().await;
    let u = user("slow");
    let stalled = WsClient::open(&gw.ws_url(), &u).await; // never reads
    let mut reader = WsClient::open(&gw.ws_url(), &u).await;
    let big = json!({"blob": "x".repeat(48 * 1024)});
    let mut last = 0;
    let mut received = 0;
    // Fill the kernel buffers of the stalled socket (several MiB on loopback), until
    // the gateway gives up on it; the reading socket keeps up all along.
    within("slow consumer closed", async {
        while gw.probe.connections() == 2 {
            // Bursts smaller than the queue: a socket that reads keeps up.
            for _ in 0..8 {
                last = publish_completed(&publisher, &u, big.clone()).await.1.seq;
            }
            while received < last {
                received = reader.event().await.seq;
            }
        }
    })
    .await;
    assert_eq!(received, last, "the reader got every event");
    let (_, h) = gw.get("/health").await;
    let h: serde_json::Value = serde_json::from_str(&h).expect("JSON");
    assert_eq!(h["delivery"]["slowConsumersClosed"], 1, "{h}");
    drop(stalled);
}
