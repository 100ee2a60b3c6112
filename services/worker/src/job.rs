//! Analysis jobs as the platform submits them to `jobs.analysis`.
//!
//! `{"jobId": "<unique>", "analysisId": <string or number>, "userId": "<user id>",
//! "imageUrl": "<url>", …}`; every other field is passed to the analyzer untouched. A
//! job that cannot be processed at all (not JSON, no job id, no or a bad user id) is
//! poison: terminated, counted, and published as an advisory.

use serde_json::{Map, Value};
use ziraai_proto::UserId;
use ziraai_proto::analysis::AnalysisId;

/// Longest accepted `jobId`, in bytes: `job-<jobId>` travels as the event's `Nats-Msg-Id`
/// header, which must leave room for the envelope in `NOTIFY`'s 64 KiB messages.
pub const MAX_JOB_ID_LEN: usize = 256;

/// A job that can be processed.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub job_id: String,
    pub analysis_id: AnalysisId,
    pub user_id: UserId,
    /// The whole job object, as the analyzer receives it.
    pub body: Map<String, Value>,
}

/// Why a job is poison (the reason goes to the advisory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Poison {
    #[error("job is not a JSON object")]
    NotJson,
    #[error("job has no jobId (string)")]
    NoJobId,
    #[error("job has no userId")]
    NoUserId,
    #[error("job's userId {0}")]
    BadUserId(String),
    #[error("job has no analysisId (string or number)")]
    NoAnalysisId,
    /// A job id that cannot become a `Nats-Msg-Id`: the outcome could never be
    /// published, so the job would come back for ever.
    #[error("job's jobId {0:?} holds a control character or exceeds {MAX_JOB_ID_LEN} bytes")]
    BadJobId(String),
}

impl Job {
    /// Parses a job body.
    pub fn parse(bytes: &[u8]) -> Result<Self, Poison> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
            return Err(Poison::NotJson);
        };
        let job_id = match body.get("jobId") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(Poison::NoJobId),
        };
        if job_id.len() > MAX_JOB_ID_LEN || job_id.chars().any(char::is_control) {
            let shown: String = job_id.chars().take(64).collect();
            return Err(Poison::BadJobId(shown));
        }
        let user_id = match body.get("userId") {
            Some(Value::String(s)) => {
                UserId::parse(s).map_err(|e| Poison::BadUserId(e.to_string()))?
            }
            Some(Value::Number(n)) => {
                UserId::parse(&n.to_string()).map_err(|e| Poison::BadUserId(e.to_string()))?
            }
            _ => return Err(Poison::NoUserId),
        };
        let analysis_id = match body.get("analysisId") {
            Some(Value::String(s)) => AnalysisId::Text(s.clone()),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(AnalysisId::Number)
                .ok_or(Poison::NoAnalysisId)?,
            _ => return Err(Poison::NoAnalysisId),
        };
        Ok(Self {
            job_id,
            analysis_id,
            user_id,
            body,
        })
    }

    /// `Nats-Msg-Id` of this job's event: derived from the job id alone, so every
    /// publish for this job (retries, redeliveries after a crash) is stored once.
    pub fn event_id(&self) -> String {
        format!("job-{}", self.job_id)
    }
}

#[cfg(test)]
#[path = "job_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jobs_and_keeps_extra_fields() {
        let j = Job::parse(br#"{"jobId":"j1","analysisId":42,"userId":"u-1","imageUrl":"http://x/p.jpg","crop":"tomato"}"#)
            .expect("valid");
        assert_eq!(j.analysis_id, AnalysisId::Number(42));
        assert_eq!(j.user_id.as_str(), "u-1");
        assert_eq!(j.body["crop"], "tomato");
        assert_eq!(j.event_id(), "job-j1");
        let n = Job::parse(br#"{"jobId":"j2","analysisId":"a-2","userId":77}"#)
            .expect("numeric user id");
        assert_eq!(n.user_id.as_str(), "77");
    }

    #[test]
    fn poison_jobs_say_why() {
        let long = format!(
            r#"{{"jobId":"{}","analysisId":1,"userId":"u"}}"#,
            "j".repeat(257)
        );
        let cases: [(&[u8], Poison); 9] = [
            (b"not json", Poison::NotJson),
            (b"[1]", Poison::NotJson),
            (br#"{"analysisId":1,"userId":"u"}"#, Poison::NoJobId),
            (br#"{"jobId":"j","analysisId":1}"#, Poison::NoUserId),
            (
                br#"{"jobId":"j","analysisId":1,"userId":"42.>"}"#,
                Poison::BadUserId(
                    "contains '.'; only A-Z, a-z, 0-9, '_' and '-' are allowed".into(),
                ),
            ),
            (br#"{"jobId":"j","userId":"u"}"#, Poison::NoAnalysisId),
            // Found by the property tests: accepted, but `job-\n` is no Nats-Msg-Id, so
            // the outcome was refused by the publisher and the job redelivered for ever.
            (
                br#"{"jobId":"\n","analysisId":1,"userId":"u"}"#,
                Poison::BadJobId("\n".into()),
            ),
            (
                br#"{"jobId":"a\u007fb","analysisId":1,"userId":"u"}"#,
                Poison::BadJobId("a\u{7f}b".into()),
            ),
            (long.as_bytes(), Poison::BadJobId("j".repeat(64))),
        ];
        for (body, want) in cases {
            assert_eq!(
                Job::parse(body),
                Err(want),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
