//! W3C trace context (`traceparent` / `tracestate`) in NATS headers: the worker injects
//! the publish span's context; the gateway extracts it to parent its delivery span. A
//! producer in another language sets `traceparent` itself and gets the gateway's spans
//! in its trace.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes `span`'s context as `traceparent` (+ `tracestate`) into `headers`. Nothing is
/// written when the span has no valid context (telemetry off, or not sampled into any trace).
pub fn inject(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    inject_context(&span.context(), headers);
}

/// As [`inject`], from an OpenTelemetry context.
pub fn inject_context(cx: &Context, headers: &mut async_nats::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Reads `traceparent` / `tracestate` from `headers`; an empty context when absent or
/// malformed (the span then starts a new trace).
pub fn extract(headers: &async_nats::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    #[test]
    fn a_producers_traceparent_round_trips() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let cx = extract(&headers);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = async_nats::HeaderMap::new();
        inject_context(&cx, &mut out);
        assert_eq!(
            out.get("traceparent").map(|v| v.as_str()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn no_or_bad_header_is_an_empty_context() {
        let mut headers = async_nats::HeaderMap::new();
        assert!(!extract(&headers).span().span_context().is_valid());
        headers.insert("traceparent", "00-zz-00f067aa0ba902b7-01");
        assert!(!extract(&headers).span().span_context().is_valid());
        let mut out = async_nats::HeaderMap::new();
        inject(&tracing::Span::none(), &mut out);
        assert!(out.get("traceparent").is_none());
    }
}
