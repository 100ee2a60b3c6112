//! What an idle load client costs its process (not a test: `#[ignore]`, run by hand):
//! `cargo test -p ziraai-e2e --test e2e -- --ignored loadclient_memory --nocapture`
//! against a gateway process, so this process holds only the clients.

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
