//! The payloads of the analysis events the worker publishes.
//!
//! JSON Schemas of both live in `proto/schema/`; a test below keeps them and these
//! types in step.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::envelope::{Envelope, rfc3339};
use crate::ids::UserId;

/// Kind of the event published when an analysis succeeded.
pub const KIND_COMPLETED: &str = "analysis.completed";
/// Kind of the event published when an analysis failed.
pub const KIND_FAILED: &str = "analysis.failed";

/// An analysis id as the platform issues it: a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnalysisId {
    Number(i64),
    Text(String),
}

impl std::fmt::Display for AnalysisId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

impl AnalysisId {
    /// Reads a command-line value: all digits become a number, anything else a string.
    pub fn from_arg(s: &str) -> Self {
        s.parse()
            .map(Self::Number)
            .unwrap_or_else(|_| Self::Text(s.into()))
    }
}

/// Machine-readable reason of a failed analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisError {
    pub code: String,
    pub message: String,
}

/// `data` of `analysis.completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisCompleted {
    pub analysis_id: AnalysisId,
    pub user_id: UserId,
    /// Always `"completed"`.
    pub status: String,
    pub completed_at: String,
    pub result: Value,
}

/// `data` of `analysis.failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisFailed {
    pub analysis_id: AnalysisId,
    pub user_id: UserId,
    /// Always `"failed"`.
    pub status: String,
    pub failed_at: String,
    pub error: AnalysisError,
}

/// The outcome of one analysis, ready to become an envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisOutcome {
    Completed(AnalysisCompleted),
    Failed(AnalysisFailed),
}

impl AnalysisOutcome {
    /// A successful analysis, stamped now.
    pub fn completed(analysis_id: AnalysisId, user_id: UserId, result: Value) -> Self {
        Self::Completed(AnalysisCompleted {
            analysis_id,
            user_id,
            status: "completed".into(),
            completed_at: rfc3339(OffsetDateTime::now_utc()),
            result,
        })
    }

    /// A failed analysis, stamped now.
    pub fn failed(analysis_id: AnalysisId, user_id: UserId, error: AnalysisError) -> Self {
        Self::Failed(AnalysisFailed {
            analysis_id,
            user_id,
            status: "failed".into(),
            failed_at: rfc3339(OffsetDateTime::now_utc()),
            error,
        })
    }

    pub fn user_id(&self) -> &UserId {
        match self {
            Self::Completed(c) => &c.user_id,
            Self::Failed(f) => &f.user_id,
        }
    }

    pub fn analysis_id(&self) -> &AnalysisId {
        match self {
            Self::Completed(c) => &c.analysis_id,
            Self::Failed(f) => &f.analysis_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Completed(_) => KIND_COMPLETED,
            Self::Failed(_) => KIND_FAILED,
        }
    }

    /// The event id: derived from the analysis alone, so a retried publish of the same
    /// outcome is de-duplicated by JetStream (`Nats-Msg-Id`).
    pub fn event_id(&self) -> String {
        format!("analysis-{}", self.analysis_id())
    }

    /// The envelope to publish.
    pub fn to_envelope(&self) -> Envelope {
        let (data, at) = match self {
            Self::Completed(c) => (serde_json::to_value(c), c.completed_at.clone()),
            Self::Failed(f) => (serde_json::to_value(f), f.failed_at.clone()),
        };
        let data = match data {
            Ok(Value::Object(map)) => map,
            // Both payloads are structs, which serialize to objects.
            _ => Map::new(),
        };
        Envelope {
            kind: self.kind().into(),
            data,
            occurred_at: Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn required(schema: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(schema).expect("schema is JSON");
        serde_json::from_value(v["required"].clone()).expect("required list")
    }

    #[test]
    fn payloads_match_their_schemas() {
        let user = UserId::parse("u1").expect("valid");
        let done = AnalysisOutcome::completed(AnalysisId::Number(12), user.clone(), json!({}));
        let failed = AnalysisOutcome::failed(
            AnalysisId::Text("a-9".into()),
            user,
            AnalysisError {
                code: "bad_image".into(),
                message: "blurry".into(),
            },
        );
        let cases = [
            (
                done,
                include_str!("../schema/analysis.completed.schema.json"),
            ),
            (
                failed,
                include_str!("../schema/analysis.failed.schema.json"),
            ),
        ];
        for (outcome, schema) in cases {
            let env = outcome.to_envelope();
            assert_eq!(env.kind, outcome.kind());
            env.validate().expect("valid envelope");
            for key in required(schema) {
                assert!(env.data.contains_key(&key), "{} lacks {key}", env.kind);
            }
            assert_eq!(
                env.data.len(),
                required(schema).len(),
                "no undocumented fields"
            );
        }
    }

    #[test]
    fn envelope_schema_is_json_with_the_three_fields() {
        let v: Value =
            serde_json::from_str(include_str!("../schema/envelope.schema.json")).expect("JSON");
        for key in ["kind", "data", "occurredAt"] {
            assert!(v["properties"].get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn event_id_depends_on_the_analysis_only() {
        let u = UserId::parse("u").expect("valid");
        let a = AnalysisOutcome::completed(AnalysisId::Number(5), u.clone(), json!(1));
        let b = AnalysisOutcome::completed(AnalysisId::Number(5), u, json!(2));
        assert_eq!(a.event_id(), b.event_id());
        assert_eq!(AnalysisId::from_arg("17"), AnalysisId::Number(17));
        assert_eq!(AnalysisId::from_arg("x17"), AnalysisId::Text("x17".into()));
    }
}
