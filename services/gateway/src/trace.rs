//! The gateway's spans: `notify.deliver` (one per event per gateway, parented to the
//! publisher's `traceparent` carried by the stored message), `notify.replay` (resume and
//! gap fills) and `notify.ack` (a device's ack, parented to and linked with the
//! deliveries it covers). Socket writes are attributes (`sockets`, `protocols`), never a
//! span per socket. No token ever goes into an attribute.
//!
//! Without an exporter (no OTLP endpoint: "tracing off") none of these spans is opened
//! and no `traceparent` is read: they would only be built and thrown away, on the path
//! every delivery and ack takes.

use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Links kept on one `notify.replay` or `notify.ack` span.
pub(crate) const MAX_LINKS: usize = 32;

/// Whether spans go anywhere (see the module header).
fn on() -> bool {
    ziraai_common::telemetry::spans_exported()
}

/// An event's trace: where it was published from and, once fanned out here, its
/// delivery span.
#[derive(Debug, Default)]
pub struct EventTrace {
    /// The publisher's context (`traceparent` of the stored message); empty without.
    pub parent: opentelemetry::Context,
    /// When it was published (`Event::published`: the server's `Nats-Time-Stamp`).
    pub published: Option<SystemTime>,
    /// The `notify.deliver` span's context, set by the hub's fan-out.
    pub delivery: OnceLock<SpanContext>,
    /// The `notify.deliver` span itself: it ends when the event is dropped, i.e. after
    /// the last socket wrote it (or dropped it).
    pub span: OnceLock<tracing::Span>,
    /// The longest publish → write delay so far, recorded on the span once, when the
    /// event is dropped (an attribute recorded at every write would be exported once
    /// per write).
    pub max_delay_ms: std::sync::atomic::AtomicU64,
}

impl Drop for EventTrace {
    fn drop(&mut self) {
        if let Some(span) = self.span.get() {
            let delay = self.max_delay_ms.load(std::sync::atomic::Ordering::Relaxed);
            span.record("delivery.delay_ms", delay);
        }
    }
}

/// `notify.replay` of one catch-up: started at its first replayed event; its `count`
/// is recorded once, when the catch-up ends however it ends (recorded per event, it
/// would be exported once per event).
#[derive(Default)]
pub(crate) struct ReplayTrace {
    pub(crate) span: Option<tracing::Span>,
    pub(crate) count: u64,
}

impl Drop for ReplayTrace {
    fn drop(&mut self) {
        if let Some(span) = &self.span {
            span.record("count", self.count);
        }
    }
}

impl EventTrace {
    /// From a stored message's headers and its publish time (see `Event::published`).
    pub fn from_headers(
        headers: Option<&async_nats::HeaderMap>,
        published: Option<SystemTime>,
    ) -> Self {
        Self {
            parent: headers
                .filter(|h| on() && h.get("traceparent").is_some())
                .map(ziraai_common::telemetry::extract)
                .unwrap_or_default(),
            published,
            delivery: OnceLock::new(),
            span: OnceLock::new(),
            max_delay_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The context an ack or a replay refers to: the delivery here, else the publish.
    pub fn context(&self) -> Option<SpanContext> {
        let sc = match self.delivery.get() {
            Some(sc) => sc.clone(),
            None => self.parent.span().span_context().clone(),
        };
        sc.is_valid().then_some(sc)
    }

    /// A socket wrote the event: `delivery.delay_ms` becomes the slowest socket's
    /// publish → write delay (recorded once, when the event is dropped).
    pub fn written(&self) {
        self.max_delay_ms
            .fetch_max(self.delay_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Milliseconds from the server's store time to now (0 when unknown or skewed).
    pub fn delay_ms(&self) -> u64 {
        self.published
            .and_then(|p| SystemTime::now().duration_since(p).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Starts `notify.deliver` for one event of `user` and records its context in the
/// event (before any socket can ack it). `sockets` and `protocols` are recorded by the
/// caller once the fan-out is done; `delivery.delay_ms` starts as publish → fan-out and
/// is updated at each socket write ([`EventTrace::written`]).
pub(crate) fn deliver_span(user: &str, seq: u64, kind: &str, trace: &EventTrace) -> tracing::Span {
    if !on() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "notify.deliver",
        otel.kind = "consumer",
        user.id = user,
        event.seq = seq,
        event.kind = kind,
        messaging.system = "nats",
        sockets = tracing::field::Empty,
        protocols = tracing::field::Empty,
        delivery.delay_ms = tracing::field::Empty,
    );
    // Publish → fan-out, until a socket writes it.
    trace
        .max_delay_ms
        .fetch_max(trace.delay_ms(), std::sync::atomic::Ordering::Relaxed);
    if trace.parent.span().span_context().is_valid() {
        let _ = span.set_parent(trace.parent.clone());
    }
    let sc = span.context().span().span_context().clone();
    if sc.is_valid() {
        let _ = trace.delivery.set(sc);
    }
    span
}

/// Starts `notify.replay` (`reason`: `resume` or `gap_fill`) under `parent` when given.
pub(crate) fn replay_span(
    from_seq: u64,
    reason: &'static str,
    parent: Option<&SpanContext>,
) -> tracing::Span {
    if !on() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "notify.replay",
        from_seq,
        count = tracing::field::Empty,
        replay.reason = reason,
    );
    if let Some(p) = parent {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(p.clone()));
    }
    span
}

/// Records `notify.ack` of `device` up to `seq`, a child of the last delivery it covers
/// and linked to each (at most [`MAX_LINKS`]).
pub(crate) fn ack_span(device: &str, seq: u64, deliveries: &[SpanContext]) {
    if !on() {
        return;
    }
    let span = tracing::info_span!("notify.ack", device.id = device, event.seq = seq);
    if let Some(last) = deliveries.last() {
        let _ =
            span.set_parent(opentelemetry::Context::new().with_remote_span_context(last.clone()));
    }
    for d in deliveries.iter().rev().take(MAX_LINKS) {
        span.add_link(d.clone());
    }
}
