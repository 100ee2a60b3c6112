//! The `/health*` and `/metrics` shape both services answer with: a readiness verdict
//! `{"status": "ready" | "not ready", "missing": [...]}` (200 when nothing is
//! missing, 503 otherwise), extended by each service's own details on `/health`, and
//! the Prometheus text of `/metrics`, refused (403, JSON) outside the allow-list.

use std::net::IpAddr;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::metrics::IpRange;

/// Content type of the Prometheus text exposition format (0.0.4), as the encoder's
/// crate names it.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `GET /health/live`: the process answers.
pub fn live() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "live"}))).into_response()
}

/// What a service lacks to do its work; ready when nothing is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    missing: Vec<&'static str>,
}

impl Readiness {
    /// A verdict from the list of what is missing (empty: ready).
    pub fn missing(missing: Vec<&'static str>) -> Self {
        Self { missing }
    }

    pub fn is_ready(&self) -> bool {
        self.missing.is_empty()
    }

    /// 200 when ready, 503 otherwise.
    pub fn status(&self) -> StatusCode {
        if self.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// `{"status": "ready" | "not ready", "missing": [...]}`.
    pub fn verdict(&self) -> Value {
        json!({
            "status": if self.is_ready() { "ready" } else { "not ready" },
            "missing": self.missing,
        })
    }

    /// `GET /health`: the verdict followed by the service's `details` (an object; its
    /// fields are added next to `status` and `missing`).
    pub fn with_details(&self, details: Value) -> Response {
        let mut body = self.verdict();
        if let (Value::Object(body), Value::Object(details)) = (&mut body, details) {
            body.extend(details);
        }
        (self.status(), axum::Json(body)).into_response()
    }
}

/// `GET /health/ready`: the verdict alone.
impl IntoResponse for Readiness {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.verdict())).into_response()
    }
}

/// `/metrics` (or `/health`'s details) asked from an address outside the allow-list;
/// holds what was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsRefused(&'static str);

/// 403 `forbidden`, JSON like every refusal.
impl IntoResponse for MetricsRefused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            axum::Json(
                json!({"error": "forbidden", "message": format!("{} are not served to this address", self.0)}),
            ),
        )
            .into_response()
    }
}

/// `GET /health` (counters, versions, environment): the same allow-list as `/metrics`.
/// `/health/live` and `/health/ready` stay open for load balancers and orchestrators.
pub fn details_allowed(allow: &[IpRange], peer: IpAddr) -> Result<(), MetricsRefused> {
    if IpRange::any_contains(allow, peer) {
        Ok(())
    } else {
        Err(MetricsRefused("health details"))
    }
}

/// `GET /metrics`: refused unless `peer` is in `allow`; checked before the exposition
/// is rendered.
pub fn metrics_allowed(allow: &[IpRange], peer: IpAddr) -> Result<(), MetricsRefused> {
    if IpRange::any_contains(allow, peer) {
        Ok(())
    } else {
        Err(MetricsRefused("metrics"))
    }
}

/// `GET /metrics`: the rendered exposition with its content type.
pub fn metrics_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_maps_to_200_or_503_and_keeps_details() {
        let ready = Readiness::missing(Vec::new());
        assert_eq!(ready.status(), StatusCode::OK);
        assert_eq!(ready.verdict(), json!({"status": "ready", "missing": []}));
        let not = Readiness::missing(vec!["nats"]);
        assert_eq!(not.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            not.verdict(),
            json!({"status": "not ready", "missing": ["nats"]})
        );
        let r = not.with_details(json!({"version": "1"}));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn metrics_are_refused_outside_the_allow_list() {
        let loopback = IpRange::loopback();
        assert!(metrics_allowed(&loopback, "127.0.0.1".parse().expect("ip")).is_ok());
        let refused = metrics_allowed(&loopback, "10.1.2.3".parse().expect("ip"));
        assert_eq!(
            refused.err().map(|r| r.into_response().status()),
            Some(StatusCode::FORBIDDEN)
        );
        assert!(details_allowed(&loopback, "::1".parse().expect("ip")).is_ok());
        assert!(details_allowed(&loopback, "10.1.2.3".parse().expect("ip")).is_err());
    }
}
