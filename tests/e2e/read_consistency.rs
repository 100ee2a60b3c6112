//! Reads of a replicated NOTIFY are monotonic: every direct get a gateway sends carries
//! `min_last_seq`, the highest stream sequence it has seen, so a follower that has not
//! applied it yet hands the request to the leader instead of answering "nothing more"
//! (NATS 2.12+, ADR "JetStream Read-after-Write"). A gap fill or replay answered by a
//! lagging replica would otherwise end early and the socket would move past events it
//! never got.

use futures_util::StreamExt;
use serde_json::{Value, json};
use ziraai_e2e::*;

#[tokio::test]
async fn every_read_after_the_first_asks_for_a_replica_at_least_as_far_as_seen() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    // The requests are plain messages: a test subscription sees each one's body.
    let observer = nats.client().await;
    let mut requests = observer
        .subscribe("$JS.API.DIRECT.GET.NOTIFY")
        .await
        .expect("subscribed");
    within("observer in place", observer.flush())
        .await
        .expect("flush");
    let u = user("monotonic");
    let first = publish_many(&publisher, &u, 2).await;
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "since=0").await;
    assert_eq!(c.seqs(2).await, first);
    let (_, next) = publish_completed(&publisher, &u, json!("live")).await;
    assert_eq!(c.event().await.seq, next.seq);
    // After the replay read events up to first[1], no read asks for less than that.
    let mut floors = Vec::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), requests.next()).await
    {
        let body: Value = serde_json::from_slice(&m.payload).expect("JSON request");
        floors.push(body["min_last_seq"].as_u64().unwrap_or(0));
    }
    let after_replay = floors
        .iter()
        .position(|f| *f >= first[1])
        .expect("reads carry the highest sequence seen");
    assert!(
        floors[after_replay..].iter().all(|f| *f >= first[1]),
        "never lower again: {floors:?}"
    );
}
