//! What `/ws` and the SignalR hub share around a socket: admission, the resume
//! parameters and resume point, the socket's buffer sizes, and the session start
//! ([`Admitted::start`] → [`SocketStart::serve`]), so both endpoints open, count and
//! close their sockets the same way.
//!
//! Every refusal here is decided before the upgrade, so a refused client never gets a
//! socket (or a subscription).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::task::task_tracker::TaskTrackerToken;
use ziraai_proto::{DeviceId, UserId};

use crate::AppState;
use crate::auth::Identity;
use crate::backend::NatsBackend;
use crate::conn_limit::Ticket;
use crate::error::{ApiError, refuse, unavailable};
use crate::event::Encoding;
use crate::hub::{JoinError, LeaveGuard, Membership};
use crate::request_auth::{authenticate, check_origin};
use crate::session::{self, CloseReason, Dialect, Session, SessionLimits};

/// Socket read buffer, allocated for the socket's whole life: clients only send
/// small frames (acks, pings), and a larger one grows it as needed. (128 KiB defaults
/// cost about 133 KiB of RSS per idle socket; 4 KiB cost 3.5 KiB more than 512 B.)
const READ_BUFFER: usize = 512;
/// Socket write buffer before a flush is forced.
const WRITE_BUFFER: usize = 4 * 1024;
/// Hard cap of tungstenite's write buffer: one batch of frames at most.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// `Retry-After` of a refusal while realtime is switched off, seconds.
const REALTIME_OFF_RETRY_AFTER: u64 = 30;

/// Longest a socket's handshake may wait on NATS (resume point, subscription, the
/// per-user limit) before it is answered 503 `handshake_timeout`: shorter than a
/// client's own connect timeout (5 s in the SDKs), so a client is told to come back
/// rather than left to give up, and no handshake goes on for a client long gone
/// (each step's own bound is 2–3 s; together they could take longer).
pub(crate) const HANDSHAKE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);

/// Milliseconds of `d`, for logs.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `Retry-After` of a refusal because this process holds its maximum of sockets.
const GATEWAY_FULL_RETRY_AFTER: u64 = 5;

/// 503 `gateway_full`: this process holds `ZIRAAI_GATEWAY_MAX_CONNECTIONS` sockets.
fn gateway_full() -> ApiError {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "gateway_full",
        "this gateway holds its maximum of sockets; retry, or connect to another instance",
    )
    .retry_after(GATEWAY_FULL_RETRY_AFTER)
}

/// Refusals shared by every socket endpoint, in order: realtime switch, draining,
/// the socket cap, origin, authentication.
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
    // A cheap early answer; the place itself is reserved by [`SocketSlot::take`].
    if app.slots.load(Ordering::SeqCst) >= app.cfg.max_connections {
        app.stats.gateway_full.fetch_add(1, Ordering::Relaxed);
        return Err(gateway_full());
    }
    check_origin(
        &app.cfg.allowed_origins,
        headers.get(header::ORIGIN),
        app.env == ziraai_common::Environment::Production,
    )?;
    authenticate(app, headers, query)
}

/// Parses the `since` and `deviceId` query parameters.
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
///
/// A position beyond the stream's end (a client number, up to `u64::MAX`) starts at
/// the end: nothing is missing, so no gap.
pub(crate) async fn resume_point(
    app: &AppState,
    user: &UserId,
    since: Option<u64>,
    device: Option<&DeviceId>,
) -> Result<ResumePoint, ApiError> {
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
    let gap = after.saturating_add(1) < bounds.first_seq;
    Ok(ResumePoint {
        start_after: after.min(bounds.last_seq),
        gap,
        oldest_available: gap.then_some(bounds.first_seq),
    })
}

