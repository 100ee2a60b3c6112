//! The HTTP surface: `/ws`, health endpoints, and the development demo page.
//!
//! Every refusal is JSON `{"error": <code>, "message": <text>}` with a fitting status,
//! decided before the upgrade so a refused client never gets a socket (or a
//! subscription).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use ziraai_common::nats::NOTIFY_STREAM;
use ziraai_proto::{Protocol, ServerFrame};

use crate::AppState;
use crate::auth::token_from;
use crate::session::{self, CloseReason, SessionLimits};

/// Socket read buffer: clients only send small frames (see stack notes: 128 KiB
/// defaults cost about 133 KiB of RSS per idle socket).
const READ_BUFFER: usize = 4 * 1024;
/// Socket write buffer before a flush is forced.
const WRITE_BUFFER: usize = 4 * 1024;
/// Hard cap of tungstenite's write buffer: one batch of frames at most.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new()
        .route("/ws", get(ws_upgrade))
        .route(
            "/health/live",
            get(|| async { (StatusCode::OK, axum::Json(json!({"status": "live"}))) }),
        )
        .route("/health/ready", get(ready))
        .route("/health", get(health));
    if state.demo.is_some() {
        r = r.route("/demo", get(crate::demo::page));
    }
    r.with_state(state)
}

/// A JSON error response.
pub(crate) fn refuse(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message.to_string()})),
    )
        .into_response()
}

fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        // Non-browser clients send no Origin; the token is their credential.
        None => true,
        Some(o) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(o)),
    }
}

async fn ws_upgrade(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if app.shutdown.is_cancelled() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "gateway is shutting down; reconnect to another instance",
        );
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(&app.cfg.allowed_origins, origin) {
        return refuse(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("origin {:?} is not allowed", origin.unwrap_or("")),
        );
    }
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = token_from(authz, query.get("access_token").map(String::as_str)) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            crate::auth::AuthError::Missing,
        );
    };
    let identity = match app.auth.verify(&token) {
        Ok(id) => id,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.code(), &e),
    };
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let chosen = match Protocol::negotiate(offered.iter().copied()) {
        Ok(p) => p,
        Err(names) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_subprotocol",
                format!(
                    "offered {names}; this gateway speaks ziraai.v1.json and ziraai.v1.msgpack"
                ),
            );
        }
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return refuse(e.status(), "not_a_websocket", e.body_text()),
    };
    let protocol = chosen.unwrap_or(Protocol::Json);
    let user = identity.user_id;
    let membership = app.hub.join(user.clone(), protocol, app.cfg.outbound_queue);
    if let Err(e) = membership.guard.ready(app.cfg.subscribe_timeout).await {
        tracing::warn!(user = %user, error = %e, "cannot subscribe for a new socket");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e);
    }
    let mut ws = ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(app.cfg.max_client_frame)
        .max_frame_size(app.cfg.max_client_frame);
    if let Some(p) = chosen {
        ws = ws.protocols([p.subprotocol()]);
    }
    let tracked = app.tracker.token();
    let connection_id = format!("{}-{}", app.gateway_id, membership.guard.socket_id());
    ws.on_upgrade(move |socket: WebSocket| async move {
        let _tracked = tracked;
        let _guard = membership.guard;
        app.connections.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%connection_id, user = %user, ?protocol, "socket open");
        let welcome = ServerFrame::Welcome {
            connection_id: connection_id.clone(),
            user_id: user.to_string(),
        };
        let limits = SessionLimits {
            write_timeout: app.cfg.write_timeout,
            ping_interval: app.cfg.ping_interval,
        };
        let end = session::run(
            socket,
            membership.rx,
            membership.ctl,
            protocol,
            welcome,
            limits,
            app.shutdown.clone(),
        )
        .await;
        app.connections.fetch_sub(1, Ordering::Relaxed);
        if end == Some(CloseReason::SlowConsumer) {
            app.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(%connection_id, user = %user, ?end, "socket closed");
    })
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
