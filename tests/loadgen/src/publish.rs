//! Publishers: several tasks, each on its own NATS connection, publishing
//! `analysis.completed` events through JetStream as the worker does, with pipelined
//! PubAcks: each keeps up to `window` acknowledgements in flight (the publish is sent,
//! its `PublishAckFuture` awaited later), so the PubAck stays the back-pressure
//! without a round trip per event. Paced by a token bucket per task, or flat out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use tokio_util::sync::CancellationToken;
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};
use ziraai_proto::{ENVELOPE_VERSION, PayloadEncoding, UserId, headers};

use crate::pace::{Rng, TokenBucket};
use crate::tally::event_id;

/// Which users the events go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Targets {
    /// A random user each time, until the duration is over or the run is stopped.
    Random,
    /// Exactly one event to each user, then stop.
    EachOnce,
}

/// One publishing phase.
#[derive(Clone)]
pub(crate) struct PublishPlan {
    pub(crate) phase: String,
    pub(crate) users: Arc<Vec<UserId>>,
    pub(crate) targets: Targets,
    /// Events per second over all publishers; `None`: flat out.
    pub(crate) rate: Option<u64>,
    /// How long to publish (for [`Targets::Random`]); `stop` ends it early.
    pub(crate) duration: Duration,
    pub(crate) publishers: usize,
    pub(crate) window: usize,
    /// Each event carries a sampled W3C `traceparent`, as the worker's do.
    pub(crate) traced: bool,
}

/// What a phase's publishers did.
#[derive(Debug, Default, Clone)]
pub(crate) struct Published {
    /// Acknowledged events per user index.
    pub(crate) acked_per_user: Vec<u64>,
    pub(crate) acked: u64,
    pub(crate) failed: u64,
    pub(crate) first_error: Option<String>,
    /// From the first send to the last PubAck.
    pub(crate) elapsed: Duration,
}

impl Published {
    pub(crate) fn acked_per_s(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the publishers of `plan` against `nats_url` to the end (or `stop`).
pub(crate) async fn run(
    nats_url: &str,
    plan: &PublishPlan,
    stop: CancellationToken,
) -> anyhow::Result<Published> {
    let p = plan.publishers.max(1);
    let mut contexts = Vec::with_capacity(p);
    for _ in 0..p {
        contexts.push(jetstream::new(async_nats::connect(nats_url).await?));
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(p);
    for (k, js) in contexts.into_iter().enumerate() {
        let (plan, stop) = (plan.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            publisher(k, p, js, &plan, start, stop).await
        }));
    }
    let mut total = Published {
        acked_per_user: vec![0; plan.users.len()],
        ..Published::default()
    };
    for t in tasks {
        let one = t.await?;
        for (a, b) in total.acked_per_user.iter_mut().zip(&one.acked_per_user) {
            *a += b;
        }
        total.acked += one.acked;
        total.failed += one.failed;
        total.first_error = total.first_error.or(one.first_error);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// Publisher `k` of `p`.
async fn publisher(
    k: usize,
    p: usize,
    js: jetstream::Context,
    plan: &PublishPlan,
    start: Instant,
    stop: CancellationToken,
) -> Published {
    let users = &plan.users;
    let mut out = Published {
        acked_per_user: vec![0; users.len()],
        ..Published::default()
    };
    let mut bucket = plan
        .rate
        .map(|r| r as f64 / p as f64)
        .map(|r| TokenBucket::new(r, TokenBucket::default_burst(r), Instant::now()));
    let mut rng = Rng::new(k as u64 + 1);
    let mut inflight: VecDeque<(usize, PublishAckFuture)> = VecDeque::with_capacity(plan.window);
    // EachOnce: this publisher's share is users k, k+p, k+2p…
    let mut next_user = k;
    let mut n: u64 = 0;
    let mut tokens = 0u64;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let user = match plan.targets {
            Targets::Random => {
                if start.elapsed() >= plan.duration {
                    break;
                }
                rng.below(users.len())
            }
            Targets::EachOnce => {
                if next_user >= users.len() {
                    break;
                }
                next_user += p;
                next_user - p
            }
        };
        if let Some(b) = bucket.as_mut() {
            while tokens == 0 {
                tokens = b.take_all(Instant::now());
                if tokens == 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(b.wait(Instant::now())) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            }
            if tokens == 0 {
                break;
            }
            tokens -= 1;
        }
        if inflight.len() >= plan.window.max(1)
            && let Some((u, ack)) = inflight.pop_front()
        {
            settle(&mut out, u, ack.await.map(|_| ()));
        }
        // Unique within the phase: publisher k numbers k, k+p, k+2p…
        let id = event_id(&plan.phase, unix_ns(), n * p as u64 + k as u64);
        n += 1;
        let msg = event(id, &users[user], plan.traced.then_some(&mut rng));
        match js.send_publish(users[user].notify_subject(), msg).await {
            Ok(ack) => inflight.push_back((user, ack)),
            Err(e) => settle(&mut out, user, Err(e.to_string())),
        }
    }
    while let Some((u, ack)) = inflight.pop_front() {
        settle(&mut out, u, ack.await.map(|_| ()));
    }
    out
}

fn settle<E: ToString>(out: &mut Published, user: usize, result: Result<(), E>) {
    match result {
        Ok(()) => {
            out.acked += 1;
            out.acked_per_user[user] += 1;
        }
        Err(e) => {
            out.failed += 1;
            if out.first_error.is_none() {
                out.first_error = Some(e.to_string());
            }
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One `analysis.completed` event for `user` with analysis id `id`, with the headers
/// the worker sets, and a sampled `traceparent` (random ids from `traced`) when given.
fn event(id: String, user: &UserId, traced: Option<&mut Rng>) -> PublishMessage {
    let outcome =
        AnalysisOutcome::completed(AnalysisId::Text(id), user.clone(), serde_json::json!({}));
    let envelope = outcome.to_envelope();
    let encoding = PayloadEncoding::Json;
    let mut h = HeaderMap::new();
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        outcome.event_id().as_str(),
    );
    h.insert(headers::KIND, envelope.kind.as_str());
    h.insert(headers::ENVELOPE, ENVELOPE_VERSION);
    h.insert(headers::CONTENT_TYPE, encoding.content_type());
    if let Some(rng) = traced {
        let (a, b, span) = (rng.next_u64(), rng.next_u64(), rng.next_u64() | 1);
        h.insert(
            "traceparent",
            format!("00-{a:016x}{b:016x}-{span:016x}-01").as_str(),
        );
    }
    PublishMessage::build()
        .payload(envelope.encode(encoding).into())
        .headers(h)
}
