//! Analysis jobs as the platform submits them to `jobs.analysis`.
//!
//! `{"jobId": "<unique>", "analysisId": <string or number>, "userId": "<user id>",
//! "imageUrl": "<url>", …}`; every other field is passed to the analyzer untouched. A
//! job that cannot be processed at all (not JSON, no job id, no or a bad user id) is
//! poison: terminated, counted, and published as an advisory.

use serde_json::{Map, Value};
use ziraai_proto::UserId;
use ziraai_proto::analysis::AnalysisId;

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
        let cases: [(&[u8], Poison); 6] = [
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
