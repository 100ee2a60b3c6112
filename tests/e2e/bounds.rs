//! Resource bounds: slowloris against a gateway process with few descriptors, the
//! per-process socket cap, the per-socket frame rate, and the per-IP HTTP limit.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use ziraai_e2e::*;
use ziraai_proto::ServerFrame;

/// Reads until the server closes the connection (EOF or reset); false if it is still
/// open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn slowloris_does_not_starve_a_gateway_with_few_descriptors() {
    const IDLE: usize = 400;
    let nats = NatsServer::start().await;
    let gw = ServiceProcess::gateway_limited(
        &nats,
        Some(256),
        &[("ZIRAAI_GATEWAY_HEADER_TIMEOUT", "1s")],
    )
    .await;
    let addr = gw.addr();
    assert_eq!(
        gw.health().await["maxConnections"],
        230,
        "the default cap is 90 % of the open-file limit"
    );
    // More silent and half-sent connections than the process has descriptors, from
    // ten loopback sources, opened at once (well within one header timeout); they stay
    // open on our side.
    let mut idle = futures_util::future::join_all((0..IDLE).map(|i| async move {
        let src = Ipv4Addr::new(127, 0, 0, 10 + (i % 10) as u8);
        let mut s = connect_from(src, addr).await;
        if i % 2 == 1 {
            s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("half a request");
        }
        s
    }))
    .await;
    // A new client and readiness still get through, within the test's deadline.
    let u = user("after-slowloris");
    let (status, _) = within_for(
        Duration::from_secs(20),
        "readiness behind the idle connections",
        http_get(addr, "/health/ready"),
    )
    .await;
    assert_eq!(status, 200);
    let mut c = within_for(
        Duration::from_secs(20),
        "a new socket behind the idle connections",
        WsClient::open(&gw.ws_url(), &u),
    )
    .await;
    c.send_text(r#"{"type":"ping"}"#).await;
    assert!(matches!(c.frame().await, ServerFrame::Pong));
    // The server closed the idle connections it accepted (header timeout).
    let closed = within_for(Duration::from_secs(30), "idle connections closed", async {
        let mut n = 0;
        for s in idle.iter_mut().take(100) {
            if closed_within(s, Duration::from_secs(10)).await {
                n += 1;
            }
        }
        n
    })
    .await;
    assert_eq!(closed, 100, "silent and half-sent connections are closed");
    // A keep-alive connection idle after a complete request is closed too.
    let mut kept = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).await;
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("a complete request");
    let mut answer = Vec::new();
    within("the keep-alive answer", async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("\"live\"") {
            let n = kept.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before answering");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        closed_within(&mut kept, Duration::from_secs(5)).await,
        "an idle keep-alive connection is closed after the header timeout"
    );
    assert!(
        gw.stderr().contains("pausing accept"),
        "the gateway ran out of descriptors and paused accepting; stderr:\n{}",
        gw.stderr()
    );
}

#[tokio::test]
async fn the_process_cap_refuses_sockets_with_503_and_health_still_answers() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_GATEWAY_MAX_CONNECTIONS", "3")],
    ))
    .await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(WsClient::open(&gw.ws_url(), &user(&format!("cap{i}"))).await);
    }
    wait_until("three sockets counted", || gw.probe.connections() == 3).await;
    let refused = WsClient::connect(&gw.ws_url(), Some(&token(&user("cap-x"))), None)
        .await
        .err()
        .expect("the fourth socket is refused");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["error"], "gateway_full");
    assert_eq!(gw.health().await["delivery"]["gatewayFullRefused"], 1);
    let hub = raw_http(
        gw.addr,
        &format!(
            "GET {}?access_token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            ziraai_gateway::signalr::HUB_PATH,
            token(&user("cap-hub"))
        ),
    )
    .await;
    assert!(
        hub.starts_with("HTTP/1.1 503") && hub.contains("gateway_full"),
        "SignalR sockets count too: {hub}"
    );
    let (status, _) = gw.get("/health/ready").await;
    assert_eq!(status, 200, "readiness is not a socket");
    assert_eq!(gw.get("/health/live").await.0, 200);
    open.pop().expect("one").close().await;
    wait_until("a socket freed", || gw.probe.connections() == 2).await;
    WsClient::open(&gw.ws_url(), &user("cap-again")).await;
}

