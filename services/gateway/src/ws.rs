//! `GET /ws`: authenticate, pick the subprotocol, find the resume point, subscribe,
//! upgrade, and run the session.
//!
//! Every refusal is decided before the upgrade, so a refused client never gets a
//! socket (or a subscription).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use tokio_util::task::task_tracker::TaskTrackerToken;
use ziraai_proto::{DeviceId, Protocol, ServerFrame, UserId};

use crate::AppState;
use crate::auth::Identity;
use crate::backend::NatsBackend;
use crate::delivery::Encoding;
use crate::http::{ApiError, authenticate, refuse};
use crate::hub::Membership;
use crate::session::native::NativeDialect;
use crate::session::{self, CloseReason, Dialect, Session, SessionLimits};

/// Socket read buffer: clients only send small frames (see stack notes: 128 KiB
/// defaults cost about 133 KiB of RSS per idle socket).
const READ_BUFFER: usize = 4 * 1024;
/// Socket write buffer before a flush is forced.
const WRITE_BUFFER: usize = 4 * 1024;
/// Hard cap of tungstenite's write buffer: one batch of frames at most.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// `Retry-After` of a refusal while realtime is switched off, seconds.
const REALTIME_OFF_RETRY_AFTER: u64 = 30;

/// Where a socket starts, and what its welcome frame says about it.
pub(crate) struct ResumePoint {
    pub(crate) start_after: u64,
    pub(crate) gap: bool,
    pub(crate) oldest_available: Option<u64>,
}

/// Chooses the start: `since` wins over the device's stored cursor; with neither (or a
/// device without a cursor yet) the socket starts live, after the user's latest event
/// as of now, and a new device's cursor is created there. Read before subscribing, so
/// an event stored in between is replayed.
pub(crate) async fn resume_point(
    app: &AppState,
    user: &UserId,
    since: Option<u64>,
    device: Option<&DeviceId>,
) -> Result<ResumePoint, ApiError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        refuse(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e)
    };
    let cursor = match (since, device) {
        (Some(s), _) => Some(s),
        (None, Some(d)) => app
            .cursors
            .get(user, d)
            .await
            .map_err(|e| unavailable(&e))?,
        (None, None) => None,
    };
    let Some(after) = cursor else {
        let latest = app.store.latest(user).await.map_err(|e| unavailable(&e))?;
        if let Some(d) = device {
            // From now on this device has a cursor: if it drops before its first
            // event, it resumes here instead of starting live again and missing it.
            app.cursors
                .advance(user, d, latest)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        return Ok(ResumePoint {
            start_after: latest,
            gap: false,
            oldest_available: None,
        });
    };
    let bounds = app.store.bounds().await.map_err(|e| unavailable(&e))?;
    // Events after the cursor but before the stream's first sequence have expired.
    let gap = after + 1 < bounds.first_seq;
    Ok(ResumePoint {
        start_after: after.min(bounds.last_seq),
        gap,
        oldest_available: gap.then_some(bounds.first_seq),
    })
}

/// Parses `since` and `deviceId` query parameters.
pub(crate) fn resume_params(
    query: &HashMap<String, String>,
) -> Result<(Option<u64>, Option<DeviceId>), ApiError> {
    let since = match query.get("since") {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_since",
                format!("since={s:?} is not a sequence number"),
            )
        })?),
    };
    let device = match query.get("deviceId") {
        None => None,
        Some(d) => Some(DeviceId::parse(d).map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad_device_id",
                format!("deviceId {e}"),
            )
        })?),
    };
    Ok((since, device))
}

