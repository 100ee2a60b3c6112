//! The worker's `/metrics`: its own `prometheus-client` [`Registry`] in Prometheus
//! text. The analyzer latency is a histogram recorded per call; the job counters the
//! worker keeps for `/health` are read by a [`Collector`] at scrape time; the queue
//! depth comes from the consumer's info, cached ([`QueueDepth`]) so a scrape never
//! waits on the broker for long nor asks it more than every few seconds. Names are a
//! contract (alert rules and the dashboard in `infra/` use them; README lists them).
//! The same metrics are pushed by OTLP when an endpoint is set ([`otlp`]).

pub(crate) mod otlp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ziraai_common::metrics::{analyzer_histogram, encode_counter, encode_counters, encode_gauge};

use crate::runner::Counters;

/// How long a consumer-info answer is reused.
const QUEUE_DEPTH_MAX_AGE: Duration = Duration::from_secs(5);
/// Longest a scrape waits for the consumer's info (the last value is shown after).
const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_secs(1);

/// `ziraai_analyzer_latency_seconds`: one observation per analyzer call that ended
/// (answered, refused, failed or timed out; a call abandoned at shutdown is not one).
/// Recorded for `/metrics` and OTLP alike.
#[derive(Debug, Clone)]
pub struct AnalyzerLatency(Histogram, opentelemetry::metrics::Histogram<f64>);

impl Default for AnalyzerLatency {
    fn default() -> Self {
        Self(analyzer_histogram(), otlp::analyzer_histogram())
    }
}

impl AnalyzerLatency {
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
        self.1.record(took.as_secs_f64(), &[]);
    }
}

/// The consumer's pending (`num_pending`) and delivered-unacknowledged
/// (`num_ack_pending`) jobs, read at most every [`QUEUE_DEPTH_MAX_AGE`].
#[derive(Debug)]
pub(crate) struct QueueDepth {
    consumer: consumer::Consumer<consumer::pull::Config>,
    last: tokio::sync::Mutex<Option<(Instant, u64, u64)>>,
}

impl QueueDepth {
    pub(crate) fn new(consumer: consumer::Consumer<consumer::pull::Config>) -> Self {
        Self {
            consumer,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `(pending, in_flight)`: the cached value when fresh, else asked (bounded); the
    /// last known value when the broker does not answer, `None` before any answer.
    pub(crate) async fn get(&self) -> Option<(u64, u64)> {
        // One scrape asks at a time; others wait (bounded by the ask) and reuse it.
        let mut last = self.last.lock().await;
        if let Some((at, pending, in_flight)) = *last
            && at.elapsed() < QUEUE_DEPTH_MAX_AGE
        {
            return Some((pending, in_flight));
        }
        match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, self.consumer.get_info()).await {
            Ok(Ok(info)) => {
                let (pending, in_flight) = (info.num_pending, info.num_ack_pending as u64);
                *last = Some((Instant::now(), pending, in_flight));
                Some((pending, in_flight))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "consumer info unavailable for /metrics");
                last.map(|(_, p, f)| (p, f))
            }
            Err(_) => last.map(|(_, p, f)| (p, f)),
        }
    }
}

/// What `/metrics` reads at scrape time.
pub(crate) struct Scrape<'a> {
    pub(crate) counters: &'a Counters,
    pub(crate) breaker_open: bool,
    pub(crate) breaker_opened: u64,
    pub(crate) ready: bool,
    pub(crate) queue: Option<(u64, u64)>,
}

/// The values of one scrape, owned (a [`Collector`] is `'static`).
#[derive(Debug)]
struct Values {
    outcomes: [(&'static str, u64); 5],
    published: u64,
    duplicates: u64,
    jobs_in_flight: u64,
    breaker_open: bool,
    breaker_opened: u64,
    ready: bool,
    queue: Option<(u64, u64)>,
}

impl Collector for Values {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        encode_counters(
            &mut e,
            (
                "ziraai_worker_jobs",
                "Jobs by outcome: completed, failed (analysis.failed published), retried (handed back after a transient analyzer failure), poison, handed_back (at shutdown).",
            ),
            "outcome",
            &self.outcomes,
        )?;
        encode_counter(
            &mut e,
            (
                "ziraai_worker_events_published",
                "PubAcks that stored a new event.",
            ),
            self.published,
        )?;
        encode_counter(
            &mut e,
            (
                "ziraai_worker_events_duplicate",
                "PubAcks that found the event stored already (duplicate: true).",
            ),
            self.duplicates,
        )?;
        encode_counter(
            &mut e,
            (
                "ziraai_worker_breaker_opened",
                "Times the analyzer circuit breaker opened.",
            ),
            self.breaker_opened,
        )?;
        encode_gauge(
            &mut e,
            (
                "ziraai_worker_breaker_open",
                "1 while the analyzer circuit breaker is open or half-open.",
            ),
            i64::from(self.breaker_open),
        )?;
        encode_gauge(
            &mut e,
            ("ziraai_worker_ready", "1 while /health/ready answers 200."),
            i64::from(self.ready),
        )?;
        ziraai_common::metrics::encode_span_counters(&mut e)?;
        encode_gauge(
            &mut e,
            (
                "ziraai_worker_jobs_in_flight",
                "Jobs this process is working on.",
            ),
            gauge(self.jobs_in_flight),
        )?;
        // Absent rather than a made-up zero until the broker has answered once.
        if let Some((pending, in_flight)) = self.queue {
            encode_gauge(
                &mut e,
                (
                    "ziraai_worker_queue_pending",
                    "Jobs waiting in the consumer (num_pending; refreshed at most every 5 s).",
                ),
                gauge(pending),
            )?;
            encode_gauge(
                &mut e,
                (
                    "ziraai_worker_in_flight",
                    "Jobs delivered by the consumer to any worker and not yet acknowledged (num_ack_pending; refreshed at most every 5 s).",
                ),
                gauge(in_flight),
            )?;
        }
        Ok(())
    }
}

/// The worker's registry for one scrape, in Prometheus text.
pub(crate) fn render(s: Scrape<'_>) -> String {
    let c = s.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let values = Values {
        outcomes: [
            ("completed", get(&c.completed)),
            ("failed", get(&c.failed)),
            ("retried", get(&c.retried)),
            ("poison", get(&c.poison)),
            ("handed_back", get(&c.handed_back)),
        ],
        published: get(&c.published),
        duplicates: get(&c.duplicates),
        jobs_in_flight: c.in_flight.load(Ordering::Relaxed) as u64,
        breaker_open: s.breaker_open,
        breaker_opened: s.breaker_opened,
        ready: s.ready,
        queue: s.queue,
    };
    let mut registry = Registry::default();
    registry.register(
        "ziraai_analyzer_latency_seconds",
        "Analyzer call duration, from the request to the classified answer (or the timeout)",
        c.analyzer_latency.0.clone(),
    );
    registry.register_collector(Box::new(values));
    ziraai_common::metrics::encode_text(&registry)
}
