//! The event envelope: what a producer publishes to `notify.<userId>`.
//!
//! `{"kind": "analysis.completed", "data": {…}, "occurredAt": "<RFC 3339>"}` as JSON, or
//! the same map as MessagePack when the message carries `Content-Type:
//! application/msgpack`. `data` is any JSON object and is passed to clients untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest accepted `kind`, in bytes.
pub const MAX_KIND_LEN: usize = 128;

/// One event as producers publish it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Dotted lowercase name, e.g. `analysis.completed`.
    pub kind: String,
    /// The event's payload, forwarded to clients as is.
    pub data: Map<String, Value>,
    /// When the event happened (RFC 3339), if the producer says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
}

/// How an envelope body is encoded, chosen by the message's `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadEncoding {
    Json,
    MsgPack,
}

/// Why a published body is not a valid envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("unsupported Content-Type {0:?} (use application/json or application/msgpack)")]
    UnsupportedContentType(String),
    #[error("body is not a valid JSON envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("body is not a valid MessagePack envelope: {0}")]
    MsgPack(#[from] rmp_serde::decode::Error),
    #[error("kind {0:?} is not a dotted lowercase name like \"analysis.completed\"")]
    BadKind(String),
    #[error("occurredAt {0:?} is not an RFC 3339 timestamp")]
    BadOccurredAt(String),
}

impl PayloadEncoding {
    /// Content type the worker sets for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::MsgPack => "application/msgpack",
        }
    }

    /// Reads a `Content-Type` header value; absent means JSON.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, EnvelopeError> {
        let Some(raw) = value else {
            return Ok(Self::Json);
        };
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | "application/json" => Ok(Self::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Self::MsgPack)
            }
            _ => Err(EnvelopeError::UnsupportedContentType(raw.to_owned())),
        }
    }
}

/// `kind` must be dotted lowercase: `[a-z][a-z0-9_]*` parts joined by single dots.
pub fn is_valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind.split('.').all(|part| {
            let mut chars = part.chars();
            matches!(chars.next(), Some('a'..='z'))
                && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        })
}

impl Envelope {
    /// Builds an envelope stamped with the current time.
    pub fn now(kind: impl Into<String>, data: Map<String, Value>) -> Self {
        Self {
            kind: kind.into(),
            data,
            occurred_at: Some(rfc3339(OffsetDateTime::now_utc())),
        }
    }

    /// Decodes and validates a published body.
    pub fn decode(body: &[u8], encoding: PayloadEncoding) -> Result<Self, EnvelopeError> {
        let env: Envelope = match encoding {
            PayloadEncoding::Json => serde_json::from_slice(body)?,
            PayloadEncoding::MsgPack => crate::msgpack::from_slice(body)?,
        };
        env.validate()?;
        Ok(env)
    }

    /// Checks the rules the type system does not: kind syntax and the timestamp.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if !is_valid_kind(&self.kind) {
            return Err(EnvelopeError::BadKind(self.kind.clone()));
        }
        if let Some(at) = &self.occurred_at
            && OffsetDateTime::parse(at, &Rfc3339).is_err()
        {
            return Err(EnvelopeError::BadOccurredAt(at.clone()));
        }
        Ok(())
    }

    /// Encodes the envelope in the given encoding (MessagePack as a map).
    pub fn encode(&self, encoding: PayloadEncoding) -> Vec<u8> {
        match encoding {
            // Serializing a struct of strings and JSON values cannot fail.
            PayloadEncoding::Json => serde_json::to_vec(self).unwrap_or_default(),
            PayloadEncoding::MsgPack => rmp_serde::to_vec_named(self).unwrap_or_default(),
        }
    }
}

