//! Polling, HTTP acks sharing the socket's cursor, the realtime switch, and delivery
//! tracking read back through the admin endpoint.

use serde_json::{Value, json};
use ziraai_e2e::*;

#[tokio::test]
async fn polling_returns_what_the_socket_delivers_and_acks_share_one_cursor() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let (u, other) = (user("poll"), user("other"));
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=web").await;
    let seqs = publish_many(&publisher, &u, 5).await;
    publish_many(&publisher, &other, 2).await;
    let mut on_socket = Vec::new();
    for _ in 0..5 {
        on_socket.push(
            serde_json::to_value(ziraai_proto::ServerFrame::Event(c.event().await)).expect("json"),
        );
    }
    let t = token(&u);
    let (status, page) = gw.get_json("/api/v1/notifications?since=0", &t).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["events"].as_array().expect("list"),
        &on_socket,
        "the same event objects, the user's only"
    );
    assert_eq!(page["next"], seqs[4]);

    let (_, page) = gw
        .get_json("/api/v1/notifications?since=0&limit=2", &t)
        .await;
    assert_eq!(page["events"].as_array().expect("list").len(), 2);
    assert_eq!(
        page["next"], seqs[1],
        "next is the since of the following page"
    );
    let (_, rest) = gw
        .get_json(
            &format!("/api/v1/notifications?since={}&limit=1000", seqs[1]),
            &t,
        )
        .await;
    assert_eq!(rest["events"].as_array().expect("list").len(), 3);

    // HTTP ack, then socket ack, on one cursor; it never moves back.
    let ack = |seq: u64| json!({"deviceId": "web", "seq": seq});
    let (status, body) = http_request(
        gw.addr,
        "POST",
        "/api/v1/notifications/ack",
        Some(&t),
        Some(&ack(seqs[2])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored_cursor(&nats, &u, "web").await, Some(seqs[2]));
    c.ack(seqs[3]).await;
    wait_for_cursor(&nats, &u, "web", seqs[3]).await;
    let (_, body) = http_request(
        gw.addr,
        "POST",
        "/api/v1/notifications/ack",
        Some(&t),
        Some(&ack(seqs[0])),
    )
    .await;
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["cursor"], seqs[3],
        "an older ack does not move the cursor back"
    );
    c.close().await;
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=web").await;
    assert_eq!(
        c.event().await.seq,
        seqs[4],
        "resumes after the shared cursor"
    );
}

#[tokio::test]
async fn bad_polling_requests_are_refused() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let t = token(&user("bad"));
    for (path, status, code) in [
        ("/api/v1/notifications?limit=0", 400, "bad_limit"),
        ("/api/v1/notifications?since=x", 400, "bad_since"),
    ] {
        let (s, v) = gw.get_json(path, &t).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{path}");
    }
    let (s, v) = gw.get_json("/api/v1/notifications", "forged").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("token_malformed")));
    for body in [
        json!({"deviceId": "a.b", "seq": 1}),
        json!({"seq": 1}),
        json!({"deviceId": "d", "seq": -1}),
    ] {
        let (s, _) = http_request(
            gw.addr,
            "POST",
            "/api/v1/notifications/ack",
            Some(&t),
            Some(&body),
        )
        .await;
        assert_eq!(s, 400, "{body}");
    }
}

#[tokio::test]
async fn with_realtime_off_sockets_get_503_and_polling_works() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_REALTIME_ENABLED", "false")],
    ))
    .await;
    let publisher = nats.publisher().await;
    let u = user("rollback");
    let refused = WsClient::connect(&gw.ws_url(), Some(&token(&u)), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (503, Some("realtime_disabled"))
    );
    let upgrade = format!(
        "GET /ws?access_token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        token(&u)
    );
    let raw = raw_http(gw.addr, &upgrade).await;
    assert!(
        raw.to_ascii_lowercase().contains("retry-after: 30"),
        "{raw}"
    );
    let (_, p) = publish_completed(&publisher, &u, json!("polled")).await;
    let (status, page) = gw.get_json("/api/v1/notifications", &token(&u)).await;
    assert_eq!(status, 200);
    assert_eq!(page["events"][0]["seq"], p.seq);
}

#[tokio::test]
async fn deliveries_and_acks_are_tracked_and_readable_by_admins_only() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("tracked");
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=phone").await;
    let seqs = publish_many(&publisher, &u, 3).await;
    assert_eq!(c.seqs(3).await, seqs);
    c.ack(seqs[1]).await;

    let admin = ziraai_gateway::auth::mint_with_roles(
        &ziraai_common::GatewayServiceConfig::development()
            .auth
            .jwt_secret,
        "ops-1",
        600,
        &["Admin"],
    );
    let path = format!("/api/v1/admin/deliveries?userId={u}");
    let mut records = Vec::new();
    within("tracking records", async {
        // delivered ×3 + acked ×2, written off the hot path.
        while records.len() < 5 {
            let (_, v) = gw.get_json(&path, &admin).await;
            records = v["records"].as_array().cloned().unwrap_or_default();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let kinds: Vec<(u64, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap_or(0),
                r["deviceId"].as_str().unwrap_or(""),
                r["event"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for s in &seqs {
        assert!(kinds.contains(&(*s, "phone", "delivered")), "{kinds:?}");
    }
    for s in &seqs[..2] {
        assert!(kinds.contains(&(*s, "phone", "acked")), "{kinds:?}");
    }
    assert!(
        !kinds.contains(&(seqs[2], "phone", "acked")),
        "not acked yet"
    );

    // One event's records only.
    let (_, one) = gw
        .get_json(&format!("{path}&seq={}", seqs[0]), &admin)
        .await;
    assert_eq!(one["records"].as_array().expect("list").len(), 2);
    // A reconnect re-delivers unacked seqs[2]: still one "delivered" record for it.
    c.close().await;
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=phone").await;
    assert_eq!(c.event().await.seq, seqs[2]);
    let (_, again) = gw
        .get_json(&format!("{path}&seq={}", seqs[2]), &admin)
        .await;
    assert_eq!(
        again["records"].as_array().expect("list").len(),
        1,
        "the first delivery is kept"
    );

    let (status, v) = gw.get_json(&path, &token(&u)).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("forbidden")));
}
