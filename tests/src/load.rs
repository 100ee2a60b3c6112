//! A steady load for fault tests: a publisher sending events round-robin to several
//! users at a fixed rate (each publish its own task, so an election stalls none of the
//! later ones), and the final checks: every device (see `devices`) has every event of
//! its user exactly once after dropping repeats, in order; the stream holds each event
//! once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ziraai_proto::UserId;
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};
use ziraai_worker::Publisher;

use crate::devices::Device;
use crate::within_for;

/// One acknowledged publish.
#[derive(Debug, Clone)]
pub struct Sent {
    pub user: usize,
    pub analysis_id: String,
    pub seq: u64,
    pub sent_at: Instant,
    pub acked_at: Instant,
}

/// Events published at a steady rate, round-robin over `users`.
pub struct EventLoad {
    stop: CancellationToken,
    ticker: JoinHandle<()>,
    tasks: TaskTracker,
    sent: Arc<Mutex<Vec<Sent>>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl EventLoad {
    /// Starts publishing `per_second` events a second with `publisher`.
    pub fn start(publisher: Publisher, users: Vec<UserId>, per_second: u32) -> Self {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let failed: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, t, ok, bad) = (stop.clone(), tasks.clone(), sent.clone(), failed.clone());
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1) / per_second);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0usize.. {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = every.tick() => {}
                }
                let which = n % users.len();
                let user = users[which].clone();
                let (publisher, ok, bad) = (publisher.clone(), ok.clone(), bad.clone());
                t.spawn(async move {
                    let id = format!("load-{n}-{}", nuid::next());
                    let outcome = AnalysisOutcome::completed(
                        AnalysisId::Text(id.clone()),
                        user,
                        json!({"n": n}),
                    );
                    let sent_at = Instant::now();
                    match publisher.publish_outcome(&outcome).await {
                        Ok(p) => ok.lock().expect("lock").push(Sent {
                            user: which,
                            analysis_id: id,
                            seq: p.seq,
                            sent_at,
                            acked_at: Instant::now(),
                        }),
                        Err(e) => bad.lock().expect("lock").push(format!("{id}: {e}")),
                    }
                });
            }
        });
        Self {
            stop,
            ticker,
            tasks,
            sent,
            failed,
        }
    }

    /// Publishes acknowledged so far.
    pub fn acked(&self) -> usize {
        self.sent.lock().expect("lock").len()
    }

    /// The first publish sent after `at` that was acknowledged: how long after `at`.
    pub fn first_ack_of_a_publish_sent_after(&self, at: Instant) -> Option<Duration> {
        let sent = self.sent.lock().expect("lock");
        sent.iter()
            .filter(|s| s.sent_at > at)
            .map(|s| s.acked_at - at)
            .min()
    }

    /// Waits until `n` more publishes were acknowledged than now (bounded by `limit`).
    pub async fn wait_acked(&self, more: usize, limit: Duration) {
        let target = self.acked() + more;
        within_for(
            limit,
            &format!("{more} more acknowledged publishes"),
            async {
                while self.acked() < target {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
    }

    /// Stops publishing and waits for every publish in flight to end; panics if any
    /// publish failed for good. Returns every acknowledged publish.
    pub async fn finish(self) -> Vec<Sent> {
        self.stop.cancel();
        let _ = self.ticker.await;
        self.tasks.close();
        within_for(
            Duration::from_secs(60),
            "publishes in flight",
            self.tasks.wait(),
        )
        .await;
        let failed = self.failed.lock().expect("lock").clone();
        assert!(failed.is_empty(), "publishes given up: {failed:?}");
        let mut sent = self.sent.lock().expect("lock").clone();
        sent.sort_by_key(|s| s.seq);
        sent
    }
}
/// What one device ended with.
#[derive(Debug)]
pub struct DeviceResult {
    pub name: String,
    /// Events received more than once (dropped by sequence, as clients do).
    pub repeats: usize,
    /// Events of its user it never received.
    pub missing: Vec<u64>,
    /// Events received after a later one (dropping repeats cannot fix that).
    pub out_of_order: usize,
    /// What it received around the first event out of order (for the failure message).
    pub trail: String,
}

/// Each device's events after dropping repeats (anything at or below the highest
/// sequence already seen), compared with its user's events.
fn judge(device: &Device, expected: &[u64], seq_of: &HashMap<String, u64>) -> DeviceResult {
    let mut last = 0;
    let mut kept = Vec::new();
    let mut repeats = 0;
    for (seq, _) in device.received(seq_of) {
        if seq <= last {
            repeats += 1;
            continue;
        }
        last = seq;
        kept.push(seq);
    }
    let kept_set: std::collections::HashSet<u64> = kept.iter().copied().collect();
    let missing: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|s| !kept_set.contains(s))
        .collect();
    // A missing event that arrived only after a later one was dropped as a "repeat".
    let out_of_order = missing
        .iter()
        .filter(|s| device.received(seq_of).iter().any(|(r, _)| r == *s))
        .count();
    let mut trail = String::new();
    if out_of_order > 0 {
        let got: Vec<u64> = device.received(seq_of).iter().map(|(s, _)| *s).collect();
        let first = missing[0];
        let at = got.iter().position(|s| *s == first).unwrap_or(0);
        let from = at.saturating_sub(30);
        trail = format!(
            "received[{from}..]: {:?} (reconnects {}, marks {:?})",
            &got[from..(at + 5).min(got.len())],
            device.reconnects(),
            device.inbox.marks.lock().expect("lock")
        );
    }
    DeviceResult {
        name: device.name.clone(),
        repeats,
        missing,
        out_of_order,
        trail,
    }
}

/// Waits (at most `limit`) until every device has every event of its user, then
/// asserts it: exactly once after dropping repeats, in order. Returns each device's
/// result (with its repeats).
pub async fn assert_every_device_has_everything(
    devices: &[Device],
    sent: &[Sent],
    limit: Duration,
) -> Vec<DeviceResult> {
    let seq_of: HashMap<String, u64> = sent
        .iter()
        .map(|s| (s.analysis_id.clone(), s.seq))
        .collect();
    let expected = |user: usize| -> Vec<u64> {
        sent.iter()
            .filter(|s| s.user == user)
            .map(|s| s.seq)
            .collect()
    };
    let deadline = Instant::now() + limit;
    loop {
        let results: Vec<DeviceResult> = devices
            .iter()
            .map(|d| judge(d, &expected(d.user), &seq_of))
            .collect();
        let done = results
            .iter()
            .all(|r| r.missing.is_empty() && r.out_of_order == 0);
        let stuck = results.iter().any(|r| r.out_of_order > 0);
        if done {
            return results;
        }
        if stuck || Instant::now() >= deadline {
            let summary: Vec<String> = results
                .iter()
                .filter(|r| !r.missing.is_empty())
                .map(|r| {
                    format!(
                        "{}: {} missing (first {:?}), {} out of order {}",
                        r.name,
                        r.missing.len(),
                        &r.missing[..r.missing.len().min(5)],
                        r.out_of_order,
                        r.trail
                    )
                })
                .collect();
            panic!("devices lack events after {limit:?}: {summary:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When the first event published after `at` reached any device: how long after `at`.
pub fn first_delivery_after(devices: &[Device], sent: &[Sent], at: Instant) -> Option<Duration> {
    let seq_of: HashMap<String, u64> = sent
        .iter()
        .map(|s| (s.analysis_id.clone(), s.seq))
        .collect();
    let after: std::collections::HashSet<u64> = sent
        .iter()
        .filter(|s| s.sent_at > at)
        .map(|s| s.seq)
        .collect();
    devices
        .iter()
        .flat_map(|d| d.received(&seq_of))
        .filter(|(seq, _)| after.contains(seq))
        .map(|(_, when)| when - at)
        .min()
}

/// How many times each `Nats-Msg-Id` is stored in `stream`, read to the last
/// sequence its leader reports, and the stream's message count.
pub async fn stream_msg_ids(
    client: async_nats::Client,
    stream: &str,
) -> (HashMap<String, usize>, u64) {
    let js = async_nats::jetstream::new(client);
    let mut stream = within_for(Duration::from_secs(10), "stream", js.get_stream(stream))
        .await
        .expect("stream exists");
    let info = within_for(Duration::from_secs(10), "stream info", stream.info())
        .await
        .expect("info")
        .clone();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut next = info.state.first_sequence.max(1);
    let last = info.state.last_sequence;
    within_for(Duration::from_secs(30), "reading the stream", async {
        while next <= last {
            match stream.direct_get_next_for_subject(">", Some(next)).await {
                Ok(m) => {
                    next = m.sequence + 1;
                    let id = m
                        .headers
                        .get("Nats-Msg-Id")
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default();
                    *ids.entry(id).or_default() += 1;
                }
                // A replica behind the leader's last sequence: ask again.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    (ids, info.state.messages)
}

/// The `NOTIFY` stream holds exactly the events acknowledged, each once: its message
/// count (from the leader) equals the acknowledged publishes, and every `Nats-Msg-Id`
/// in it is distinct. Returns the number of duplicates found (asserted 0).
pub async fn assert_stream_holds_each_once(client: async_nats::Client, sent: &[Sent]) -> usize {
    let distinct_seqs: std::collections::HashSet<u64> = sent.iter().map(|s| s.seq).collect();
    assert_eq!(
        distinct_seqs.len(),
        sent.len(),
        "two publishes acked one sequence"
    );
    let (ids, messages) = stream_msg_ids(client, "NOTIFY").await;
    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "events stored more than once");
    assert_eq!(
        messages as usize,
        sent.len(),
        "NOTIFY holds exactly the acknowledged events"
    );
    duplicates
}