#[tokio::test]
async fn hub_sockets_still_in_their_handshake_hold_a_place_in_the_cap() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_GATEWAY_MAX_CONNECTIONS", "3")],
    ))
    .await;
    // Three hub sockets upgraded but silent: no hub handshake yet, so no session.
    let mut pending = Vec::new();
    for i in 0..3 {
        let url = format!(
            "ws://{}{}?access_token={}",
            gw.addr,
            ziraai_gateway::signalr::HUB_PATH,
            token(&user(&format!("pending{i}")))
        );
        let (ws, _) = within(
            "hub upgrade",
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .expect("upgraded");
        pending.push(ws);
    }
    assert_eq!(gw.probe.connections(), 0, "no session has started");
    let refused = WsClient::connect(&gw.ws_url(), Some(&token(&user("over"))), None)
        .await
        .err()
        .expect("a fourth socket is refused while three handshakes hold their places");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["error"], "gateway_full");
    // Giving up a handshake gives its place back.
    drop(pending.pop());
    within("a place freed", async {
        loop {
            match WsClient::connect(&gw.ws_url(), Some(&token(&user("later"))), None).await {
                Ok(_) => return,
                Err(r) => assert_eq!(r.status, 503),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_frame_flood_is_closed_with_rate_limited_1008() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("flood");
    let url = format!("{}?access_token={}", gw.ws_url(), token(&u));
    let (mut ws, _) = within("connect", tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("upgrade");
    // Far more than the burst (1,000) in far less than a second; the server may close
    // before we are done writing.
    for _ in 0..3000 {
        if ws
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (mut error, mut code) = (None, None);
    within("the server's close", async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) => {
                    if let Ok(ServerFrame::Error { code: c, .. }) = serde_json::from_str(&t) {
                        error = Some(c);
                    }
                }
                Message::Close(c) => {
                    code = c.map(|c| u16::from(c.code));
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(error.as_deref(), Some("rate_limited"));
    assert_eq!(code, Some(1008));
    within("the close counted in /metrics", async {
        while !gw
            .get("/metrics")
            .await
            .1
            .contains("ziraai_gateway_rate_limited_total 1\n")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn acking_every_event_of_a_1000_event_replay_is_never_rate_limited() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("replay-acker");
    let seqs = within_for(
        Duration::from_secs(60),
        "1,000 events stored",
        publish_many(&publisher, &u, 1000),
    )
    .await;
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "since=0&deviceId=acker").await;
    for want in &seqs {
        let e = c.event().await;
        assert_eq!(e.seq, *want);
        c.ack(e.seq).await;
    }
    // Still open and answering after 1,000 acks (and the welcome, pings, this ping).
    c.send_text(r#"{"type":"ping"}"#).await;
    assert!(matches!(c.frame().await, ServerFrame::Pong));
    wait_for_cursor(&nats, &u, "acker", seqs[999]).await;
    assert_eq!(gw.probe.connections(), 1);
}

#[tokio::test]
async fn polling_ack_and_admin_share_a_per_ip_limit_with_retry_after() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_GATEWAY_HTTP_BURST", "3"),
            ("ZIRAAI_GATEWAY_HTTP_INTERVAL", "60s"),
        ],
    ))
    .await;
    let t = token(&user("limited"));
    let auth = format!("Bearer {t}");
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let poll = "/api/v1/notifications?since=0";
    for _ in 0..2 {
        let a = request_from(one, gw.addr, "GET", poll, &[("Authorization", &auth)]).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // The ack endpoint spends the same allowance (400: no body; not limited yet).
    let a = request_from(
        one,
        gw.addr,
        "POST",
        "/api/v1/notifications/ack",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    for (method, path) in [
        ("GET", poll),
        ("POST", "/api/v1/notifications/ack"),
        ("GET", "/api/v1/admin/deliveries?userId=x"),
    ] {
        let a = request_from(one, gw.addr, method, path, &[("Authorization", &auth)]).await;
        assert_eq!(a.status, 429, "{method} {path}: {}", a.body);
        assert_eq!(a.json()["error"], "too_many_requests");
        let retry: u64 = a
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // Another address is unaffected; health and sockets are not in this limit.
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let a = request_from(two, gw.addr, "GET", poll, &[("Authorization", &auth)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(gw.get("/health/ready").await.0, 200);
    WsClient::open(&gw.ws_url(), &user("limited-socket")).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A hub socket of a new user on `gw` after a JSON handshake.
async fn hub_socket(gw: &TestGateway, prefix: &str) -> Ws {
    let url = format!(
        "ws://{}{}?access_token={}",
        gw.addr,
        ziraai_gateway::signalr::HUB_PATH,
        token(&user(prefix))
    );
    let (mut ws, _) = within(
        "hub connect",
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .expect("upgrade");
    let handshake = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    within("handshake", ws.send(Message::Text(handshake.into())))
        .await
        .expect("sent");
    ws
}

/// Reads until the socket closes: the hub Close message seen, and the close code.
async fn hub_close(ws: &mut Ws) -> (Option<serde_json::Value>, Option<u16>) {
    let (mut close, mut code) = (None, None);
    within("the hub's close", async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) => {
                    for record in t.split('\u{1e}').filter(|r| !r.is_empty()) {
                        let v: serde_json::Value = serde_json::from_str(record).expect("JSON");
                        if v["type"] == 7 {
                            close = Some(v);
                        }
                    }
                }
                Message::Close(c) => {
                    code = c.map(|c| u16::from(c.code));
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    (close, code)
}

#[tokio::test]
async fn a_hub_frame_flood_gets_a_close_message_rate_limited() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let mut ws = hub_socket(&gw, "hub-flood").await;
    for _ in 0..3000 {
        if ws
            .send(Message::Text("{\"type\":6}\u{1e}".into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (close, code) = hub_close(&mut ws).await;
    assert_eq!(
        close,
        Some(serde_json::json!({"type": 7, "error": "rate_limited", "allowReconnect": true}))
    );
    assert_eq!(code, Some(1000));
}

#[tokio::test]
async fn hub_messages_batched_in_one_frame_each_count_against_the_allowance() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    // A batch within the burst (1,000) is fine.
    let mut fine = hub_socket(&gw, "hub-batch-ok").await;
    let batch = "{\"type\":6}\u{1e}".repeat(500);
    within("send a batch", fine.send(Message::Text(batch.into())))
        .await
        .expect("sent");
    // One frame carrying 2,000 messages costs 2,000, not 1.
    let mut ws = hub_socket(&gw, "hub-batch").await;
    let batch = "{\"type\":6}\u{1e}".repeat(2000);
    within("send one big batch", ws.send(Message::Text(batch.into())))
        .await
        .expect("sent");
    let (close, code) = hub_close(&mut ws).await;
    assert_eq!(
        close,
        Some(serde_json::json!({"type": 7, "error": "rate_limited", "allowReconnect": true}))
    );
    assert_eq!(code, Some(1000));
    // The socket within its allowance stays open.
    wait_until("only the well-behaved socket left", || {
        gw.probe.connections() == 1
    })
    .await;
    within(
        "fine still writable",
        fine.send(Message::Text("{\"type\":6}\u{1e}".into())),
    )
    .await
    .expect("the well-behaved socket is still open");
}

#[tokio::test]
async fn an_ack_whose_body_never_arrives_is_answered_408_within_the_header_timeout() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_GATEWAY_HEADER_TIMEOUT", "1s")],
    ))
    .await;
    let u = user("body");
    let mut s = within("connect", TcpStream::connect(gw.addr))
        .await
        .expect("connects");
    let head = format!(
        "POST /api/v1/notifications/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"deviceId\"",
        token(&u)
    );
    within("send", s.write_all(head.as_bytes()))
        .await
        .expect("sent");
    // The rest of the announced body never comes: the gateway answers and lets go.
    let mut answer = Vec::new();
    within("the answer", s.read_to_end(&mut answer))
        .await
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");

    // Without a token the body is never read at all: 401 at once.
    let mut s = within("connect", TcpStream::connect(gw.addr))
        .await
        .expect("connects");
    let head = "POST /api/v1/notifications/ack HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    within("send", s.write_all(head.as_bytes()))
        .await
        .expect("sent");
    let mut buf = [0u8; 512];
    let n = within("401", s.read(&mut buf)).await.expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}
