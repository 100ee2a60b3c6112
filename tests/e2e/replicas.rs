//! Replication: the cluster harness itself, and streams and buckets at the configured
//! number of replicas.

use async_nats::jetstream::{self, stream};
use ziraai_e2e::{NatsCluster, within};

/// Stream info of `name` (through any node).
async fn stream_info(js: &jetstream::Context, name: &str) -> stream::Info {
    let mut s = within("get stream", js.get_stream(name))
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"));
    within("stream info", s.info())
        .await
        .expect("stream info")
        .clone()
}

#[tokio::test]
async fn the_cluster_harness_runs_three_replicas_and_survives_a_leader_restart() {
    let mut cluster = NatsCluster::start(3).await;
    assert_eq!(cluster.urls().split(',').count(), 3);
    let js = jetstream::new(cluster.client().await);
    within(
        "create an R3 stream",
        js.create_stream(stream::Config {
            name: "R3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..Default::default()
        }),
    )
    .await
    .expect("R3 stream created");
    let info = stream_info(&js, "R3").await;
    assert_eq!(info.config.num_replicas, 3);
    let c = info.cluster.expect("clustered stream");
    assert_eq!(c.replicas.len(), 2, "two followers besides the leader");
    let leader = cluster.stream_leader("R3").await;
    assert_eq!(c.leader.as_deref(), Some(cluster.name(leader).as_str()));
    within("publish", async {
        js.publish("r3.a", "x".into()).await?.await
    })
    .await
    .expect("stored");
    // The leader restarts on its own ports with its store: the stream is still there.
    cluster.restart(leader).await;
    let info = stream_info(&js, "R3").await;
    assert_eq!(info.state.messages, 1);
}

#[tokio::test]
async fn the_cluster_harness_enforces_the_shipped_authorization() {
    let cluster = NatsCluster::start_with_auth(3).await;
    let js = jetstream::new(cluster.client().await);
    within(
        "operator creates an R3 stream",
        js.create_stream(stream::Config {
            name: "AUTHR3".into(),
            subjects: vec!["authr3.>".into()],
            num_replicas: 3,
            ..Default::default()
        }),
    )
    .await
    .expect("the operator may manage streams");
    let platform = cluster.client_as("platform").await;
    let denied = jetstream::new(platform).get_stream("AUTHR3").await;
    assert!(denied.is_err(), "platform may not read stream info");
}
