//! Events reach every socket of their user, exactly as published, and nobody else.

use serde_json::json;
use ziraai_e2e::*;
use ziraai_proto::analysis::KIND_COMPLETED;

async fn fan_out_to_one_users_sockets(offer: Option<&str>) {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut a1 = WsClient::open_with(&gw.ws_url(), &alice, offer).await;
    let mut a2 = WsClient::open_with(&gw.ws_url(), &alice, offer).await;
    let mut b = WsClient::open_with(&gw.ws_url(), &bob, offer).await;
    assert_eq!(a1.accepted.as_deref(), offer);
    assert_eq!(
        gw.probe.users(),
        2,
        "one subscription per user, shared by sockets"
    );

    let result = json!({"disease": "leaf rust", "confidence": 0.93, "tips": ["a", "b"], "n": null});
    let (outcome, published) = publish_completed(&publisher, &alice, result.clone()).await;
    let envelope = outcome.to_envelope();
    for socket in [&mut a1, &mut a2] {
        let e = socket.event().await;
        assert_eq!(e.seq, published.seq, "seq is the PubAck's stream sequence");
        assert_eq!(e.id, outcome.event_id());
        assert_eq!(e.kind, KIND_COMPLETED);
        assert_eq!(e.data, envelope.data, "data unchanged");
        assert_eq!(e.data["result"], result);
        assert_eq!(e.occurred_at, envelope.occurred_at);
    }
    // Bob's first event is his own, published after Alice's: he never saw hers.
    let (_, bobs) = publish_completed(&publisher, &bob, json!({"for": "bob"})).await;
    let e = b.event().await;
    assert_eq!(e.seq, bobs.seq);
    assert_eq!(e.data["result"], json!({"for": "bob"}));
    // And Alice's sockets did not get Bob's: their next event is Alice's next one.
    let (_, next) = publish_completed(&publisher, &alice, json!(2)).await;
    assert_eq!(a1.event().await.seq, next.seq);
    assert_eq!(a2.event().await.seq, next.seq);
}

#[tokio::test]
async fn json_event_reaches_both_sockets_of_its_user_only() {
    fan_out_to_one_users_sockets(Some("ziraai.v1.json")).await;
}

#[tokio::test]
async fn msgpack_event_reaches_both_sockets_of_its_user_only() {
    fan_out_to_one_users_sockets(Some("ziraai.v1.msgpack")).await;
}

#[tokio::test]
async fn json_is_the_default_without_a_subprotocol() {
    fan_out_to_one_users_sockets(None).await;
}

#[tokio::test]
async fn mixed_protocols_on_one_user_each_get_their_encoding() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("mixed");
    let mut j = WsClient::open_with(&gw.ws_url(), &u, Some("ziraai.v1.json")).await;
    let mut m = WsClient::open_with(&gw.ws_url(), &u, Some("ziraai.v1.msgpack")).await;
    let (_, p) = publish_completed(&publisher, &u, json!({"k": 1})).await;
    // `frame()` asserts text on JSON sockets and binary on MessagePack sockets.
    assert_eq!(j.event().await.seq, p.seq);
    assert_eq!(m.event().await.seq, p.seq);
}

#[tokio::test]
async fn msgpack_envelopes_from_producers_are_delivered() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats
        .publisher()
        .await
        .with_encoding(ziraai_proto::PayloadEncoding::MsgPack);
    let u = user("packed");
    let mut c = WsClient::open(&gw.ws_url(), &u).await;
    let (outcome, p) = publish_completed(&publisher, &u, json!({"deep": {"x": [1, 2]}})).await;
    let e = c.event().await;
    assert_eq!(e.seq, p.seq);
    assert_eq!(e.data, outcome.to_envelope().data);
}

#[tokio::test]
async fn a_malformed_event_is_skipped_and_the_stream_goes_on() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("skip");
    let mut c = WsClient::open(&gw.ws_url(), &u).await;
    for bad in [&b"not json"[..], br#"{"kind":"Bad Kind","data":{}}"#] {
        within("bad publish", async {
            js.publish(u.notify_subject(), bytes::Bytes::from_static(bad))
                .await
                .expect("sent")
                .await
                .expect("stored")
        })
        .await;
    }
    let (_, good) = publish_completed(&publisher, &u, json!("ok")).await;
    assert_eq!(
        c.event().await.seq,
        good.seq,
        "the bad ones were skipped, not delivered"
    );
    let (_, health) = gw.get("/health").await;
    let h: serde_json::Value = serde_json::from_str(&health).expect("JSON");
    assert_eq!(h["delivery"]["malformedEventsSkipped"], 2, "{h}");
}
