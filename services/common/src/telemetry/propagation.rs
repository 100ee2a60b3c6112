//! Trace context in NATS headers: W3C `traceparent` / `tracestate`, written and read
//! through the global propagator (W3C TraceContext, installed by telemetry set-up).
//!
//! The worker injects the context of its publish span into every event; a gateway
//! extracts it to parent its delivery spans; a producer in another language that sets
//! `traceparent` itself gets the gateway's spans in its own trace.

use async_nats::HeaderMap;
use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes `span`'s trace context into `headers` (`traceparent`, and `tracestate` when
/// it is not empty). Writes nothing when `span` carries no valid trace context (no
/// OpenTelemetry layer, or a span that is disabled).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let cx = span.context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut HeaderInjector(headers));
    });
}

/// Reads the trace context carried by `headers`; an empty context (no parent) when
/// they carry none or an invalid one.
pub fn extract(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator writes `tracestate` even when empty: a header for nothing.
        if !value.is_empty() {
            self.0.insert(key, value.as_str());
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn inject_then_extract_gives_the_same_trace() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("notify.publish");
            let sent = span.context().span().span_context().clone();
            assert!(sent.is_valid());
            let mut headers = HeaderMap::new();
            inject(&span, &mut headers);
            let traceparent = headers.get("traceparent").map(|v| v.as_str().to_owned());
            let expected = format!("00-{}-{}-01", sent.trace_id(), sent.span_id());
            assert_eq!(traceparent.as_deref(), Some(expected.as_str()));
            assert!(headers.get("tracestate").is_none(), "no empty tracestate");

            let got = extract(&headers);
            let got = got.span().span_context().clone();
            assert!(got.is_remote());
            assert_eq!(got.trace_id(), sent.trace_id());
            assert_eq!(got.span_id(), sent.span_id());
            assert!(got.is_sampled());

            // A child parented to the extracted context continues the trace.
            let child = tracing::info_span!("notify.deliver");
            child.set_parent(extract(&headers)).expect("parent set");
            assert_eq!(
                child.context().span().span_context().trace_id(),
                sent.trace_id()
            );

            // A producer's `tracestate` travels on with its trace.
            let mut theirs = HeaderMap::new();
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            theirs.insert("traceparent", parent);
            theirs.insert("tracestate", "vendor=abc");
            let ours = tracing::info_span!("job");
            ours.set_parent(extract(&theirs)).expect("parent set");
            let mut out = HeaderMap::new();
            inject(&ours, &mut out);
            let out_parent = out.get("traceparent").map(|v| v.as_str().to_owned());
            assert!(
                out_parent.as_deref().is_some_and(|p| p
                    .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
                    && p != parent),
                "{out_parent:?}"
            );
            assert_eq!(
                out.get("tracestate").map(|v| v.as_str()),
                Some("vendor=abc")
            );
        });
    }

    #[test]
    fn no_context_in_no_context_out() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        // No OpenTelemetry layer: nothing to write.
        let mut headers = HeaderMap::new();
        inject(&tracing::Span::none(), &mut headers);
        assert!(headers.get("traceparent").is_none());
        // A malformed traceparent is no parent.
        headers.insert("traceparent", "00-not-a-trace-01");
        assert!(!extract(&headers).span().span_context().is_valid());
        assert!(!extract(&HeaderMap::new()).span().span_context().is_valid());
    }
}
