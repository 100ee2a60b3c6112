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

use super::dialect::{CLOSED_WITH_ERROR, SignalrDialect};
use super::stateful::{Record, Stateful, protocol_name};
use super::token;
use crate::AppState;
use crate::delivery::{Encoding, hub_frame};
use crate::http::{ApiError, refuse};
use crate::session::close_code;
use crate::ws::{
    ResumePoint, admit, nats_backend, resume_params, resume_point, serve_socket, session_for,
};

/// .NET's `HandshakeTimeout`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Socket buffers, as for `/ws` (small: clients send little).
const BUFFER: usize = 4 * 1024;

pub(crate) async fn upgrade(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let identity = admit(&app, &headers, &query)?;
    let user = identity.user_id;
    let unknown = || {
        refuse(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            "No Connection with that ID",
        )
    };
    let unavailable = |e: String| refuse(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", e);
    // With negotiate, `id` names the connection; without (skipNegotiation), a new one.
    let (connection_id, stateful): (Arc<str>, bool) = match query.get("id") {
        Some(id) => {
            let claims = token::verify(&app.auth_secret, id).ok_or_else(unknown)?;
            if claims.uid != user.as_str() {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "connection_of_another_user",
                    "the connection was negotiated for another user",
                ));
            }
            (claims.cid.into(), claims.sr)
        }
        None => (nuid::next().to_string().into(), false),
    };
    // A stateful connection that already has a record is resuming: no handshake.
    let resuming = if stateful {
        app.resumes.get(&connection_id).await.map_err(unavailable)?
    } else {
        None
    };
    let (since, device) = resume_params(&query)?;
    let ws = ws.map_err(|e| refuse(e.status(), "not_a_websocket", e.body_text()))?;
    let start = match &resuming {
        Some(record) if record.user != user.as_str() => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "connection_of_another_user",
                "the connection belongs to another user",
            ));
        }
        // A Completion is unacknowledged: numbering cannot be rebuilt; full reconnect.
        Some(record) if record.dirty || record.protocol().is_none() => return Err(unknown()),
        Some(record) => ResumePoint {
            start_after: record.seq,
            gap: false,
            oldest_available: None,
        },
        None => resume_point(&app, &user, since, device.as_ref()).await?,
    };
    let max = app.cfg.signalr_max_message;
    let ws = ws
        .read_buffer_size(BUFFER)
        .write_buffer_size(BUFFER)
        .max_write_buffer_size(1024 * 1024)
        // Frames may batch several messages; each message is checked against `max`.
        .max_message_size(max * 4)
        .max_frame_size(max * 4);
    let tracked = app.tracker.token();
    Ok(ws.on_upgrade(move |mut socket: WebSocket| async move {
        let (protocol, stateful) = match resuming {
            Some(record) => {
                let Some(protocol) = record.protocol() else {
                    return;
                };
                if !resume_sequence(&mut socket, protocol, record.acked, max).await {
                    return;
                }
                let st = Stateful::new(app.resumes.clone(), connection_id.clone(), record);
                (protocol, Some(st))
            }
            None => {
                let Some(handshake) = handshake(&mut socket, max).await else {
                    return;
                };
                let st = if stateful && handshake.version >= 2 {
                    let record = Record {
                        user: user.to_string(),
                        protocol: protocol_name(handshake.protocol).into(),
                        acked: 0,
                        seq: start.start_after,
                        dirty: false,
                    };
                    let st = Stateful::new(app.resumes.clone(), connection_id.clone(), record);
                    st.persist().await;
                    Some(st)
                } else {
                    None
                };
                (handshake.protocol, st)
            }
        };
        let membership = app.hub.join(
            user.clone(),
            Encoding::Hub(protocol),
            app.cfg.outbound_queue,
        );
        if let Err(e) = membership.guard.ready(app.cfg.subscribe_timeout).await {
            tracing::warn!(user = %user, error = %e, "cannot subscribe for a new hub connection");
            let close = ServerMessage::Close {
                error: Some(CLOSED_WITH_ERROR),
                allow_reconnect: true,
            };
            let _ = socket
                .send(hub_frame(protocol, close.encode(protocol)))
                .await;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close_code::NORMAL,
                    reason: "".into(),
                })))
                .await;
            return;
        }
        let backend = nats_backend(&app, &user, device, &connection_id);
        let session = session_for(&app, start.start_after, backend);
        let dialect = SignalrDialect {
            protocol,
            keepalive: app.cfg.signalr_keepalive,
            client_timeout: app.cfg.signalr_client_timeout,
            max_message: max,
            stateful,
        };
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
        .await;
    }))
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
    let sequence = ServerMessage::Sequence(acked + 1).encode(protocol);
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
