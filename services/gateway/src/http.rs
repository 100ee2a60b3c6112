//! The HTTP surface: routes, authentication of requests, health endpoints.
//!
//! Every refusal is JSON `{"error": <code>, "message": <text>}` with a fitting status.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use ziraai_common::metrics::{Exposition, IpRange};
use ziraai_common::nats::NOTIFY_STREAM;

use crate::AppState;
use crate::auth::{AuthError, Identity, token_from};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    // Handshakes are what a misbehaving client repeats: rate-limited per client IP
    // (a burst, then one every interval), answered with 429 and Retry-After.
    let limit = tower_governor::governor::GovernorConfigBuilder::default()
        .period(state.cfg.handshake_interval)
        .burst_size(state.cfg.handshake_burst)
        .finish()
        // Configuration refuses a zero burst or interval, the only cases without a config.
        .unwrap_or_default();
    let limiter = limit.limiter().clone();
    let stop = state.shutdown.clone();
    state.tracker.spawn(async move {
        // Forget addresses whose allowance is full again, so the map stays small.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => limiter.retain_recent(),
            }
        }
    });
    let limit = tower_governor::GovernorLayer::new(Arc::new(limit)).error_handler(|e| match e {
        tower_governor::GovernorError::TooManyRequests { wait_time, .. } => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_handshakes",
            format!("too many connection attempts from this address; retry in {wait_time} s"),
        )
        .retry_after(wait_time.max(1))
        .into_response(),
        other => refuse(StatusCode::INTERNAL_SERVER_ERROR, "rate_limit", other).into_response(),
    });
    let handshakes = Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .merge(crate::signalr::routes())
        .layer(limit);
    let mut r = Router::new()
        .route("/api/v1/notifications", get(crate::api::poll))
        .route(
            "/api/v1/notifications/ack",
            axum::routing::post(crate::api::ack),
        )
        .route("/api/v1/admin/deliveries", get(crate::api::deliveries))
        .route(
            "/health/live",
            get(|| async { (StatusCode::OK, axum::Json(json!({"status": "live"}))) }),
        )
        .route("/health/ready", get(ready))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    r = r.merge(handshakes);
    if state.demo.is_some() {
        r = r.route("/demo", get(crate::demo::page));
    }
    r.with_state(state)
}

/// A JSON error response.
/// A refused request: the one place errors become HTTP responses.
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
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
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

/// Authenticates a request by its bearer header or `access_token` query parameter.
pub(crate) fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, ApiError> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = token_from(authz, query.get("access_token").map(String::as_str)) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            AuthError::Missing,
        ));
    };
    app.auth
        .verify(&token)
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.code(), &e))
}

/// What readiness lacks, empty when ready.
async fn missing(app: &AppState) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if app.shutdown.is_cancelled() {
        missing.push("draining");
    }
    if app.client.connection_state() != async_nats::connection::State::Connected {
        missing.push("nats");
        missing.push("stream NOTIFY");
    } else {
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            app.js.get_stream(NOTIFY_STREAM),
        )
        .await;
        if !matches!(lookup, Ok(Ok(_))) {
            missing.push("stream NOTIFY");
        }
    }
    missing
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    let missing = missing(&app).await;
    if missing.is_empty() {
        (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready", "missing": missing})),
        )
            .into_response()
    }
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    let missing = missing(&app).await;
    let body = json!({
        "status": if missing.is_empty() { "ready" } else { "not ready" },
        "missing": missing,
        "environment": app.env.as_str(),
        "gatewayId": app.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "nats": {
            "connected": app.client.connection_state() == async_nats::connection::State::Connected,
            "server": app.client.server_info().version,
        },
        "realtimeEnabled": app.cfg.realtime_enabled,
        "connections": app.connections.load(Ordering::Relaxed),
        "users": app.hub.users(),
        "delivery": app.stats.snapshot(),
    });
    let status = if missing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text, for addresses in `ZIRAAI_METRICS_ALLOW` only.
async fn metrics(
    State(app): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
) -> Result<Response, ApiError> {
    if !IpRange::any_contains(&app.metrics_allow, peer.ip()) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "metrics are not served to this address",
        ));
    }
    let st = &app.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let connected = app.client.connection_state() == async_nats::connection::State::Connected;
    let text = Exposition::default()
        .metric(
            "ziraai_gateway_connections",
            "gauge",
            "Open sockets (native and SignalR).",
            app.connections.load(Ordering::Relaxed),
        )
        .metric(
            "ziraai_gateway_users",
            "gauge",
            "Users with a live subscription on this gateway.",
            app.hub.users(),
        )
        .metric(
            "ziraai_gateway_nats_connected",
            "gauge",
            "1 while connected to NATS.",
            u8::from(connected),
        )
        .metric(
            "ziraai_gateway_frames_queued_total",
            "counter",
            "Live events queued to sockets.",
            get(&st.delivered),
        )
        .metric(
            "ziraai_gateway_events_replayed_total",
            "counter",
            "Events read back from the stream (replay, gap fill).",
            get(&st.replayed),
        )
        .metric(
            "ziraai_gateway_gaps_detected_total",
            "counter",
            "Gaps detected through Nats-Last-Sequence.",
            get(&st.gaps),
        )
        .metric(
            "ziraai_gateway_malformed_events_total",
            "counter",
            "Live events skipped as malformed.",
            get(&st.malformed),
        )
        .metric(
            "ziraai_gateway_slow_consumers_total",
            "counter",
            "Sockets closed for not keeping up.",
            get(&st.slow_consumers),
        )
        .metric(
            "ziraai_gateway_tracking_dropped_total",
            "counter",
            "Delivery-tracking records dropped (queue full).",
            get(&st.tracking_dropped),
        )
        .finish();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
