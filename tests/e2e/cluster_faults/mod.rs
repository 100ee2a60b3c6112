//! Zero loss on a real 3-node cluster of the pinned nats-server, with the shipped
//! authorization, every stream and bucket at 3 replicas: the NOTIFY leader killed and
//! restarted, then every node restarted in turn, under a steady load (`nodes`); every
//! gateway restarted in turn with SIGTERM behind a balancer (`deploy`); the worker
//! through a kill of the JOBS leader (`worker`). Each prints its figures on one line
//! (`cargo test … -- --nocapture` shows them).

mod deploy;
mod nodes;
mod worker;

use std::collections::HashMap;
use std::time::Duration;

use ziraai_e2e::*;

/// Replicas of every stream and bucket in these tests.
const REPLICAS: &str = "3";
/// Events a second of the load.
const RATE: u32 = 100;
/// Users of the load; each has a native device and a SignalR device.
const USERS: usize = 6;

/// What every service of these tests is configured with: the cluster's URLs in
/// `urls` order, 3 replicas, and `user`'s credentials from `nats/auth.conf`.
fn service_vars(cluster: &NatsCluster, urls: &str, user: &'static str) -> HashMap<String, String> {
    let mut vars = HashMap::from([
        ("ZIRAAI_CONFIG_DIR".to_owned(), String::new()),
        ("ZIRAAI_NATS_URL".to_owned(), urls.to_owned()),
        ("ZIRAAI_NATS_REPLICAS".to_owned(), REPLICAS.to_owned()),
        ("ZIRAAI_LOG_FORMAT".to_owned(), "json".to_owned()),
    ]);
    for (k, v) in cluster.credentials(user) {
        vars.insert(k.to_owned(), v);
    }
    vars
}

/// The operator's provisioning step (`ziraai-worker provision`), at 3 replicas, with
/// the worker's `ack_wait` of these tests.
async fn provision(cluster: &NatsCluster) {
    let mut vars = service_vars(cluster, &cluster.urls(), "operator");
    vars.insert("ZIRAAI_WORKER_ACK_WAIT".into(), "4s".into());
    let mut p = ServiceProcess::spawn("ziraai-worker", &["provision"], &vars);
    let status = p.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "provision failed: {}", p.stderr());
    let js = async_nats::jetstream::new(cluster.client().await);
    for name in [
        "NOTIFY",
        "KV_CURSORS",
        "KV_SIGNALR",
        "KV_CONNS",
        "DELIVERY",
        "JOBS",
    ] {
        let mut s = within("stream", js.get_stream(name)).await.expect(name);
        let info = within("stream info", s.info()).await.expect("info");
        assert_eq!(info.config.num_replicas, 3, "{name} replicated");
    }
}

/// A gateway process on the cluster, given every node's URL starting with `first`.
async fn gateway(cluster: &NatsCluster, first: usize) -> ServiceProcess {
    let n = cluster.len();
    let urls: Vec<String> = (0..n).map(|k| cluster.url((first + k) % n)).collect();
    let mut vars = service_vars(cluster, &urls.join(","), "gateway");
    vars.extend(
        [
            ("ZIRAAI_GATEWAY_LISTEN", "127.0.0.1:0"),
            ("ZIRAAI_GATEWAY_SHUTDOWN_GRACE", "5s"),
            ("ZIRAAI_GATEWAY_HANDSHAKE_BURST", "100000"),
            ("ZIRAAI_GATEWAY_HTTP_BURST", "100000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    ServiceProcess::gateway_with_vars(vars, None).await
}

/// The worker's publisher as user `worker`, on every node's URL.
async fn publisher(cluster: &NatsCluster) -> ziraai_worker::Publisher {
    ziraai_worker::Publisher::new(async_nats::jetstream::new(
        cluster.client_as("worker").await,
    ))
}

/// Six users, and for each a native device (alternating which of `ws_urls` it tries
/// first) and a SignalR device on `hub_urls[u % len]`.
fn devices(users: &[ziraai_proto::UserId], ws_urls: &[String], hub_urls: &[String]) -> Vec<Device> {
    let mut out = Vec::new();
    for (u, user) in users.iter().enumerate() {
        let mut urls = ws_urls.to_vec();
        let first = u % urls.len();
        urls.rotate_left(first);
        out.push(Device::native(urls, (u, user), &format!("phone-{u}")));
        let hub = hub_urls[u % hub_urls.len()].clone();
        out.push(Device::signalr(hub, (u, user), &format!("web-{u}")));
    }
    out
}

/// The node a gateway's NATS connection is on, from the nodes' `/connz` (the
/// connection is named `ziraai-gateway <gatewayId>`); `None` while it is on none.
async fn node_of(cluster: &NatsCluster, gateway: &ServiceProcess) -> Option<usize> {
    let id = gateway.health().await["gatewayId"]
        .as_str()
        .expect("gatewayId in /health")
        .to_owned();
    let name = format!("ziraai-gateway {id}");
    for i in 0..cluster.len() {
        if !cluster.is_running(i) {
            continue;
        }
        let connz = cluster.monitor(i, "/connz?limit=4096").await;
        let found = connz["connections"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == name.as_str()));
        if found {
            return Some(i);
        }
    }
    None
}

/// Makes node `to` the leader of `stream` (a leader step-down asking for it).
async fn move_leader(cluster: &NatsCluster, stream: &str, to: usize) {
    let client = cluster.client().await;
    let body = serde_json::json!({"placement": {"preferred": cluster.name(to)}}).to_string();
    within_for(Duration::from_secs(30), "the stream leader moved", async {
        while cluster.stream_leader(stream).await != to {
            let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
            let _ = client.request(subject, body.clone().into()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}
