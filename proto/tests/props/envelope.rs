//! The envelope in both payload encodings, as producers publish it and gateways decode
//! it, and the analysis payloads the worker puts in it.

use proptest::prelude::*;
use serde_json::Value;
use time::OffsetDateTime;
use ziraai_proto::analysis::{AnalysisError, AnalysisId, AnalysisOutcome};
use ziraai_proto::envelope::{is_valid_kind, rfc3339};
use ziraai_proto::{Envelope, EventFrame, PayloadEncoding, ServerFrame, UserId};

use crate::mangle::{apply, damages};
use crate::strategy::{any_text, object, object_with_keys, value};

const ENCODINGS: [PayloadEncoding; 2] = [PayloadEncoding::Json, PayloadEncoding::MsgPack];

fn kind() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,12}(\\.[a-z][a-z0-9_]{0,12}){0,4}"
}

fn timestamp() -> impl Strategy<Value = String> {
    // Years 1..=9999, the range RFC 3339 can write.
    (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000).prop_map(|(s, ns)| {
        let at = OffsetDateTime::from_unix_timestamp(s).expect("in range")
            + time::Duration::nanoseconds(i64::from(ns));
        rfc3339(at)
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (kind(), object(), prop::option::of(timestamp())).prop_map(|(kind, data, occurred_at)| {
        Envelope {
            kind,
            data,
            occurred_at,
        }
    })
}

fn encoding() -> impl Strategy<Value = PayloadEncoding> {
    prop::sample::select(ENCODINGS.to_vec())
}

/// What a gateway does with a decoded envelope: one event frame, sent to native clients
/// in both encodings. Every client must read back what the producer published.
fn assert_deliverable(env: &Envelope) {
    let frame = ServerFrame::Event(EventFrame {
        seq: 1,
        id: "e".into(),
        kind: env.kind.clone(),
        data: env.data.clone(),
        occurred_at: env.occurred_at.clone(),
    });
    let json: ServerFrame = serde_json::from_str(&frame.to_json()).expect("JSON client decodes");
    assert_eq!(json, frame);
    let packed: ServerFrame =
        rmp_serde::from_slice(&frame.to_msgpack()).expect("MessagePack client decodes");
    assert_eq!(packed, frame);
}

proptest! {
    #[test]
    fn any_bytes_decode_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        enc in encoding(),
    ) {
        if let Ok(env) = Envelope::decode(&bytes, enc) {
            prop_assert!(is_valid_kind(&env.kind));
            assert_deliverable(&env);
        }
    }

    #[test]
    fn valid_envelopes_round_trip(env in envelope(), enc in encoding()) {
        prop_assert!(env.validate().is_ok());
        let back = Envelope::decode(&env.encode(enc), enc).expect("decodes");
        prop_assert_eq!(&back, &env);
        assert_deliverable(&back);
    }

    #[test]
    fn plausible_objects_decode_or_are_refused(
        v in object_with_keys(&["kind", "data", "occurredAt"]),
        kind in prop::option::of(prop_oneof![kind().prop_map(Value::String), any_text().prop_map(Value::String), value()]),
        at in prop::option::of(prop_oneof![timestamp(), any_text()]),
    ) {
        let mut v = v;
        if let Value::Object(m) = &mut v {
            if let Some(kind) = kind {
                m.insert("kind".into(), kind);
            }
            if let Some(at) = at {
                m.insert("occurredAt".into(), Value::String(at));
            }
        }
        for (enc, body) in [
            (PayloadEncoding::Json, serde_json::to_vec(&v).expect("encode")),
            (PayloadEncoding::MsgPack, rmp_serde::to_vec_named(&v).expect("encode")),
        ] {
            if let Ok(env) = Envelope::decode(&body, enc) {
                prop_assert!(is_valid_kind(&env.kind));
                prop_assert_eq!(Some(&Value::String(env.kind.clone())), v.get("kind"));
                assert_deliverable(&env);
            }
        }
    }

    #[test]
    fn damaged_envelopes_never_panic(env in envelope(), enc in encoding(), dmg in damages()) {
        if let Ok(back) = Envelope::decode(&apply(&env.encode(enc), &dmg), enc) {
            prop_assert!(back.validate().is_ok());
            assert_deliverable(&back);
        }
    }

    #[test]
    fn content_types_never_panic(ct in prop::option::of(any_text())) {
        let _ = PayloadEncoding::from_content_type(ct.as_deref());
    }

    #[test]
    fn analysis_outcomes_make_valid_envelopes(
        number in any::<i64>(),
        text in prop::option::of(any_text()),
        user in "[A-Za-z0-9_-]{1,64}",
        result in value(),
        failed in prop::option::of((any_text(), any_text())),
    ) {
        let id = text.map_or(AnalysisId::Number(number), AnalysisId::Text);
        let user = UserId::parse(&user).expect("valid by construction");
        let outcome = match failed {
            None => AnalysisOutcome::completed(id.clone(), user.clone(), result),
            Some((code, message)) => {
                AnalysisOutcome::failed(id.clone(), user.clone(), AnalysisError { code, message })
            }
        };
        let env = outcome.to_envelope();
        for enc in ENCODINGS {
            let back = Envelope::decode(&env.encode(enc), enc).expect("decodes");
            prop_assert_eq!(&back, &env);
            prop_assert_eq!(back.data.get("userId"), Some(&Value::String(user.to_string())));
            let id_back: AnalysisId =
                serde_json::from_value(back.data["analysisId"].clone()).expect("analysis id");
            prop_assert_eq!(&id_back, &id);
        }
        prop_assert_eq!(outcome.event_id(), format!("analysis-{id}"));
    }
}

/// A MessagePack envelope whose `data.x` holds `depth` nested arrays.
fn deep_msgpack_envelope(depth: usize) -> Vec<u8> {
    let mut body = vec![0x82, 0xa4];
    body.extend_from_slice(b"kind");
    body.extend_from_slice(&[0xa1, b'a', 0xa4]);
    body.extend_from_slice(b"data");
    body.extend_from_slice(&[0x81, 0xa1, b'x']);
    body.extend(std::iter::repeat_n(0x91, depth));
    body.push(0xc0);
    body
}

#[test]
fn the_deepest_msgpack_envelope_is_deliverable_to_json_clients() {
    // The envelope map and `data` take two levels of the limit, as in an event frame.
    let deepest = ziraai_proto::msgpack::MAX_DEPTH - 3;
    let env = Envelope::decode(&deep_msgpack_envelope(deepest), PayloadEncoding::MsgPack)
        .expect("within the limit");
    assert_deliverable(&env);
    let text = String::from_utf8(env.encode(PayloadEncoding::Json)).expect("UTF-8");
    assert_eq!(
        Envelope::decode(text.as_bytes(), PayloadEncoding::Json).ok(),
        Some(env)
    );
    for depth in [deepest + 1, 1_000, 100_000] {
        assert!(
            Envelope::decode(&deep_msgpack_envelope(depth), PayloadEncoding::MsgPack).is_err(),
            "{depth}"
        );
    }
}
