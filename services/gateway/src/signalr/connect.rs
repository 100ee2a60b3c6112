//! The hub's WebSocket (`GET /hubs/plantanalysis[?id=<connectionToken>]`): the same
//! admission and resume rules as `/ws`, then the hub handshake (or, for a stateful
//! connection resuming, the exchange of `Sequence` messages), then the session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use ziraai_proto::signalr::{
    ClientMessage, Handshake, HandshakeError, HubProtocol, ServerMessage, handshake_response,
    parse_handshake, parse_messages,
};
use ziraai_proto::{DeviceId, UserId};

use super::dialect::{CLOSED_WITH_ERROR, SignalrDialect};
use super::stateful::{Record, Stateful, protocol_name};
use super::token;
use crate::AppState;
use crate::error::{ApiError, handshake_timeout, refuse, unavailable};
use crate::event::{Encoding, hub_frame};
use crate::session::close_code;
use crate::socket::{Admitted, HANDSHAKE_DEADLINE, admit, resume_params, resume_point, sized};

/// .NET's `HandshakeTimeout`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames may batch several messages; each message is checked against the limit.
const MESSAGES_PER_FRAME: usize = 4;

pub(crate) async fn upgrade(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let identity = admit(&app, &headers, &query)?;
    let user = identity.user_id.clone();
    let (connection_id, stateful) = identify_connection(&app, &user, query.get("id"))?;
    let (since, device) = resume_params(&query)?;
    let ws = ws.map_err(|e| refuse(e.status(), "not_a_websocket", e.body_text()))?;
    let max_message = app.cfg.signalr_max_message;
    let ws = sized(ws, max_message * MESSAGES_PER_FRAME);
    // One limit entry per socket, not per connection token: a negotiated token is
    // valid for an hour, and sockets sharing it must each count (and be evictable).
    let entry = format!("{connection_id}-{}", nuid::next());
    // What the handshake asks of NATS, bounded like `/ws` (503 `handshake_timeout`).
    let steps = async {
        let resuming = load_resume_record(&app, &connection_id, stateful).await?;
        let start_after =
            choose_start(&app, &user, resuming.as_ref(), since, device.as_ref()).await?;
        let ticket = app.conn_limit.admit(&user, &entry).await?;
        Ok::<_, ApiError>((resuming, start_after, ticket))
    };
    let (resuming, start_after, ticket) = tokio::time::timeout(HANDSHAKE_DEADLINE, steps)
        .await
        .map_err(|_| handshake_timeout(HANDSHAKE_DEADLINE))??;
    // Boxed: axum's upgrade task keeps its callback for the socket's whole life.
    let accepted = Box::new(Accepted {
        admitted: Admitted::new(app, user, device)?.until_expiry_of(&identity),
        connection_id,
        stateful,
        resuming,
        start_after,
        max_message,
        ticket,
    });
    Ok(ws.on_upgrade(move |socket: WebSocket| accepted.serve(socket)))
}

fn unknown_connection() -> ApiError {
    refuse(
        StatusCode::NOT_FOUND,
        "unknown_connection",
        "No Connection with that ID",
    )
}

fn another_users_connection(detail: &str) -> ApiError {
    refuse(StatusCode::FORBIDDEN, "connection_of_another_user", detail)
}

/// With negotiate, `id` (the connection token) names the connection and says whether
/// it is stateful; without (skipNegotiation), the connection is new and stateless.
fn identify_connection(
    app: &AppState,
    user: &UserId,
    id: Option<&String>,
) -> Result<(Arc<str>, bool), ApiError> {
    let Some(id) = id else {
        return Ok((nuid::next().to_string().into(), false));
    };
    let claims = token::verify(&app.auth_secret, id).ok_or_else(unknown_connection)?;
    if claims.uid != user.as_str() {
        return Err(another_users_connection(
            "the connection was negotiated for another user",
        ));
    }
    Ok((claims.cid.into(), claims.sr))
}

/// A stateful connection that already has a record is resuming (no handshake).
async fn load_resume_record(
    app: &AppState,
    connection_id: &str,
    stateful: bool,
) -> Result<Option<Record>, ApiError> {
    if !stateful {
        return Ok(None);
    }
    app.resumes
        .get(connection_id)
        .await
        .map_err(|e| unavailable(&e))
}

/// Where the session starts: after the record's last acknowledged event when
/// resuming, else the same resume point as `/ws`.
async fn choose_start(
    app: &AppState,
    user: &UserId,
    resuming: Option<&Record>,
    since: Option<u64>,
    device: Option<&DeviceId>,
) -> Result<u64, ApiError> {
    match resuming {
        Some(record) if record.user != user.as_str() => Err(another_users_connection(
            "the connection belongs to another user",
        )),
        // A Completion is unacknowledged: numbering cannot be rebuilt; full reconnect.
        Some(record) if record.dirty || record.protocol().is_none() => Err(unknown_connection()),
        // Never past the stream's end, so no cursor derived from it can be either.
        Some(record) => {
            let bounds = app.store.bounds().await.map_err(|e| unavailable(&e))?;
            Ok(record.seq.min(bounds.last_seq))
        }
        None => Ok(resume_point(app, user, since, device).await?.start_after),
    }
}

/// A hub connection admitted before the upgrade; [`Accepted::serve`] runs after it.
struct Accepted {
    admitted: Admitted,
    connection_id: Arc<str>,
    /// Negotiated with `useStatefulReconnect`.
    stateful: bool,
    resuming: Option<Record>,
    start_after: u64,
    max_message: usize,
    /// The socket's place in the per-user limit (taken before the upgrade).
    ticket: crate::conn_limit::Ticket,
}

