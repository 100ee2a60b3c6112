//! Measurements of the load clients (not tests: `#[ignore]`, run by hand): what an idle
//! client costs its process, and a storm of reconnects after a gateway restart.
//! `cargo test -p ziraai-e2e --test e2e -- --ignored loadclient_ --nocapture --test-threads 1`.
//! The memory figures use a gateway process, so this process holds only the clients.

use std::time::Duration;

use tokio::sync::mpsc::unbounded_channel;
use tokio_util::sync::CancellationToken;
use ziraai_e2e::loadclient::{self, ClientConfig, ClientEvent, Protocol};
use ziraai_e2e::*;

const CLIENTS: usize = 2_000;
/// Connects in flight at once.
const BATCH: usize = 100;

/// Resident set of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn idle_clients_cost(protocol: Protocol) {
    let nats = NatsServer::start().await;
    let gw = ServiceProcess::gateway(&nats, &[]).await;
    let (tx, mut rx) = unbounded_channel();
    let cancel = CancellationToken::new();
    let tokens: Vec<String> = (0..CLIENTS).map(|_| token(&user("mem"))).collect();
    let before = rss_kib();
    let mut tasks = Vec::with_capacity(CLIENTS);
    let mut connected = 0;
    // In batches, as a load generator paces its connects.
    for (n, token) in tokens.into_iter().enumerate() {
        let cfg = ClientConfig {
            gateway: gw.addr(),
            source: None,
            protocol,
            token,
            device: format!("mem-{n}"),
            reconnect: true,
        };
        tasks.push(loadclient::spawn(n, cfg, tx.clone(), cancel.child_token()));
        if tasks.len() % BATCH != 0 && tasks.len() != CLIENTS {
            continue;
        }
        within_for(Duration::from_secs(60), "a batch connected", async {
            while connected < tasks.len() {
                match rx.recv().await.expect("clients report") {
                    ClientEvent::Connected { .. } => connected += 1,
                    ClientEvent::Disconnected { reason, .. } => {
                        eprintln!("disconnected: {reason}");
                    }
                    ClientEvent::Delivery { .. } => {}
                }
            }
        })
        .await;
    }
    // Past a SignalR client's first keep-alive and Ack timers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    eprintln!(
        "{protocol}: {CLIENTS} idle clients: RSS {before} → {after} KiB, {:.1} KiB per client",
        (after.saturating_sub(before)) as f64 / CLIENTS as f64
    );
    cancel.cancel();
    for t in tasks {
        let _ = within("client stopped", t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn loadclient_memory_native_json() {
    idle_clients_cost(Protocol::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn loadclient_memory_signalr_msgpack() {
    idle_clients_cost(Protocol::SignalrMsgPack).await;
}

/// Connections and distinct analysis ids seen per client.
struct Tally {
    connections: Vec<usize>,
    /// Disconnect reasons (their first 160 characters) and how often.
    reasons: std::collections::BTreeMap<String, usize>,
    got: Vec<std::collections::HashSet<String>>,
}

impl Tally {
    fn record(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Connected { client, .. } => self.connections[client] += 1,
            ClientEvent::Delivery {
                client,
                analysis_id,
                ..
            } => {
                self.got[client].insert(analysis_id);
            }
            ClientEvent::Disconnected { reason, .. } => {
                *self
                    .reasons
                    .entry(reason.chars().take(160).collect())
                    .or_default() += 1;
            }
        }
    }
}

/// Clients per protocol in the storm.
const STORM_PER_PROTOCOL: usize = 250;

/// A gateway restart under every protocol at once: all clients come back (to the
/// other gateway) and receive what was published meanwhile; prints the time from the
/// shutdown to the last reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn loadclient_storm_after_a_gateway_restart() {
    let nats = NatsServer::start().await;
    let gw_a = TestGateway::start(&nats).await;
    let gw_b = TestGateway::start(&nats).await;
    let proxy = Proxy::start(gw_a.addr).await;
    let publisher = nats.publisher().await;
    let n = STORM_PER_PROTOCOL * Protocol::ALL.len();
    let users: Vec<_> = (0..n).map(|_| user("storm")).collect();
    let (tx, mut rx) = unbounded_channel();
    let cancel = CancellationToken::new();
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let cfg = ClientConfig {
                gateway: proxy.addr,
                source: None,
                protocol: Protocol::ALL[i % Protocol::ALL.len()],
                token: token(u),
                device: format!("storm-{i}"),
                reconnect: true,
            };
            loadclient::spawn(i, cfg, tx.clone(), cancel.child_token())
        })
        .collect();
    let mut t = Tally {
        connections: vec![0; n],
        reasons: Default::default(),
        got: vec![Default::default(); n],
    };
    within_for(Duration::from_secs(60), "every client connected", async {
        while t.connections.contains(&0) {
            t.record(rx.recv().await.expect("reports"));
        }
    })
    .await;
    proxy.retarget(gw_b.addr);
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(gw_a.shutdown());
    let mut ids = Vec::with_capacity(n);
    for u in &users {
        let (outcome, _) = publish_completed(&publisher, u, serde_json::json!("storm")).await;
        ids.push(outcome.analysis_id().to_string());
    }
    within_for(Duration::from_secs(60), "every client back", async {
        while t.connections.iter().any(|c| *c < 2) {
            t.record(rx.recv().await.expect("reports"));
        }
    })
    .await;
    let back = started.elapsed();
    within_for(Duration::from_secs(60), "every event delivered", async {
        while (0..n).any(|i| !t.got[i].contains(&ids[i])) {
            t.record(rx.recv().await.expect("reports"));
        }
    })
    .await;
    eprintln!(
        "{n} clients ({STORM_PER_PROTOCOL} per protocol): all back {back:?} after the shutdown began, \
         every event delivered after {:?}",
        started.elapsed()
    );
    eprintln!("disconnects: {:?}", t.reasons);
    within("shutdown", stopping)
        .await
        .expect("joined")
        .expect("clean");
    cancel.cancel();
    for t in tasks {
        let _ = within("client stopped", t).await;
    }
}
