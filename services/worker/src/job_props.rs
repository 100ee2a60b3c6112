//! Property tests of the job decoder: any bytes are a job or a poison reason, never a
//! panic; valid jobs round-trip; every accepted job can be published (its user id is
//! one subject token, its event id a usable `Nats-Msg-Id`).
//!
//! `make test` runs proptest's default 256 cases per property, `make fuzz` many more
//! (`PROPTEST_CASES`).

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};
use ziraai_proto::{PayloadEncoding, UserId};

use super::{Job, MAX_JOB_ID_LEN, Poison};
use crate::publisher::CheckedEvent;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,16}",
        "[ -~]{250,260}",
        "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f} a-z.*>]{0,8}",
        "[A-Za-z0-9_-]{1,70}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A job object with each known field missing, random, or plausible.
fn plausible_job() -> impl Strategy<Value = Map<String, Value>> {
    let field = |plausible: BoxedStrategy<Value>| prop::option::of(prop_oneof![plausible, value()]);
    (
        prop::collection::btree_map(text(), value(), 0..4),
        field(text().prop_map(Value::String).boxed()),
        field(
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                text().prop_map(Value::String)
            ]
            .boxed(),
        ),
        field(
            prop_oneof![
                "[A-Za-z0-9_-]{1,64}".prop_map(Value::String),
                any::<i64>().prop_map(Value::from)
            ]
            .boxed(),
        ),
    )
        .prop_map(|(extra, job_id, analysis_id, user_id)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (key, v) in [
                ("jobId", job_id),
                ("analysisId", analysis_id),
                ("userId", user_id),
            ] {
                if let Some(v) = v {
                    m.insert(key.into(), v);
                }
            }
            m
        })
}

/// The documented rules, written independently of the decoder.
fn expected(m: &Map<String, Value>) -> Result<(), Poison> {
    match m.get("jobId") {
        Some(Value::String(s)) if s.is_empty() => return Err(Poison::NoJobId),
        Some(Value::String(s)) if s.len() > MAX_JOB_ID_LEN || s.chars().any(|c| c.is_control()) => {
            return Err(Poison::BadJobId(s.chars().take(64).collect()));
        }
        Some(Value::String(_)) => {}
        _ => return Err(Poison::NoJobId),
    }
    let user = match m.get("userId") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(Poison::NoUserId),
    };
    if let Err(e) = UserId::parse(&user) {
        return Err(Poison::BadUserId(e.to_string()));
    }
    match m.get("analysisId") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Number(n)) if n.is_i64() => Ok(()),
        _ => Err(Poison::NoAnalysisId),
    }
}

/// What the runner does with an accepted job: its outcome must pass the publisher's
/// checks, or the job would be retried for ever.
fn assert_publishable(job: &Job) {
    let outcome =
        AnalysisOutcome::completed(job.analysis_id.clone(), job.user_id.clone(), json!({}));
    if let Err(e) = CheckedEvent::new(
        &outcome.to_envelope(),
        &job.event_id(),
        PayloadEncoding::Json,
    ) {
        panic!("accepted job {:?} cannot be published: {e}", job.job_id);
    }
    assert!(!job.user_id.as_str().contains(['.', '*', '>', ' ']));
}

proptest! {
    #[test]
    fn any_bytes_are_a_job_or_poison(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(job) = Job::parse(&bytes) {
            assert_publishable(&job);
        }
    }

    #[test]
    fn plausible_jobs_follow_the_documented_rules(m in plausible_job()) {
        let bytes = serde_json::to_vec(&m).expect("encode");
        let parsed = Job::parse(&bytes);
        match (&parsed, expected(&m)) {
            (Ok(job), Ok(())) => {
                assert_publishable(job);
                prop_assert_eq!(&job.body, &m);
                prop_assert_eq!(Some(&Value::String(job.job_id.clone())), m.get("jobId"));
            }
            (Err(got), Err(want)) => prop_assert_eq!(got, &want),
            (got, want) => prop_assert!(false, "{:?}: got {:?}, documented {:?}", m, got, want),
        }
    }

    #[test]
    fn valid_jobs_round_trip(
        job_id in "[ -~]{1,40}",
        analysis in prop_oneof![any::<i64>().prop_map(AnalysisId::Number), text().prop_map(AnalysisId::Text)],
        user in "[A-Za-z0-9_-]{1,64}",
        extra in prop::collection::btree_map("[a-z]{1,8}", value(), 0..4),
    ) {
        let mut body: Map<String, Value> = extra.into_iter().collect();
        body.insert("jobId".into(), json!(job_id));
        body.insert("analysisId".into(), serde_json::to_value(&analysis).expect("id"));
        body.insert("userId".into(), json!(user));
        let job = Job::parse(&serde_json::to_vec(&body).expect("encode")).expect("valid job");
        prop_assert_eq!(&job.job_id, &job_id);
        prop_assert_eq!(&job.analysis_id, &analysis);
        prop_assert_eq!(job.user_id.as_str(), user.as_str());
        prop_assert_eq!(&job.body, &body);
        prop_assert_eq!(job.event_id(), format!("job-{job_id}"));
        assert_publishable(&job);
    }

    #[test]
    fn damaged_jobs_never_panic(
        m in plausible_job(),
        cut in any::<usize>(),
        flip in (any::<usize>(), 1..=u8::MAX),
    ) {
        let mut bytes = serde_json::to_vec(&m).expect("encode");
        if !bytes.is_empty() {
            let i = flip.0 % bytes.len();
            bytes[i] ^= flip.1;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(job) = Job::parse(&bytes) {
            assert_publishable(&job);
        }
    }
}
