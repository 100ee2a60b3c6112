//! The one place a refused request becomes an HTTP response: `{"error": <code>,
//! "message": <text>}` with a fitting status and, when the client should come back
//! later, `Retry-After`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A refused request.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    /// Adds a `Retry-After` header (seconds).
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

/// A JSON refusal `{"error": code, "message": message}` with `status`.
pub(crate) fn refuse(status: StatusCode, code: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError {
        status,
        code: code.to_owned(),
        message: message.to_string(),
        retry_after: None,
    }
}

/// 503 `broker_unavailable`: NATS (a stream, a bucket) cannot be reached right now,
/// with a jittered `Retry-After` (see [`jittered_retry_after`]).
pub(crate) fn unavailable(e: &dyn std::fmt::Display) -> ApiError {
    refuse(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e)
        .retry_after(jittered_retry_after())
}

/// Shortest and longest `Retry-After` of a 503 from a busy or unreachable broker.
const RETRY_AFTER_SECS: (u64, u64) = (1, 5);

/// A `Retry-After` spread over 1–5 s, so clients refused together (a reconnect storm)
/// do not all come back in the same second.
pub(crate) fn jittered_retry_after() -> u64 {
    let (lo, hi) = RETRY_AFTER_SECS;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    // Sub-second clock bits mixed (splitmix64 finaliser): good enough to spread clients.
    let mut x = nanos.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    lo + x % (hi - lo + 1)
}

/// 503 `handshake_timeout`: the broker did not answer a socket's handshake in time
/// (busy, e.g. during a reconnect storm); the client retries after `Retry-After`.
pub(crate) fn handshake_timeout(limit: std::time::Duration) -> ApiError {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "handshake_timeout",
        format!("the handshake did not finish within {limit:?}; retry"),
    )
    .retry_after(jittered_retry_after())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_jittered_within_its_bounds() {
        let seen: std::collections::HashSet<u64> = (0..2000)
            .map(|_| {
                let s = jittered_retry_after();
                assert!((1..=5).contains(&s), "Retry-After {s}");
                s
            })
            .collect();
        assert!(seen.len() > 1, "always {seen:?}");
    }

    #[test]
    fn a_broker_refusal_says_when_to_come_back() {
        let r = unavailable(&"timed out").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let secs: u64 = r.headers()[header::RETRY_AFTER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=5).contains(&secs));
        let r = handshake_timeout(std::time::Duration::from_secs(4)).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }
}