/// The socket's buffers, and `max_message` as the largest message and frame a client
/// may send.
pub(crate) fn sized(ws: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// An admitted client before its session starts: who it is, and its place in the
/// shutdown tracker (taken before the upgrade, so a drain waits for the handshake).
/// A place among the process's `ZIRAAI_GATEWAY_MAX_CONNECTIONS` sockets, reserved
/// atomically before the upgrade (so concurrent handshakes, or hub sockets still in
/// their handshake, cannot go past the cap) and given back when dropped: when the
/// session ends, or when the handshake fails or the upgrade never happens.
pub(crate) struct SocketSlot(Arc<AppState>);

impl SocketSlot {
    fn take(app: &Arc<AppState>) -> Result<Self, ApiError> {
        let max = app.cfg.max_connections;
        app.slots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| Self(app.clone()))
            .map_err(|_| {
                app.stats.gateway_full.fetch_add(1, Ordering::Relaxed);
                gateway_full()
            })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Admitted {
    app: Arc<AppState>,
    slot: SocketSlot,
    user: UserId,
    device: Option<DeviceId>,
    tracked: TaskTrackerToken,
    /// When the socket's token expires (`exp` plus the leeway).
    expires: Option<tokio::time::Instant>,
}

impl Admitted {
    /// Reserves the socket's place in the process cap (503 `gateway_full` when full).
    pub(crate) fn new(
        app: Arc<AppState>,
        user: UserId,
        device: Option<DeviceId>,
    ) -> Result<Self, ApiError> {
        let slot = SocketSlot::take(&app)?;
        let tracked = app.tracker.token();
        Ok(Self {
            app,
            slot,
            user,
            device,
            tracked,
            expires: None,
        })
    }

    /// The socket closes (`token_expired`) when `identity`'s token expires.
    pub(crate) fn until_expiry_of(mut self, identity: &Identity) -> Self {
        self.expires = Some(self.app.auth.deadline(identity));
        self
    }

    pub(crate) fn app(&self) -> &Arc<AppState> {
        &self.app
    }

    pub(crate) fn user(&self) -> &UserId {
        &self.user
    }

    /// Joins the user's channel and waits until its subscription is in place, then
    /// builds the session that replays after `start_after`. Without a
    /// `connection_id` (native sockets) one is made from the gateway and socket ids.
    pub(crate) async fn start(
        self,
        encoding: Encoding,
        connection_id: Option<Arc<str>>,
        start_after: u64,
    ) -> Result<SocketStart, JoinError> {
        let Self {
            app,
            slot,
            user,
            device,
            tracked,
            expires,
        } = self;
        let membership = app.hub.join(user.clone(), encoding, app.cfg.outbound_queue);
        if let Err(e) = membership.guard.ready(app.cfg.subscribe_timeout).await {
            tracing::warn!(user = %user, error = %e, "cannot subscribe for a new socket");
            return Err(e);
        }
        let connection_id = connection_id.unwrap_or_else(|| {
            format!("{}-{}", app.gateway_id, membership.guard.socket_id()).into()
        });
        let backend = NatsBackend {
            store: app.store.clone(),
            user: user.clone(),
            // The tracking key: the device id, or `conn-<connectionId>`.
            device_label: device.as_ref().map_or_else(
                || format!("conn-{connection_id}").into(),
                |d| d.as_str().into(),
            ),
            cursor: device.map(|d| (app.cursors.clone(), d)),
            tracking: app.tracking.clone(),
            connection_id: connection_id.clone(),
            stats: app.stats.clone(),
        };
        let session = Session {
            limits: SessionLimits {
                write_timeout: app.cfg.write_timeout,
                cursor_flush: app.cfg.cursor_flush_interval,
                frames: session::FrameLimit {
                    interval: app.cfg.client_frame_rate.interval(),
                    burst: app.cfg.client_frame_burst,
                },
            },
            start_after,
            backend,
            shutdown: app.shutdown.clone(),
            stats: app.stats.clone(),
            expires,
        };
        Ok(SocketStart {
            app,
            slot,
            membership,
            session,
            connection_id,
            user,
            tracked,
            ticket: None,
        })
    }
}

/// A socket ready to serve: subscribed, with its session built.
pub(crate) struct SocketStart {
    app: Arc<AppState>,
    slot: SocketSlot,
    membership: Membership,
    session: Session<NatsBackend>,
    connection_id: Arc<str>,
    user: UserId,
    tracked: TaskTrackerToken,
    /// The socket's place in the per-user limit.
    ticket: Option<Ticket>,
}

impl SocketStart {
    pub(crate) fn connection_id(&self) -> &Arc<str> {
        &self.connection_id
    }

    /// Counts this socket against the per-user limit (before the upgrade).
    pub(crate) async fn limited(mut self) -> Result<Self, ApiError> {
        let limit = self.app.conn_limit.clone();
        self.ticket = Some(limit.admit(&self.user, &self.connection_id).await?);
        Ok(self)
    }

    /// Keeps a ticket admitted before the session was started (SignalR).
    pub(crate) fn with_ticket(mut self, ticket: Ticket) -> Self {
        self.ticket = Some(ticket);
        self
    }

    /// Runs the session and keeps the gateway's books: the shutdown tracker, the
    /// connection count, slow-consumer closes, and the user's subscription (the
    /// membership's guard leaves the channel when this returns).
    ///
    /// Everything is built before the returned future starts, and the session's
    /// future is boxed at its exact size: a future that took these values as
    /// arguments would hold each of them twice (its arguments stay in its state beside
    /// what they were moved into), for as long as the socket is open.
    pub(crate) fn serve<D: Dialect + 'static>(
        self,
        socket: WebSocket,
        dialect: D,
    ) -> impl Future<Output = ()> + Send + use<D> {
        let Self {
            app,
            slot,
            membership,
            session,
            connection_id,
            user,
            tracked,
            ticket,
        } = self;
        let Membership { guard, rx, ctl } = membership;
        if let Some(t) = &ticket {
            t.attach(&ctl);
        }
        app.connections.fetch_add(1, Ordering::Relaxed);
        let open = app.stats.metrics.connections(dialect.encoding());
        open.inc();
        let protocol = crate::metrics::protocol_label(dialect.encoding());
        tracing::info!(%connection_id, user = %user, protocol, "socket open");
        let books = Books {
            app,
            _slot: slot,
            _guard: guard,
            connection_id,
            user,
            _tracked: tracked,
            _ticket: ticket,
            open,
            protocol,
            ctl: ctl.clone(),
        };
        let run = Box::pin(session::run(socket, rx, ctl, session, dialect));
        async move {
            let end = run.await;
            books.closed(end);
        }
    }
}

/// What a served socket keeps until it closes, besides its session: its places in
/// the gateway's counts, and what its close log line says.
///
/// Fields drop in order: the channel and limit places first, the tracker's token last
/// (a drain waiting on the tracker finds everything else given back).
struct Books {
    /// Leaves the user's channel when dropped.
    _guard: LeaveGuard,
    _ticket: Option<Ticket>,
    _slot: SocketSlot,
    app: Arc<AppState>,
    connection_id: Arc<str>,
    user: UserId,
    open: Gauge,
    protocol: &'static str,
    ctl: Arc<session::SocketCtl>,
    _tracked: TaskTrackerToken,
}

impl Books {
    fn closed(self, end: Option<CloseReason>) {
        let Self {
            app,
            connection_id,
            user,
            open,
            protocol,
            ctl,
            ..
        } = &self;
        open.dec();
        app.connections.fetch_sub(1, Ordering::Relaxed);
        if end == Some(CloseReason::SlowConsumer) {
            app.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        if end == Some(CloseReason::RateLimited) {
            app.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        // The code the server closed with (native codes; SignalR closes with 1000 and
        // says why in its close message), else the client's own close code and reason,
        // else 0 when the client vanished without a close frame.
        let (close_code, close_reason): (u16, &str) = match (&end, ctl.client_close()) {
            (Some(reason), _) => (reason.describe().0, reason.reason_text()),
            (None, Some((code, reason))) => (*code, reason.as_str()),
            (None, None) => (0, "client gone without a close frame"),
        };
        tracing::info!(%connection_id, user = %user, protocol, closed_by = if end.is_some() { "server" } else { "client" }, close_code, close_reason, "socket closed");
    }
}
