//! `ziraai-worker run`: consumes analysis jobs from the `JOBS` work queue, calls the
//! analyzer, publishes the outcome to `NOTIFY`, and only then acknowledges the job.
//!
//! Exactly one notification per job: the event's `Nats-Msg-Id` is `job-<jobId>`, so
//! every publish for a job (a retry, a redelivery after a crash) is stored once. At
//! most `max_in_flight` jobs run at once. A transient analyzer failure hands the job
//! back with a growing redelivery delay (`nak` with delay: the server holds the job,
//! no task sleeps); after `max_attempts` deliveries it becomes `analysis.failed` with
//! code `analyzer_unavailable`. The circuit breaker stops pulling while the analyzer
//! keeps failing. Poison jobs are terminated and published as advisories.
//!
//! Each delivery of a job is a `job` span (continuing the trace of the job message's
//! `traceparent` when it has one, else a new trace) whose children are the
//! `analyzer.call` and the `notify.publish`; `job.outcome` says how it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use ziraai_common::config::WorkerConfig;
use ziraai_common::nats::POISON_ADVISORY_SUBJECT;
use ziraai_proto::analysis::{AnalysisError, AnalysisOutcome};

use crate::analyzer::{Analyzer, Outcome};
use crate::breaker::Breaker;
use crate::job::Job;
use crate::{PublishError, Publisher};

/// How long one pull waits for jobs.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Pause after a failed pull (broker unreachable).
const PULL_RETRY: Duration = Duration::from_millis(500);

/// Counters shown by `/health`.
#[derive(Debug, Default)]
pub struct Counters {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub poison: AtomicU64,
    pub handed_back: AtomicU64,
    pub in_flight: AtomicUsize,
    /// PubAcks that stored a new event.
    pub published: AtomicU64,
    /// PubAcks with `duplicate: true`: the job's event was stored earlier (a redelivery
    /// after a lost job ack, or a publish retry whose first attempt was stored).
    pub duplicates: AtomicU64,
    /// Duration of every analyzer call that ended (`/metrics` only).
    pub analyzer_latency: crate::metrics::AnalyzerLatency,
}

/// How one delivery of a job ended, for its span: `job.outcome` (the outcomes of
/// `ziraai_worker_jobs_total`) and, when it is an error, the status description.
struct Ended {
    outcome: &'static str,
    error: Option<String>,
}

impl Ended {
    fn ok(outcome: &'static str) -> Self {
        Self {
            outcome,
            error: None,
        }
    }

    fn error(outcome: &'static str, why: impl Into<String>) -> Self {
        Self {
            outcome,
            error: Some(why.into()),
        }
    }
}

/// What the job tasks share.
pub(crate) struct Runner {
    pub(crate) js: jetstream::Context,
    pub(crate) publisher: Publisher,
    pub(crate) analyzer: Analyzer,
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) cfg: WorkerConfig,
    pub(crate) counters: Arc<Counters>,
    /// Progress acks keep a long analysis from being redelivered: a third of the
    /// consumer's ack wait.
    pub(crate) progress_every: Duration,
}

impl Runner {
    /// Redelivery delay after the `delivered`-th attempt failed transiently.
    fn backoff(&self, delivered: u64) -> Duration {
        let exp = delivered.saturating_sub(1).min(16) as u32;
        (self.cfg.retry_base * 2u32.saturating_pow(exp)).min(self.cfg.retry_max)
    }

