//! The worker's metrics as OpenTelemetry instruments, pushed by OTLP when telemetry
//! set a global meter provider (a metrics endpoint is configured; otherwise the global
//! meter is a no-op).
//!
//! Same names as `/metrics`: counters without `_total` (a collector's Prometheus
//! exporter adds it back to monotonic sums), gauges and the histogram as they are. The
//! analyzer latency is an OTel histogram recorded with the `prometheus-client` one
//! ([`super::AnalyzerLatency`], same buckets); the rest are observable instruments
//! reading, at each export, the atomics `/metrics` reads. Not pushed: the queue depth
//! gauges (`ziraai_worker_queue_pending`, `ziraai_worker_in_flight`), which need an
//! async broker request that a callback cannot make.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use ziraai_common::metrics::ANALYZER_LATENCY_BUCKETS;

use crate::breaker::{Breaker, State as BreakerState};
use crate::runner::Counters;

fn meter() -> Meter {
    opentelemetry::global::meter("ziraai-worker")
}

/// `ziraai_analyzer_latency_seconds` (no-op unless a meter provider is installed).
pub(super) fn analyzer_histogram() -> Histogram<f64> {
    meter()
        .f64_histogram("ziraai_analyzer_latency_seconds")
        .with_unit("s")
        .with_description("Analyzer call duration")
        .with_boundaries(ANALYZER_LATENCY_BUCKETS.to_vec())
        .build()
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Registers the observable instruments; `ready` says what `/health/ready` says.
/// The callbacks live as long as the meter provider.
pub(crate) fn register(
    counters: Arc<Counters>,
    breaker: Arc<Breaker>,
    ready: impl Fn() -> bool + Send + Sync + 'static,
) {
    let meter = meter();
    let c = counters.clone();
    meter
        .u64_observable_counter("ziraai_worker_jobs")
        .with_description("Jobs by outcome")
        .with_callback(move |o| {
            for (outcome, n) in [
                ("completed", get(&c.completed)),
                ("failed", get(&c.failed)),
                ("retried", get(&c.retried)),
                ("poison", get(&c.poison)),
                ("handed_back", get(&c.handed_back)),
            ] {
                o.observe(n, &[KeyValue::new("outcome", outcome)]);
            }
        })
        .build();
    let c = counters.clone();
    meter
        .u64_observable_counter("ziraai_worker_events_published")
        .with_description("PubAcks that stored a new event")
        .with_callback(move |o| o.observe(get(&c.published), &[]))
        .build();
    let c = counters.clone();
    meter
        .u64_observable_counter("ziraai_worker_events_duplicate")
        .with_description("PubAcks that found the event stored already")
        .with_callback(move |o| o.observe(get(&c.duplicates), &[]))
        .build();
    let b = breaker.clone();
    meter
        .u64_observable_counter("ziraai_worker_breaker_opened")
        .with_description("Times the analyzer circuit breaker opened")
        .with_callback(move |o| o.observe(b.times_opened(), &[]))
        .build();
    meter
        .i64_observable_gauge("ziraai_worker_breaker_open")
        .with_description("1 while the analyzer circuit breaker is open or half-open")
        .with_callback(move |o| o.observe(i64::from(breaker.state() != BreakerState::Closed), &[]))
        .build();
    meter
        .i64_observable_gauge("ziraai_worker_ready")
        .with_description("1 while /health/ready answers 200")
        .with_callback(move |o| o.observe(i64::from(ready()), &[]))
        .build();
    meter
        .i64_observable_gauge("ziraai_worker_jobs_in_flight")
        .with_description("Jobs this process is working on")
        .with_callback(move |o| {
            let n = counters.in_flight.load(Ordering::Relaxed);
            o.observe(i64::try_from(n).unwrap_or(i64::MAX), &[]);
        })
        .build();
}