pub(crate) async fn upgrade(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let identity = admit(&app, &headers, &query)?;
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let chosen = Protocol::negotiate(offered.iter().copied()).map_err(|names| {
        refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_subprotocol",
            format!("offered {names}; this gateway speaks ziraai.v1.json and ziraai.v1.msgpack"),
        )
    })?;
    let (since, device) = resume_params(&query)?;
    let ws = ws.map_err(|e| refuse(e.status(), "not_a_websocket", e.body_text()))?;
    let user = identity.user_id;
    let resume = resume_point(&app, &user, since, device.as_ref()).await?;
    let protocol = chosen.unwrap_or(Protocol::Json);
    let membership = app.hub.join(
        user.clone(),
        Encoding::Native(protocol),
        app.cfg.outbound_queue,
    );
    if let Err(e) = membership.guard.ready(app.cfg.subscribe_timeout).await {
        tracing::warn!(user = %user, error = %e, "cannot subscribe for a new socket");
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            e,
        ));
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
    let connection_id: Arc<str> =
        format!("{}-{}", app.gateway_id, membership.guard.socket_id()).into();
    let welcome = ServerFrame::Welcome {
        connection_id: connection_id.to_string(),
        user_id: user.to_string(),
        resumed_after: resume.start_after,
        gap: resume.gap,
        oldest_available: resume.oldest_available,
        device_id: device.as_ref().map(ToString::to_string),
    };
    let backend = nats_backend(&app, &user, device.clone(), &connection_id);
    let dialect = NativeDialect {
        protocol,
        welcome,
        ping_interval: app.cfg.ping_interval,
    };
    let session = session_for(&app, resume.start_after, backend);
    Ok(ws.on_upgrade(move |socket: WebSocket| {
        serve_socket(
            app,
            socket,
            membership,
            session,
            dialect,
            tracked,
            connection_id,
            user,
        )
    }))
}

/// Runs one session and keeps the gateway's books: the shutdown tracker, the
/// connection count, slow-consumer closes, and the user's subscription (the
/// membership's guard leaves the channel when this returns).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_socket<D: Dialect>(
    app: Arc<AppState>,
    socket: WebSocket,
    membership: Membership,
    session: Session<NatsBackend>,
    dialect: D,
    tracked: TaskTrackerToken,
    connection_id: Arc<str>,
    user: UserId,
) {
    let _tracked = tracked;
    let _guard = membership.guard;
    app.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%connection_id, user = %user, "socket open");
    let end = session::run(socket, membership.rx, membership.ctl, session, dialect).await;
    app.connections.fetch_sub(1, Ordering::Relaxed);
    if end == Some(CloseReason::SlowConsumer) {
        app.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(%connection_id, user = %user, ?end, "socket closed");
}

/// Refusals shared by every socket endpoint, in order: realtime switch, draining,
/// origin, authentication.
pub(crate) fn admit(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, ApiError> {
    if !app.cfg.realtime_enabled {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "realtime_disabled",
            "realtime delivery is switched off; poll /api/v1/notifications",
        )
        .retry_after(REALTIME_OFF_RETRY_AFTER));
    }
    if app.shutdown.is_cancelled() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "gateway is shutting down; reconnect to another instance",
        ));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(&app.cfg.allowed_origins, origin) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("origin {:?} is not allowed", origin.unwrap_or("")),
        ));
    }
    authenticate(app, headers, query)
}

/// The tracking key of a socket: its device id, or `conn-<connectionId>`.
pub(crate) fn nats_backend(
    app: &AppState,
    user: &UserId,
    device: Option<DeviceId>,
    connection_id: &Arc<str>,
) -> NatsBackend {
    NatsBackend {
        store: app.store.clone(),
        user: user.clone(),
        device_label: device.as_ref().map_or_else(
            || format!("conn-{connection_id}").into(),
            |d| d.as_str().into(),
        ),
        cursor: device.map(|d| (app.cursors.clone(), d)),
        tracking: app.tracking.clone(),
        connection_id: connection_id.clone(),
    }
}

/// Session settings shared by both protocols.
pub(crate) fn session_for(
    app: &AppState,
    start_after: u64,
    backend: NatsBackend,
) -> Session<NatsBackend> {
    Session {
        limits: SessionLimits {
            write_timeout: app.cfg.write_timeout,
            cursor_flush: app.cfg.cursor_flush_interval,
        },
        start_after,
        backend,
        shutdown: app.shutdown.clone(),
        resync: app.resync.clone(),
        stats: app.stats.clone(),
    }
}

pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        // Non-browser clients send no Origin; the token is their credential.
        None => true,
        Some(o) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(o)),
    }
}
