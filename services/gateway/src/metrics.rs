//! The gateway's metrics: the instruments the delivery path records into
//! ([`Instruments`], reached through [`Stats`]), and `/metrics`, the gateway's own
//! `prometheus-client` [`Registry`] in Prometheus text.
//!
//! The latency histogram and the new counters are `prometheus-client` instruments
//! (atomics behind an `Arc`): a socket resolves its protocol's histogram child once at
//! start, so a write records with no lookup and no allocation. Counters the gateway
//! already kept as atomics for `/health` (gaps, malformed, forged, evictions...) are
//! read by a [`Collector`] at scrape time rather than counted twice. Names are a
//! contract (alert rules and the dashboard in `infra/` use them; README lists them).
//! The same metrics are pushed by OTLP when an endpoint is set ([`otlp`]).

mod otlp;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use ziraai_common::metrics::{Label, delivery_histogram, encode_counter, encode_counters};
use ziraai_common::metrics::{encode_gauge, encode_text};
use ziraai_proto::Protocol;
use ziraai_proto::signalr::HubProtocol;

use crate::event::Encoding;

/// Every value of the `protocol` label, in [`Encoding`] order.
const PROTOCOLS: [Encoding; 4] = [
    Encoding::Native(Protocol::Json),
    Encoding::Native(Protocol::MsgPack),
    Encoding::Hub(HubProtocol::Json),
    Encoding::Hub(HubProtocol::MessagePack),
];

/// The `protocol` of a socket: the metrics' label, the spans' `protocols` and the
/// connection log lines.
pub fn protocol_label(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Native(Protocol::Json) => "native-json",
        Encoding::Native(Protocol::MsgPack) => "native-msgpack",
        Encoding::Hub(HubProtocol::Json) => "signalr-json",
        Encoding::Hub(HubProtocol::MessagePack) => "signalr-msgpack",
    }
}

/// How an event reached a socket (`ziraai_gateway_events_total{path}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Queued by the user's channel as it arrived.
    Live,
    /// Read from the stream when the socket opened (resume after a cursor or `since`).
    Replay,
    /// Read from the stream while live: a gap, a lagging socket, a NATS reconnect.
    GapFill,
}

impl Path {
    const ALL: [Path; 3] = [Path::Live, Path::Replay, Path::GapFill];

    fn label(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Replay => "replay",
            Self::GapFill => "gap_fill",
        }
    }
}

type HistogramFamily = Family<Label, Histogram, fn() -> Histogram>;

pub(crate) use otlp::register as register_otlp;

/// `ziraai_delivery_latency_seconds` of one protocol, for `/metrics` and OTLP alike:
/// resolved once per socket, then [`Latency::observe`] per write (no allocation).
#[derive(Debug, Clone)]
pub struct Latency {
    prometheus: Histogram,
    otel: opentelemetry::metrics::Histogram<f64>,
    protocol: [KeyValue; 1],
}

impl Latency {
    /// One write `secs` after the event's publish.
    pub fn observe(&self, secs: f64) {
        self.prometheus.observe(secs);
        self.otel.record(secs, &self.protocol);
    }
}

/// The instruments of the delivery path; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct Instruments {
    latency: HistogramFamily,
    otel_latency: opentelemetry::metrics::Histogram<f64>,
    connections: Family<Label, Gauge>,
    events: Family<Label, Counter>,
    /// `events` children by [`Path`], resolved once.
    by_path: [Counter; 3],
    acks: Counter,
    cursor_writes: Family<Label, Counter>,
    cursor_ok: Counter,
    cursor_error: Counter,
}

impl Default for Instruments {
    fn default() -> Self {
        let latency = HistogramFamily::new_with_constructor(delivery_histogram);
        let connections = Family::<Label, Gauge>::default();
        for e in PROTOCOLS {
            // Every label value is exported from the start (0), not at its first use.
            latency.get_or_create_owned(&[("protocol", protocol_label(e))]);
            connections.get_or_create_owned(&[("protocol", protocol_label(e))]);
        }
        let events = Family::<Label, Counter>::default();
        let by_path = Path::ALL.map(|p| events.get_or_create_owned(&[("path", p.label())]));
        let cursor_writes = Family::<Label, Counter>::default();
        let cursor_ok = cursor_writes.get_or_create_owned(&[("result", "ok")]);
        let cursor_error = cursor_writes.get_or_create_owned(&[("result", "error")]);
        Self {
            latency,
            otel_latency: otlp::latency_histogram(),
            connections,
            events,
            by_path,
            acks: Counter::default(),
            cursor_writes,
            cursor_ok,
            cursor_error,
        }
    }
}

impl Instruments {
    /// The latency histogram of one protocol: resolved once per socket, then
    /// `observe` per write.
    pub fn latency(&self, encoding: Encoding) -> Latency {
        let protocol = protocol_label(encoding);
        Latency {
            prometheus: self.latency.get_or_create_owned(&[("protocol", protocol)]),
            otel: self.otel_latency.clone(),
            protocol: [KeyValue::new("protocol", protocol)],
        }
    }

    /// Open sockets of one protocol (incremented while a socket is served).
    pub fn connections(&self, encoding: Encoding) -> Gauge {
        self.connections
            .get_or_create_owned(&[("protocol", protocol_label(encoding))])
    }

