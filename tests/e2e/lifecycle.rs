//! Subscriptions follow sockets; readiness follows the broker; shutdown closes with 1012.

use serde_json::json;
use ziraai_e2e::*;

#[tokio::test]
async fn the_last_socket_closing_drops_the_users_subscription() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("last");
    let a = WsClient::open(&gw.ws_url(), &u).await;
    let b = WsClient::open(&gw.ws_url(), &u).await;
    assert!(gw.probe.has_user(u.as_str()));
    assert_eq!(
        live_subscriptions(&nats, &u.live_subject()).await,
        1,
        "one subscription for two sockets"
    );
    a.close().await;
    wait_until("first socket gone", || gw.probe.connections() == 1).await;
    assert!(
        gw.probe.has_user(u.as_str()),
        "one socket left: subscription kept"
    );
    b.close().await;
    wait_until("subscription dropped", || !gw.probe.has_user(u.as_str())).await;
    // The server agrees: no subscription on live.<user> remains.
    let subject = u.live_subject();
    wait_for_no_interest(&nats, &subject).await;
}

async fn live_subscriptions(nats: &NatsServer, subject: &str) -> u64 {
    let v = nats.monitor(&format!("/subsz?subs=1&test={subject}")).await;
    v["num_subscriptions"]
        .as_u64()
        .map(|_| {
            v["subscriptions_list"]
                .as_array()
                .map_or(0, |l| l.len() as u64)
        })
        .unwrap_or(0)
}

async fn wait_for_no_interest(nats: &NatsServer, subject: &str) {
    within("server drops the subscription", async {
        while live_subscriptions(nats, subject).await > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn readiness_follows_the_broker() {
    let mut nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    assert_eq!(gw.get("/health/ready").await.0, 200);
    assert_eq!(gw.get("/health/live").await.0, 200);

    nats.stop().await;
    let mut body = String::new();
    // 503 as soon as the stream cannot be read; the body names "nats" once the client
    // has noticed the lost connection.
    within("readiness 503 naming nats", async {
        loop {
            let (status, b) = gw.get("/health/ready").await;
            if status == 503 && b.contains("\"nats\"") {
                body = b;
                break;
            }
            assert!(status == 503 || status == 200, "{status}: {b}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert!(
        v["missing"]
            .as_array()
            .expect("list")
            .iter()
            .any(|m| m == "nats"),
        "{v}"
    );
    assert_eq!(
        gw.get("/health/live").await.0,
        200,
        "still live while NATS is down"
    );

    nats.restart().await;
    within("readiness 200", async {
        while gw.get("/health/ready").await.0 != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn sockets_keep_receiving_after_the_broker_restarts() {
    let mut nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("restart");
    let mut c = WsClient::open(&gw.ws_url(), &u).await;
    nats.restart().await;
    within("gateway reconnected", async {
        while gw.get("/health/ready").await.0 != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let publisher = nats.publisher().await;
    let (_, p) = publish_completed(&publisher, &u, json!("after restart")).await;
    assert_eq!(c.event().await.seq, p.seq);
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_with_1012_and_turns_unready() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("bye");
    let mut c = WsClient::open(&gw.ws_url(), &u).await;
    let addr = gw.addr;
    let shutdown = tokio::spawn(gw.shutdown());
    let (frames, code) = c.until_close().await;
    assert_eq!(code, Some(1012), "service restart: reconnect elsewhere");
    assert!(
        frames.is_empty(),
        "no error frame for a server-side restart: {frames:?}"
    );
    within("shutdown finished", shutdown)
        .await
        .expect("joined")
        .expect("clean");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn metrics_are_served_to_allowed_addresses_only() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("metrics");
    let _c = WsClient::open(&gw.ws_url(), &u).await;
    let (status, text) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "ziraai_gateway_connections{protocol=\"native-json\"} 1",
        "ziraai_gateway_users 1",
        "ziraai_gateway_nats_connected 1",
        "# TYPE ziraai_gateway_events_total counter",
        "# TYPE ziraai_delivery_latency_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let elsewhere = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_METRICS_ALLOW", "10.0.0.0/8")],
    ))
    .await;
    let (status, body) = elsewhere.get("/metrics").await;
    assert_eq!(status, 403, "{body}");
}
