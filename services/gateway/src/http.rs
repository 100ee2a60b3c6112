//! The HTTP surface: the routes (with the handshake rate limit) and the gateway's
//! health and metrics, in the shape both services share (`ziraai_common::health`).
//! Handlers live in their own modules; refusals are [`crate::error::ApiError`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;
use ziraai_common::health::{self, Readiness};
use ziraai_common::nats::NOTIFY_STREAM;

use crate::AppState;
use crate::client_ip::{ClientIp, ClientIpKey};
use crate::error::refuse;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    // Handshakes are what a misbehaving client repeats: rate-limited per client IP
    // (a burst, then one every interval), answered with 429 and Retry-After.
    let handshakes = Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .merge(crate::signalr::routes());
    let handshakes = per_ip_limit(
        handshakes,
        &state,
        (state.cfg.handshake_burst, state.cfg.handshake_interval),
        "too_many_handshakes",
        "connection attempts",
    );
    let api = Router::new()
        .route("/api/v1/notifications", get(crate::api::poll))
        .route(
            "/api/v1/notifications/ack",
            axum::routing::post(crate::api::ack),
        )
        .route("/api/v1/admin/deliveries", get(crate::api::deliveries));
    // Polling, ack and admin requests share one allowance per client IP.
    let api = per_ip_limit(
        api,
        &state,
        (state.cfg.http_burst, state.cfg.http_interval),
        "too_many_requests",
        "requests",
    );
    let mut r = Router::new()
        .merge(api)
        .route("/health/live", get(|| async { health::live() }))
        .route("/health/ready", get(ready))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    r = r.merge(handshakes);
    if state.demo.is_some() {
        r = r.route("/demo", get(crate::demo::page));
    }
    r.with_state(state)
}

/// A per-client-IP rate limit (a burst, then one allowance every `interval`), keyed by
/// [`ClientIp`]; refusals are 429 `code` with `Retry-After`.
fn per_ip_limit(
    routes: Router<Arc<AppState>>,
    state: &AppState,
    (burst, interval): (u32, std::time::Duration),
    code: &'static str,
    what: &'static str,
) -> Router<Arc<AppState>> {
    let limit = tower_governor::governor::GovernorConfigBuilder::default()
        .period(interval.max(std::time::Duration::from_nanos(1)))
        .burst_size(burst.max(1))
        .key_extractor(ClientIpKey)
        .finish()
        // `finish` refuses only a zero burst or period, both excluded just above (and by
        // configuration).
        .expect("a non-zero burst and period make a valid limit");
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
    routes.layer(
        tower_governor::GovernorLayer::new(Arc::new(limit)).error_handler(move |e| match e {
            tower_governor::GovernorError::TooManyRequests { wait_time, .. } => refuse(
                StatusCode::TOO_MANY_REQUESTS,
                code,
                format!("too many {what} from this address; retry in {wait_time} s"),
            )
            .retry_after(wait_time.max(1))
            .into_response(),
            other => refuse(StatusCode::INTERNAL_SERVER_ERROR, "rate_limit", other).into_response(),
        }),
    )
}

/// What readiness lacks.
async fn readiness(app: &AppState) -> Readiness {
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
    Readiness::missing(missing)
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    readiness(&app).await.into_response()
}

/// `GET /health`: readiness with counters and versions, for allow-listed addresses
/// only (like `/metrics`); `/health/live` and `/health/ready` stay open.
async fn health(
    State(app): State<Arc<AppState>>,
    Extension(ClientIp(client)): Extension<ClientIp>,
) -> Response {
    if let Err(refused) = health::details_allowed(&app.metrics_allow, client) {
        return refused.into_response();
    }
    readiness(&app).await.with_details(json!({
        "environment": app.env.as_str(),
        "gatewayId": app.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "nats": {
            "connected": app.client.connection_state() == async_nats::connection::State::Connected,
            "server": app.client.server_info().version,
        },
        "realtimeEnabled": app.cfg.realtime_enabled,
        "connections": app.connections.load(Ordering::Relaxed),
        "maxConnections": app.cfg.max_connections,
        "users": app.hub.users(),
        "delivery": app.stats.snapshot(),
        // Spans handed to the collector / dropped (queue full, export failed) by this process.
        "traces": {
            "exported": ziraai_common::telemetry::exported_spans(),
            "dropped": ziraai_common::telemetry::dropped_spans(),
        },
    }))
}

/// `GET /metrics`: Prometheus text (`prometheus-client`), for addresses in
/// `ZIRAAI_METRICS_ALLOW` only.
async fn metrics(
    State(app): State<Arc<AppState>>,
    Extension(ClientIp(client)): Extension<ClientIp>,
) -> Response {
    if let Err(refused) = health::metrics_allowed(&app.metrics_allow, client) {
        return refused.into_response();
    }
    let ready = readiness(&app).await.is_ready();
    let text = crate::metrics::render(crate::metrics::Scrape {
        app: app.clone(),
        ready,
    });
    health::metrics_text(text)
}
