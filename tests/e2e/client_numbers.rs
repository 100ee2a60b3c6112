//! Numbers a client sends meet arithmetic only checked: a resume point, a poll
//! position, an ack or an admin page at `u64::MAX` (18446744073709551615) ends at the
//! stream's end instead of wrapping round to sequence 1.

use serde_json::{Value, json};
use ziraai_e2e::*;
use ziraai_proto::ServerFrame;

const MAX: u64 = u64::MAX;

#[tokio::test]
async fn a_socket_resuming_after_u64_max_starts_at_the_end_without_a_gap() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("max-ws");
    let backlog = publish_many(&publisher, &u, 3).await;
    let last = backlog[2];

    let (mut c, welcome) =
        WsClient::resume(&gw.ws_url(), &u, &format!("since={MAX}&deviceId=edge")).await;
    match welcome {
        ServerFrame::Welcome {
            resumed_after,
            gap,
            oldest_available,
            ..
        } => {
            assert!(!gap, "nothing is missing after the end");
            assert_eq!(oldest_available, None);
            assert_eq!(resumed_after, last, "the stream's last sequence");
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    // Nothing of the backlog is replayed: the next frame is the next event.
    let fresh = publish_many(&publisher, &u, 1).await;
    assert_eq!(c.event().await.seq, fresh[0]);

    // A socket ack of u64::MAX covers what was sent, no more.
    c.ack(MAX).await;
    wait_for_cursor(&nats, &u, "edge", fresh[0]).await;
    c.close().await;
}

#[tokio::test]
async fn polling_after_u64_max_returns_nothing_and_the_end_as_next() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("max-poll");
    let seqs = publish_many(&publisher, &u, 3).await;
    let t = token(&u);
    for query in [format!("since={MAX}"), format!("since={MAX}&limit={MAX}")] {
        let (status, page) = gw
            .get_json(&format!("/api/v1/notifications?{query}"), &t)
            .await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(page["events"], json!([]), "{query}: not the whole backlog");
        assert_eq!(page["next"], seqs[2], "{query}: next is the stream's end");
    }
    // Polling on from that `next` sees the following event.
    let fresh = publish_many(&publisher, &u, 1).await;
    let (_, page) = gw
        .get_json(&format!("/api/v1/notifications?since={}", seqs[2]), &t)
        .await;
    assert_eq!(page["events"][0]["seq"], fresh[0]);
    assert_eq!(page["next"], fresh[0]);
}

#[tokio::test]
async fn an_http_ack_of_u64_max_is_clamped_to_the_users_latest_event() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let (u, other) = (user("max-ack"), user("max-other"));
    let seqs = publish_many(&publisher, &u, 2).await;
    // Another user's later event: the stream ends after the user's latest.
    publish_many(&publisher, &other, 1).await;
    let (status, body) = http_request(
        gw.addr,
        "POST",
        "/api/v1/notifications/ack",
        Some(&token(&u)),
        Some(&json!({"deviceId": "web", "seq": MAX})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["cursor"], seqs[1], "clamped to the user's latest event");
    assert_eq!(stored_cursor(&nats, &u, "web").await, Some(seqs[1]));
}

#[tokio::test]
async fn the_admin_endpoint_at_u64_max_answers_empty_pages() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("max-admin");
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=phone").await;
    let seqs = publish_many(&publisher, &u, 2).await;
    assert_eq!(c.seqs(2).await, seqs);
    let admin = ziraai_gateway::auth::mint_with_roles(
        &ziraai_common::GatewayServiceConfig::development()
            .auth
            .jwt_secret,
        "ops-1",
        600,
        &["Admin"],
    );
    let path = format!("/api/v1/admin/deliveries?userId={u}");
    within("delivery records written", async {
        loop {
            let (_, v) = gw.get_json(&path, &admin).await;
            if v["records"].as_array().is_some_and(|r| r.len() >= 2) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    for query in [
        format!("after={MAX}"),
        format!("seq={MAX}"),
        format!("after={MAX}&limit={MAX}"),
    ] {
        let (status, v) = gw.get_json(&format!("{path}&{query}"), &admin).await;
        assert_eq!(status, 200, "{query}: {v}");
        assert_eq!(v["records"], json!([]), "{query}: nothing lies beyond");
    }
    c.close().await;
}