    /// Pulls and processes jobs until `stop`; then lets in-flight jobs finish until
    /// `hand_back` fires, after which they are handed back (nak) at once.
    pub(crate) async fn run(
        self: Arc<Self>,
        consumer: consumer::Consumer<consumer::pull::Config>,
        client: async_nats::Client,
        stop: CancellationToken,
        hand_back: CancellationToken,
    ) -> TaskTracker {
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.cfg.max_in_flight));
        loop {
            if let Err(wait) = self.breaker.permit_to_pull() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            if client.connection_state() != async_nats::connection::State::Connected {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(PULL_RETRY) => continue,
                }
            }
            let first = tokio::select! {
                _ = stop.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut messages = match batch {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling jobs failed; retrying");
                    drop(permits);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(PULL_RETRY) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => None,
                    m = messages.next() => m,
                };
                let Some(next) = next else { break };
                let msg = match next {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "pull ended");
                        break;
                    }
                };
                let Some(permit) = permits.pop() else { break };
                let (me, hand_back) = (self.clone(), hand_back.clone());
                tracker.spawn(async move {
                    me.counters.in_flight.fetch_add(1, Ordering::Relaxed);
                    me.process(msg, hand_back).await;
                    me.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            if stop.is_cancelled() {
                break;
            }
        }
        tracker.close();
        tracker
    }

    /// Processes one delivery of a job in its `job` span.
    async fn process(&self, msg: jetstream::Message, hand_back: CancellationToken) {
        let delivered = msg.info().map(|i| i.delivered.max(1) as u64).unwrap_or(1);
        // A root unless the job message carries a trace context to continue.
        let span = tracing::info_span!(
            parent: None,
            "job",
            otel.kind = "consumer",
            job.id = Empty,
            analysis.id = Empty,
            user.id = Empty,
            job.attempt = delivered,
            job.outcome = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        if let Some(headers) = &msg.headers
            && headers.get("traceparent").is_some()
        {
            // Fails only when no OpenTelemetry layer is installed: nothing to continue.
            let _ = span.set_parent(ziraai_common::telemetry::extract(headers));
        }
        let ended = self
            .attempt(&msg, delivered, hand_back, &span)
            .instrument(span.clone())
            .await;
        span.record("job.outcome", ended.outcome);
        if let Some(why) = ended.error {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", why);
        }
    }

    async fn attempt(
        &self,
        msg: &jetstream::Message,
        delivered: u64,
        hand_back: CancellationToken,
        span: &tracing::Span,
    ) -> Ended {
        let job = match Job::parse(&msg.payload) {
            Ok(job) => job,
            Err(poison) => {
                let reason = poison.to_string();
                self.poison(msg, &reason).await;
                return Ended::error("poison", reason);
            }
        };
        span.record("job.id", job.job_id.as_str());
        span.record("analysis.id", tracing::field::display(&job.analysis_id));
        span.record("user.id", job.user_id.as_str());
        if self.breaker.permit().is_err() {
            // Not an attempt: the job waits for the analyzer to recover.
            let _ = msg
                .ack_with(AckKind::Nak(Some(self.cfg.breaker_cooldown)))
                .await;
            return Ended::ok("handed_back");
        }
        let called = std::time::Instant::now();
        let analysis = self.analyzer.analyze(&job.body);
        tokio::pin!(analysis);
        let every = self.progress_every;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let outcome = loop {
            tokio::select! {
                o = &mut analysis => {
                    self.counters.analyzer_latency.observe(called.elapsed());
                    break o;
                }
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
                _ = hand_back.cancelled() => {
                    self.breaker.abandoned();
                    self.counters.handed_back.fetch_add(1, Ordering::Relaxed);
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                    return Ended::ok("handed_back");
                }
            }
        };
        let mut result = match outcome {
            Outcome::Completed(result) => {
                self.breaker.success();
                AnalysisOutcome::completed(job.analysis_id.clone(), job.user_id.clone(), result)
            }
            Outcome::Rejected { status, message } => {
                // The analyzer answered: it is up; this job is what it refuses.
                self.breaker.success();
                tracing::info!(job = %job.job_id, status, %message, "analyzer rejected the job");
                let error = AnalysisError {
                    code: "analysis_rejected".into(),
                    message,
                };
                AnalysisOutcome::failed(job.analysis_id.clone(), job.user_id.clone(), error)
            }
            Outcome::Transient(why) => {
                if self.breaker.failure() {
                    tracing::warn!(cooldown = ?self.cfg.breaker_cooldown, "analyzer keeps failing: circuit breaker open");
                }
                if delivered < self.cfg.max_attempts {
                    let delay = self.backoff(delivered);
                    tracing::info!(job = %job.job_id, attempt = delivered, ?delay, %why, "analyzer unavailable; job handed back");
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                    return Ended::error("retried", why);
                }
                tracing::warn!(job = %job.job_id, attempts = delivered, %why, "giving up on the analyzer for this job");
                let error = AnalysisError {
                    code: "analyzer_unavailable".into(),
                    message: format!(
                        "the analyzer could not be reached after {delivered} attempts: {why}"
                    ),
                };
                AnalysisOutcome::failed(job.analysis_id.clone(), job.user_id.clone(), error)
            }
        };
        // A publish may ride out a NOTIFY leader election (the publisher retries for up
        // to its RETRY_WINDOW): keep the job's ack wait from running out meanwhile, or the
        // job would be redelivered and analysed again while its event is being stored.
        let (envelope, event_id) = (result.to_envelope(), job.event_id());
        let publish = self.publisher.publish(&job.user_id, &envelope, &event_id);
        tokio::pin!(publish);
        let mut published = loop {
            tokio::select! {
                p = &mut publish => break p,
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
        };
        if let Err(PublishError::Invalid(why)) = &published {
            // Retrying cannot help (e.g. a result over the stream's message size): the
            // user gets a failure that can be delivered instead of nothing.
            tracing::warn!(job = %job.job_id, error = %why, "outcome cannot be delivered; publishing analysis.failed instead");
            let error = AnalysisError {
                code: "analysis_rejected".into(),
                message: format!("the analysis outcome cannot be delivered: {why}"),
            };
            result = AnalysisOutcome::failed(job.analysis_id.clone(), job.user_id.clone(), error);
            published = self
                .publisher
                .publish(&job.user_id, &result.to_envelope(), &job.event_id())
                .await;
        }
        match published {
            Ok(p) => {
                // Acknowledge only after the PubAck; a lost ack means a redelivery,
                // whose publish JetStream de-duplicates by the same id.
                if let Err(e) = msg.double_ack().await {
                    tracing::warn!(job = %job.job_id, error = %e, "job ack failed; it will be redelivered and de-duplicated");
                }
                let counter = if matches!(result, AnalysisOutcome::Completed(_)) {
                    &self.counters.completed
                } else {
                    &self.counters.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let acks = if p.duplicate {
                    &self.counters.duplicates
                } else {
                    &self.counters.published
                };
                acks.fetch_add(1, Ordering::Relaxed);
                tracing::info!(job = %job.job_id, user = %job.user_id, seq = p.seq, kind = result.kind(), duplicate = p.duplicate, "job done");
                match &result {
                    AnalysisOutcome::Completed(_) => Ended::ok("completed"),
                    AnalysisOutcome::Failed(f) => Ended::error("failed", f.error.code.clone()),
                }
            }
            Err(e) => {
                // Not acknowledged: the job comes back and is published then.
                tracing::warn!(job = %job.job_id, error = %e, "event not published; job handed back");
                let _ = msg.ack_with(AckKind::Nak(Some(self.cfg.retry_base))).await;
                Ended::error("retried", e.to_string())
            }
        }
    }

    /// Terminates a poison job and publishes an advisory about it.
    async fn poison(&self, msg: &jetstream::Message, reason: &str) {
        let stream_seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        tracing::warn!(stream_seq, reason, "poison job terminated");
        self.counters.poison.fetch_add(1, Ordering::Relaxed);
        let body: String = String::from_utf8_lossy(&msg.payload)
            .chars()
            .take(2000)
            .collect();
        let advisory = serde_json::json!({
            "type": "ziraai.worker.poison_job",
            "stream": "JOBS",
            "streamSeq": stream_seq,
            "reason": reason,
            "body": body,
            "at": ziraai_proto::envelope::rfc3339(time::OffsetDateTime::now_utc()),
        });
        let payload = bytes::Bytes::from(advisory.to_string());
        match self.js.publish(POISON_ADVISORY_SUBJECT, payload).await {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    tracing::warn!(error = %e, "poison advisory not stored");
                }
            }
            Err(e) => tracing::warn!(error = %e, "poison advisory not published"),
        }
        if let Err(e) = msg.ack_with(AckKind::Term).await {
            tracing::warn!(error = %e, "terminating a poison job failed; it will come back");
        }
    }
}
