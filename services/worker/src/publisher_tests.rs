//! What [`CheckedEvent::new`] refuses, the header size the server counts, and the trace
//! headers an event carries when it fits.

use serde_json::{Map, Value, json};
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};

use super::*;

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn envelope(kind: &str, data: Value) -> Envelope {
    Envelope::now(kind, object(data))
}

#[test]
fn a_valid_event_passes_in_both_encodings() {
    let outcome = AnalysisOutcome::completed(
        AnalysisId::from_arg("a-1"),
        UserId::parse("demo-farmer").expect("valid"),
        json!({"disease": "none"}),
    );
    for enc in [PayloadEncoding::Json, PayloadEncoding::MsgPack] {
        let e = CheckedEvent::new(&outcome.to_envelope(), &outcome.event_id(), enc)
            .expect("valid event");
        assert_eq!(e.event_id(), "analysis-a-1");
        assert!(e.size() > e.body.len(), "headers count too");
    }
}

#[test]
fn what_a_gateway_could_not_decode_is_refused() {
    let bad_kind = CheckedEvent::new(
        &envelope("Analysis.Done", json!({})),
        "e1",
        PayloadEncoding::Json,
    );
    assert!(
        matches!(
            bad_kind,
            Err(InvalidEvent::Envelope(EnvelopeError::BadKind(_)))
        ),
        "{bad_kind:?}"
    );
    let mut late = envelope("a.b", json!({}));
    late.occurred_at = Some("yesterday".into());
    let e = CheckedEvent::new(&late, "e1", PayloadEncoding::MsgPack);
    assert!(
        matches!(
            e,
            Err(InvalidEvent::Envelope(EnvelopeError::BadOccurredAt(_)))
        ),
        "{e:?}"
    );
    for id in ["", "a\r\nb", "tab\there"] {
        let e = CheckedEvent::new(&envelope("a.b", json!({})), id, PayloadEncoding::Json);
        assert!(
            matches!(e, Err(InvalidEvent::BadEventId(_))),
            "{id:?}: {e:?}"
        );
    }
}

#[test]
fn the_size_limit_counts_body_and_headers() {
    // Find the largest `pad` that fits, then check one more byte is refused.
    let event = |pad: usize| {
        CheckedEvent::new(
            &Envelope {
                kind: "a.b".into(),
                data: object(json!({"pad": "x".repeat(pad)})),
                occurred_at: None,
            },
            "event-1",
            PayloadEncoding::Json,
        )
    };
    let fixed = event(0).expect("small").size();
    let fits = NOTIFY_MAX_MESSAGE - fixed;
    assert_eq!(
        event(fits).expect("at the limit").size(),
        NOTIFY_MAX_MESSAGE
    );
    match event(fits + 1) {
        Err(InvalidEvent::TooLarge { size, max }) => {
            assert_eq!((size, max), (NOTIFY_MAX_MESSAGE + 1, NOTIFY_MAX_MESSAGE));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_length_matches_the_wire_format() {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", "abc");
    // "NATS/1.0\r\n" + "Nats-Msg-Id: abc\r\n" + "\r\n"
    assert_eq!(header_len(&h), 10 + 18 + 2);
}

#[test]
fn only_transient_kinds_are_retried() {
    assert!(is_transient(PublishErrorKind::TimedOut));
    // "no responders" surfaces as StreamNotFound while a stream has no leader.
    assert!(is_transient(PublishErrorKind::StreamNotFound));
    assert!(!is_transient(PublishErrorKind::MaxPayloadExceeded));
    assert!(!is_transient(PublishErrorKind::WrongLastSequence));
}

#[test]
fn trace_headers_are_left_out_when_the_event_would_not_fit() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let subscriber = tracing_subscriber::registry().with(layer);
    // No timestamp: its length varies, and the sizes here must be exact.
    let event = |pad: usize| {
        let envelope = Envelope {
            kind: "a.b".into(),
            data: object(json!({"pad": "x".repeat(pad)})),
            occurred_at: None,
        };
        CheckedEvent::new(&envelope, "event-1", PayloadEncoding::Json)
            .expect("fits without trace headers")
    };
    let fits = NOTIFY_MAX_MESSAGE - event(0).size();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("notify.publish");
        let small = with_trace_context(&span, &event(0));
        let parent = small.get(TRACEPARENT).map(|v| v.as_str().len());
        assert_eq!(parent, Some(55), "00-<32 hex>-<16 hex>-01");
        // Room for the traceparent line ("traceparent: " + 55 + CRLF) but not more.
        let roomy = event(fits - 70);
        let with = with_trace_context(&span, &roomy);
        assert!(with.get(TRACEPARENT).is_some());
        assert_eq!(roomy.body.len() + header_len(&with), NOTIFY_MAX_MESSAGE);
        let tight = event(fits - 69);
        assert!(with_trace_context(&span, &tight).get(TRACEPARENT).is_none());
        let full = event(fits);
        let headers = with_trace_context(&span, &full);
        assert!(headers.get(TRACEPARENT).is_none());
        assert_eq!(full.body.len() + header_len(&headers), NOTIFY_MAX_MESSAGE);
    });
}
