//! The gateway's metrics as OpenTelemetry instruments, pushed by OTLP when telemetry
//! set a global meter provider (a metrics endpoint is configured; otherwise the global
//! meter is a no-op and nothing here costs more than a branch).
//!
//! The same series as `/metrics`, under the same names: counters drop `_total` (a
//! collector's Prometheus exporter adds it back to monotonic sums), gauges and the
//! histogram keep theirs. The delivery latency is an OTel histogram recorded where the
//! `prometheus-client` one is observed ([`super::Latency`], resolved per socket with
//! the same buckets); everything else is an observable instrument whose callback
//! reads, at each export, the atomics `/metrics` reads. `ziraai_gateway_ready` here is
//! "connected to NATS and not draining" (the stream lookup of `/health/ready` is async
//! and a callback must not wait).

use std::sync::{Arc, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use ziraai_common::metrics::DELIVERY_LATENCY_BUCKETS;

use super::{COUNTERS, PROTOCOLS, Path, get, protocol_label};
use crate::AppState;
use crate::event::Stats;

/// The meter of the gateway's instruments.
fn meter() -> Meter {
    opentelemetry::global::meter("ziraai-gateway")
}

/// `ziraai_delivery_latency_seconds` (no-op unless a meter provider is installed).
pub(super) fn latency_histogram() -> Histogram<f64> {
    meter()
        .f64_histogram("ziraai_delivery_latency_seconds")
        .with_unit("s")
        .with_description("Time from an event's publish to its write on a socket")
        .with_boundaries(DELIVERY_LATENCY_BUCKETS.to_vec())
        .build()
}

type Level = fn(&AppState) -> i64;

/// Unlabelled gauges: (name, help, value).
const GAUGES: [(&str, &str, Level); 4] = [
    (
        "ziraai_gateway_users",
        "Users with a live subscription",
        |a| i64::try_from(a.hub.users()).unwrap_or(i64::MAX),
    ),
    (
        "ziraai_gateway_nats_connected",
        "1 while connected to NATS",
        |a| i64::from(nats_connected(a)),
    ),
    (
        "ziraai_gateway_ready",
        "1 while connected to NATS and not draining",
        |a| i64::from(nats_connected(a) && !a.shutdown.is_cancelled()),
    ),
    (
        "ziraai_gateway_max_connections",
        "Sockets this process accepts at most",
        |a| i64::try_from(a.cfg.max_connections).unwrap_or(i64::MAX),
    ),
];

fn nats_connected(a: &AppState) -> bool {
    a.client.connection_state() == async_nats::connection::State::Connected
}

/// Registers the observable instruments over `app` (held weakly: a dropped app
/// observes nothing). The callbacks live as long as the meter provider.
pub(crate) fn register(app: &Arc<AppState>) {
    let meter = meter();
    let acks: (&str, &str, super::Read) =
        ("ziraai_gateway_acks", "Acks received from devices", |a| {
            a.stats.metrics.acks.get()
        });
    for (name, help, read) in COUNTERS.into_iter().chain([acks]) {
        let app = Arc::downgrade(app);
        meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |o| {
                if let Some(a) = app.upgrade() {
                    o.observe(read(&a), &[]);
                }
            })
            .build();
    }
    for (name, help, read) in GAUGES {
        let app = Arc::downgrade(app);
        meter
            .i64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |o| {
                if let Some(a) = app.upgrade() {
                    o.observe(read(&a), &[]);
                }
            })
            .build();
    }
    let stats = Arc::downgrade(&app.stats);
    labelled_counter(
        &meter,
        ("ziraai_gateway_events_dropped", "Events never delivered"),
        stats.clone(),
        |s| {
            vec![
                ("reason", "malformed", get(&s.malformed)),
                ("reason", "forged", get(&s.forged)),
            ]
        },
    );
    labelled_counter(
        &meter,
        (
            "ziraai_gateway_events",
            "Events written to sockets, by path",
        ),
        stats.clone(),
        |s| {
            Path::ALL
                .iter()
                .map(|p| ("path", p.label(), s.metrics.events(*p)))
                .collect()
        },
    );
    labelled_counter(
        &meter,
        ("ziraai_gateway_cursor_writes", "Device cursor writes"),
        stats.clone(),
        |s| {
            vec![
                ("result", "ok", s.metrics.cursor_ok.get()),
                ("result", "error", s.metrics.cursor_error.get()),
            ]
        },
    );
    meter
        .i64_observable_gauge("ziraai_gateway_connections")
        .with_description("Open sockets by protocol")
        .with_callback(move |o| {
            if let Some(s) = stats.upgrade() {
                for e in PROTOCOLS {
                    let open = s.metrics.connections(e).get();
                    o.observe(open, &[KeyValue::new("protocol", protocol_label(e))]);
                }
            }
        })
        .build();
}

/// One counter family with one label, read from `Stats` at each export.
fn labelled_counter(
    meter: &Meter,
    (name, help): (&'static str, &'static str),
    stats: Weak<Stats>,
    read: fn(&Stats) -> Vec<(&'static str, &'static str, u64)>,
) {
    meter
        .u64_observable_counter(name)
        .with_description(help)
        .with_callback(move |o| {
            if let Some(s) = stats.upgrade() {
                for (key, value, n) in read(&s) {
                    o.observe(n, &[KeyValue::new(key, value)]);
                }
            }
        })
        .build();
}