    /// One event written to a socket by `path`.
    pub fn event(&self, path: Path) {
        let i = Path::ALL.iter().position(|p| *p == path).unwrap_or(0);
        self.by_path[i].inc();
    }

    /// One ack received from a device.
    pub fn ack(&self) {
        self.acks.inc();
    }

    /// One cursor write, saved or failed.
    pub fn cursor_write(&self, ok: bool) {
        if ok {
            &self.cursor_ok
        } else {
            &self.cursor_error
        }
        .inc();
    }

    /// Events written by `path` so far (tests).
    pub fn events(&self, path: Path) -> u64 {
        let i = Path::ALL.iter().position(|p| *p == path).unwrap_or(0);
        self.by_path[i].get()
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "ziraai_delivery_latency_seconds",
            "Time from an event's publish (the stream's timestamp, else occurredAt) to its write on a socket, live and gap-fill writes",
            self.latency.clone(),
        );
        r.register(
            "ziraai_gateway_connections",
            "Open sockets by protocol",
            self.connections.clone(),
        );
        r.register(
            "ziraai_gateway_events",
            "Events written to sockets, by path (live, replay on resume, gap_fill while live)",
            self.events.clone(),
        );
        r.register(
            "ziraai_gateway_acks",
            "Acks received from devices (native ack frames, SignalR Ack invocations, polling acks excluded)",
            self.acks.clone(),
        );
        r.register(
            "ziraai_gateway_cursor_writes",
            "Device cursor writes to the CURSORS bucket, by result (ok, error)",
            self.cursor_writes.clone(),
        );
    }
}

/// What `/metrics` reads at scrape time besides the instruments.
pub(crate) struct Scrape {
    pub(crate) app: Arc<crate::AppState>,
    /// `/health/ready`'s verdict (async: read before the scrape is encoded).
    pub(crate) ready: bool,
}

/// A value read from the gateway at scrape (or export) time.
pub(crate) type Read = fn(&crate::AppState) -> u64;

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The unlabelled counters kept as atomics elsewhere, one table for both exporters
/// (`/metrics` reads them at scrape, OTLP observes them at export): name without
/// `_total`, help, value.
pub(crate) const COUNTERS: [(&str, &str, Read); 7] = [
    (
        "ziraai_gateway_gaps_detected",
        "Gaps detected: a live event revealing missed ones, read from the stream first.",
        |a| get(&a.stats.gaps),
    ),
    (
        "ziraai_gateway_slow_consumers",
        "Sockets closed for not keeping up (queue full or write timed out).",
        |a| get(&a.stats.slow_consumers),
    ),
    (
        "ziraai_gateway_tracking_dropped",
        "Delivery-tracking records dropped (queue full).",
        |a| get(&a.stats.tracking_dropped),
    ),
    (
        "ziraai_gateway_connection_limit_evictions",
        "Sockets closed here because their user opened more than the per-user limit.",
        |a| get(&a.conn_limit.evictions),
    ),
    (
        "ziraai_gateway_connection_limit_refusals",
        "Handshakes refused with 429 too_many_connections.",
        |a| get(&a.conn_limit.refusals),
    ),
    (
        "ziraai_gateway_rate_limited",
        "Sockets closed for sending frames faster than ZIRAAI_GATEWAY_CLIENT_FRAME_RATE.",
        |a| get(&a.stats.rate_limited),
    ),
    (
        "ziraai_gateway_full",
        "Socket handshakes refused with 503 gateway_full (ZIRAAI_GATEWAY_MAX_CONNECTIONS).",
        |a| get(&a.stats.gateway_full),
    ),
];

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let app = &self.app;
        let st = &app.stats;
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        encode_gauge(
            &mut e,
            (
                "ziraai_gateway_users",
                "Users with a live subscription on this gateway.",
            ),
            gauge(app.hub.users()),
        )?;
        encode_gauge(
            &mut e,
            (
                "ziraai_gateway_nats_connected",
                "1 while connected to NATS.",
            ),
            i64::from(app.client.connection_state() == async_nats::connection::State::Connected),
        )?;
        encode_gauge(
            &mut e,
            ("ziraai_gateway_ready", "1 while /health/ready answers 200."),
            i64::from(self.ready),
        )?;
        encode_gauge(
            &mut e,
            (
                "ziraai_gateway_max_connections",
                "Sockets this process accepts at most.",
            ),
            gauge(app.cfg.max_connections),
        )?;
        encode_counters(
            &mut e,
            (
                "ziraai_gateway_events_dropped",
                "Events never delivered, by reason: malformed (not a valid envelope), forged (a live message matching no stored event).",
            ),
            "reason",
            &[
                ("malformed", get(&st.malformed)),
                ("forged", get(&st.forged)),
            ],
        )?;
        for (name, help, read) in COUNTERS {
            encode_counter(&mut e, (name, help), read(app))?;
        }
        ziraai_common::metrics::encode_span_counters(&mut e)
    }
}

/// The gateway's registry for one scrape: the shared instruments and the values read
/// now, in Prometheus text.
pub(crate) fn render(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    scrape.app.stats.metrics.register(&mut registry);
    registry.register_collector(Box::new(scrape));
    encode_text(&registry)
}
