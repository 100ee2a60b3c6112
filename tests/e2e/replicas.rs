//! Replication: the cluster harness itself, and streams and buckets at the configured
//! number of replicas.

use async_nats::jetstream::{self, stream};
use ziraai_e2e::{NatsCluster, ServiceProcess, within};

/// Stream info of `name` (through any node).
pub(crate) async fn stream_info(js: &jetstream::Context, name: &str) -> stream::Info {
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

/// Every stream and bucket stream start-up applies (`nats/streams/`).
pub(crate) const STREAMS: [&str; 7] = [
    "NOTIFY",
    "KV_CURSORS",
    "KV_SIGNALR",
    "KV_CONNS",
    "DELIVERY",
    "JOBS",
    "ADVISORIES",
];

/// Asserts `name` has `n` replicas: in its configuration, and a leader with `n - 1`
/// followers in its cluster group.
pub(crate) async fn assert_replicas(js: &jetstream::Context, name: &str, n: usize) {
    let info = stream_info(js, name).await;
    assert_eq!(info.config.num_replicas, n, "{name}: configured replicas");
    let c = info.cluster.unwrap_or_else(|| panic!("{name}: cluster info"));
    assert!(c.leader.is_some(), "{name}: has a leader");
    assert_eq!(c.replicas.len(), n - 1, "{name}: followers {:?}", c.replicas);
}

#[tokio::test]
async fn a_gateway_and_a_worker_asking_for_three_replicas_create_everything_with_three() {
    let cluster = NatsCluster::start(3).await;
    let r3 = [("ZIRAAI_NATS_REPLICAS", "3")];
    // Both at once, as a deploy does: each creates what is missing.
    let (_gateway, _worker) = tokio::join!(
        ServiceProcess::gateway(&cluster, &r3),
        ServiceProcess::worker(&cluster, "http://127.0.0.1:9/analyze", &r3),
    );
    let js = jetstream::new(cluster.client().await);
    for name in STREAMS {
        assert_replicas(&js, name, 3).await;
    }
    // The worker's consumer has its stream's replicas (unset: it follows JOBS).
    let mut consumer: jetstream::consumer::PullConsumer = within(
        "the worker's consumer",
        within("JOBS", js.get_stream("JOBS"))
            .await
            .expect("JOBS")
            .get_consumer("analysis-worker"),
    )
    .await
    .expect("consumer");
    let info = within("consumer info", consumer.info())
        .await
        .expect("info");
    assert_eq!(info.config.num_replicas, 0, "replicas follow the stream");
    let c = info.cluster.as_ref().expect("clustered consumer");
    assert_eq!(c.replicas.len(), 2, "{c:?}");
}