/// Formats a timestamp as RFC 3339 (UTC, `Z`).
pub fn rfc3339(at: OffsetDateTime) -> String {
    // Formatting a valid OffsetDateTime as RFC 3339 only fails for years outside 0..=9999.
    at.format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Envelope {
        let Value::Object(data) = json!({"analysisId": "a1", "nested": {"n": [1, 2.5, null]}})
        else {
            unreachable!()
        };
        Envelope {
            kind: "analysis.completed".into(),
            data,
            occurred_at: Some("2026-11-25T10:00:00Z".into()),
        }
    }

    #[test]
    fn round_trips_in_both_encodings() {
        for enc in [PayloadEncoding::Json, PayloadEncoding::MsgPack] {
            let env = sample();
            let back = Envelope::decode(&env.encode(enc), enc).expect("decodes");
            assert_eq!(back, env, "{enc:?}");
        }
    }

    #[test]
    fn floats_reach_clients_unchanged() {
        // Found by the property tests: without serde_json's `float_roundtrip` the
        // gateway parsed this producer's float one bit off and delivered the change.
        for text in ["2.2894915473291928e-10", "-9.459175051450797e+220", "0.1"] {
            let body = format!(r#"{{"kind":"a","data":{{"x":{text}}}}}"#);
            let env = Envelope::decode(body.as_bytes(), PayloadEncoding::Json).expect("valid");
            let want: f64 = text.parse().expect("float");
            assert_eq!(env.data["x"].as_f64(), Some(want), "{text}");
            assert_eq!(env.encode(PayloadEncoding::Json), body.as_bytes());
        }
    }

    #[test]
    fn deep_msgpack_data_is_refused_not_a_crash() {
        // Found by the property tests: ~700 nested arrays overflowed the stack.
        let mut body = vec![0x82, 0xa4];
        body.extend_from_slice(b"kind");
        body.extend_from_slice(&[0xa1, b'a', 0xa4]);
        body.extend_from_slice(b"data");
        body.extend_from_slice(&[0x81, 0xa1, b'x']);
        body.extend(std::iter::repeat_n(0x91, 5_000));
        body.push(0xc0);
        assert!(matches!(
            Envelope::decode(&body, PayloadEncoding::MsgPack),
            Err(EnvelopeError::MsgPack(_))
        ));
    }

    #[test]
    fn occurred_at_is_optional() {
        let env =
            Envelope::decode(br#"{"kind":"a.b","data":{}}"#, PayloadEncoding::Json).expect("valid");
        assert_eq!(env.occurred_at, None);
    }

    #[test]
    fn refuses_malformed_bodies() {
        let bad: &[&[u8]] = &[
            b"",
            b"not json",
            br#"{"kind":"a.b"}"#,
            br#"{"kind":"a.b","data":[1]}"#,
            br#"{"kind":"A.B","data":{}}"#,
            br#"{"kind":"a..b","data":{}}"#,
            br#"{"kind":"a.b","data":{},"occurredAt":"yesterday"}"#,
        ];
        for body in bad {
            assert!(
                Envelope::decode(body, PayloadEncoding::Json).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(Envelope::decode(b"\xc1\xff", PayloadEncoding::MsgPack).is_err());
        // JSON text is not MessagePack.
        let json = sample().encode(PayloadEncoding::Json);
        assert!(Envelope::decode(&json, PayloadEncoding::MsgPack).is_err());
    }

    #[test]
    fn content_type_selects_encoding() {
        use PayloadEncoding::*;
        assert_eq!(PayloadEncoding::from_content_type(None).ok(), Some(Json));
        let ct = Some("application/json; charset=utf-8");
        assert_eq!(PayloadEncoding::from_content_type(ct).ok(), Some(Json));
        let ct = Some("Application/MsgPack");
        assert_eq!(PayloadEncoding::from_content_type(ct).ok(), Some(MsgPack));
        assert!(PayloadEncoding::from_content_type(Some("text/xml")).is_err());
    }

    #[test]
    fn kind_rule() {
        for ok in ["analysis.completed", "a", "x1.y_2"] {
            assert!(is_valid_kind(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "1a", "a.B", "a-b", "a b", &"a".repeat(129)] {
            assert!(!is_valid_kind(bad), "{bad}");
        }
    }
}
