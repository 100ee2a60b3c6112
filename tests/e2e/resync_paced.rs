//! The catch-up after a NATS reconnection, paced (a few users at a time, after a
//! jitter): every local user still gets every event stored while the gateway was cut
//! off, and a user receiving live events meanwhile keeps receiving them.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use ziraai_e2e::*;

/// The gateway's readiness: 200 while connected to NATS.
async fn wait_ready(gw: &TestGateway, ready: bool) {
    within_for(Duration::from_secs(30), "gateway readiness", async {
        while (gw.get("/health/ready").await.0 == 200) != ready {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn every_user_catches_up_after_a_reconnect_while_live_delivery_goes_on() {
    const USERS: usize = 150;
    let nats = NatsServer::start().await;
    let nats_addr: SocketAddr = nats
        .url()
        .trim_start_matches("nats://")
        .parse()
        .expect("host:port");
    // The gateway reaches NATS through a proxy the test cuts; the publisher does not.
    let proxy = Proxy::start(nats_addr).await;
    let proxied = format!("nats://{}", proxy.addr);
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_NATS_URL", &proxied),
            // One catch-up at a time, spread over a second: the pacing at its tightest.
            ("ZIRAAI_GATEWAY_RESYNC_CONCURRENCY", "1"),
            ("ZIRAAI_GATEWAY_RESYNC_JITTER", "1s"),
        ],
    ))
    .await;
    let publisher = nats.publisher().await;
    let users: Vec<_> = (0..USERS).map(|_| user("resync")).collect();
    let mut clients = Vec::with_capacity(USERS);
    for u in &users {
        clients.push(WsClient::open(&gw.ws_url(), u).await);
    }
    let live = user("live");
    let mut live_client = WsClient::open(&gw.ws_url(), &live).await;

    // Cut the gateway off NATS (reconnects held), publish one event per user, reconnect.
    proxy.hold(true);
    proxy.cut();
    wait_ready(&gw, false).await;
    let mut missed = Vec::with_capacity(USERS);
    for u in &users {
        missed.push(
            publish_completed(&publisher, u, json!("while cut off"))
                .await
                .1
                .seq,
        );
    }
    proxy.hold(false);
    wait_ready(&gw, true).await;

    // Live events to one user while the others catch up, one at a time.
    for i in 0..5 {
        let (_, p) = publish_completed(&publisher, &live, json!(i)).await;
        assert_eq!(live_client.event().await.seq, p.seq, "live event {i}");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            within_for(Duration::from_secs(30), "the missed event", c.event())
                .await
                .seq,
            missed[i],
            "user {i} caught up"
        );
    }
    // And live again for them afterwards.
    let (_, p) = publish_completed(&publisher, &users[0], json!("after")).await;
    assert_eq!(clients[0].event().await.seq, p.seq);
}