impl Accepted {
    /// After the upgrade: handshake (or resume), join the user's channel, serve.
    ///
    /// The opening runs in its own boxed future, freed once the session starts: its
    /// state (this value, the socket, the handshake) would otherwise stay in every
    /// hub socket's task beside the session.
    fn serve(self: Box<Self>, socket: WebSocket) -> impl Future<Output = ()> + Send {
        let opening = Box::pin(self.open_and_start(socket));
        async move {
            if let Some(session) = opening.await {
                session.await;
            }
        }
    }

    /// The handshake (or resume) and the join; `None` when the socket ended, was
    /// refused, or could not be subscribed (told so).
    async fn open_and_start(
        mut self: Box<Self>,
        mut socket: WebSocket,
    ) -> Option<impl Future<Output = ()> + Send + use<>> {
        let (protocol, stateful) = self.open(&mut socket).await?;
        let cfg = &self.admitted.app().cfg;
        let dialect = SignalrDialect {
            protocol,
            keepalive: cfg.signalr_keepalive,
            client_timeout: cfg.signalr_client_timeout,
            max_message: self.max_message,
            stateful,
        };
        let Self {
            admitted,
            connection_id,
            start_after,
            ticket,
            ..
        } = *self;
        let start = admitted
            .start(Encoding::Hub(protocol), Some(connection_id), start_after)
            .await;
        let Ok(start) = start else {
            close_unavailable(&mut socket, protocol).await;
            return None;
        };
        Some(start.with_ticket(ticket).serve(socket, dialect))
    }

    /// The hub handshake for a new connection (with a stateful record when version 2
    /// was negotiated), or the `Sequence` exchange for a resuming one; `None` when the
    /// socket ended or was refused.
    async fn open(&mut self, socket: &mut WebSocket) -> Option<(HubProtocol, Option<Stateful>)> {
        let resumes = &self.admitted.app().resumes;
        if let Some(mut record) = self.resuming.take() {
            // The start was clamped to the stream's end; the acks it maps must be too.
            record.seq = self.start_after;
            let protocol = record.protocol()?;
            if !resume_sequence(socket, protocol, record.acked, self.max_message).await {
                return None;
            }
            let st = Stateful::new(resumes.clone(), self.connection_id.clone(), record);
            return Some((protocol, Some(st)));
        }
        let handshake = handshake(socket, self.max_message).await?;
        if !(self.stateful && handshake.version >= 2) {
            return Some((handshake.protocol, None));
        }
        let record = Record {
            user: self.admitted.user().to_string(),
            protocol: protocol_name(handshake.protocol).into(),
            acked: 0,
            seq: self.start_after,
            dirty: false,
        };
        let st = Stateful::new(resumes.clone(), self.connection_id.clone(), record);
        st.persist().await;
        Some((handshake.protocol, Some(st)))
    }
}

/// The user's subscription could not be made: a hub Close that allows reconnecting,
/// then the WebSocket close.
async fn close_unavailable(socket: &mut WebSocket, protocol: HubProtocol) {
    let close = ServerMessage::Close {
        error: Some(CLOSED_WITH_ERROR),
        allow_reconnect: true,
    };
    if socket
        .send(hub_frame(protocol, close.encode(protocol)))
        .await
        .is_ok()
    {
        let close = Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        }));
        if let Err(e) = socket.send(close).await {
            tracing::debug!(error = %e, "close after a failed subscribe not sent");
        }
    }
}

/// Resume of a stateful connection: the client's first message is `Sequence`; the
/// server answers with its own (the first unacknowledged number) before anything else.
async fn resume_sequence(
    socket: &mut WebSocket,
    protocol: HubProtocol,
    acked: u64,
    max: usize,
) -> bool {
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) => return Some(t.as_bytes().to_vec()),
                Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await;
    let Ok(Some(bytes)) = first else { return false };
    let parsed = parse_messages(protocol, &bytes, max);
    if !matches!(parsed.as_deref(), Ok([ClientMessage::Sequence(_), ..])) {
        tracing::debug!("resume without a leading Sequence message; closing");
        return false;
    }
    let sequence = ServerMessage::Sequence(acked.saturating_add(1)).encode(protocol);
    socket.send(hub_frame(protocol, sequence)).await.is_ok()
}

/// Reads the handshake request (JSON + 0x1E, possibly over several frames) within
/// [`HANDSHAKE_TIMEOUT`] and answers it; `None` when the connection ended instead.
async fn handshake(socket: &mut WebSocket, max: usize) -> Option<Handshake> {
    let mut buf = Vec::new();
    let read = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(t))) => buf.extend_from_slice(t.as_bytes()),
                Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
            match parse_handshake(&buf) {
                Err(HandshakeError::Incomplete) if buf.len() <= max => continue,
                Err(HandshakeError::Incomplete) => return Some(Err(HandshakeError::Canceled)),
                other => return Some(other),
            }
        }
    };
    let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read).await {
        Ok(None) => return None,
        Ok(Some(r)) => r,
        Err(_) => Err(HandshakeError::Canceled),
    };
    match result {
        Ok(h) => {
            // .NET switches to the chosen format before answering: binary for MessagePack.
            let reply = hub_frame(h.protocol, handshake_response(None));
            socket.send(reply).await.ok()?;
            Some(h)
        }
        Err(e) => {
            tracing::debug!(error = %e, "hub handshake refused");
            let text = String::from_utf8_lossy(&handshake_response(Some(&e))).into_owned();
            let _ = socket.send(Message::Text(text.into())).await;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::NORMAL,
                    reason: "".into(),
                })))
                .await;
            None
        }
    }
}

#[cfg(test)]
pub(super) fn serve_future_size() -> usize {
    fn ret<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }
    ret(|a: Box<Accepted>, s: WebSocket| a.serve(s))
}
