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

/// 503 `broker_unavailable`: NATS (a stream, a bucket) cannot be reached right now.
pub(crate) fn unavailable(e: &dyn std::fmt::Display) -> ApiError {
    refuse(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e)
}
