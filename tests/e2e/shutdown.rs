//! Graceful shutdown: 1012 to every socket, cursors flushed, resume elsewhere.

use ziraai_e2e::*;

#[tokio::test]
async fn a_draining_gateway_closes_with_1012_and_clients_resume_elsewhere_losing_nothing() {
    let nats = NatsServer::start().await;
    let gw_a = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_GATEWAY_CURSOR_FLUSH_INTERVAL", "1h")],
    ))
    .await;
    let gw_b = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("drain");
    let (mut c, _) = WsClient::resume(&gw_a.ws_url(), &u, "deviceId=laptop").await;
    let seqs = publish_many(&publisher, &u, 4).await;
    assert_eq!(c.seqs(4).await, seqs);
    // Acks coalesce (first written at once, the rest held for the hour-long interval)…
    c.ack(seqs[0]).await;
    wait_for_cursor(&nats, &u, "laptop", seqs[0]).await;
    c.ack(seqs[2]).await;
    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.frame().await, ziraai_proto::ServerFrame::Pong);
    assert_eq!(
        stored_cursor(&nats, &u, "laptop").await,
        Some(seqs[0]),
        "held back"
    );

    let stopping = tokio::spawn(gw_a.shutdown());
    let (_, code) = c.until_close().await;
    assert_eq!(code, Some(1012));
    within("shutdown", stopping)
        .await
        .expect("joined")
        .expect("clean");
    // …and the shutdown flushed the held one.
    assert_eq!(stored_cursor(&nats, &u, "laptop").await, Some(seqs[2]));

    let later = publish_many(&publisher, &u, 2).await;
    let (mut c, _) = WsClient::resume(&gw_b.ws_url(), &u, "deviceId=laptop").await;
    let expected: Vec<u64> = [seqs[3]].into_iter().chain(later).collect();
    assert_eq!(c.seqs(3).await, expected);
}
