//! Gateways keep no state another needs: two gateways on one NATS serve users on either.

use serde_json::json;
use ziraai_e2e::*;

#[tokio::test]
async fn two_gateways_each_deliver_once_per_socket() {
    let nats = NatsServer::start().await;
    let (gw_a, gw_b) = (
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    );
    let publisher = nats.publisher().await;

    // A user connected only to B gets an event published once.
    let only_b = user("only-b");
    let mut b_only = WsClient::open(&gw_b.ws_url(), &only_b).await;
    let (_, p) = publish_completed(&publisher, &only_b, json!(1)).await;
    assert_eq!(b_only.event().await.seq, p.seq);
    assert!(
        !gw_a.probe.has_user(only_b.as_str()),
        "A holds nothing for a user it does not serve"
    );

    // A user with a socket on each gateway gets it once on each.
    let both = user("both");
    let mut on_a = WsClient::open(&gw_a.ws_url(), &both).await;
    let mut on_b = WsClient::open(&gw_b.ws_url(), &both).await;
    let (_, first) = publish_completed(&publisher, &both, json!("x")).await;
    let (_, second) = publish_completed(&publisher, &both, json!("y")).await;
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.event().await.seq, first.seq);
        // The next frame is the second event, not a duplicate of the first.
        assert_eq!(c.event().await.seq, second.seq);
    }
}
