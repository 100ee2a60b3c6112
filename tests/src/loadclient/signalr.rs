//! The SignalR load client, as the official JS client configured per README
//! (`?deviceId=` on the hub URL, `withAutomaticReconnect`, `withStatefulReconnect`):
//!
//! * **start**: `POST …/negotiate?deviceId=D&negotiateVersion=1&useStatefulReconnect=true`,
//!   the WebSocket `…?id=<connectionToken>&deviceId=D`, the handshake (version 2 when
//!   stateful reconnect was granted), then one Ping;
//! * **receiving**: every Invocation is one delivery (`seq` is [`NO_SEQ`]: the hub
//!   carries no sequence); tracked messages are numbered 1, 2, 3… and acknowledged
//!   with one coalesced `Ack` about [`ACK_DELAY`] after the first unacknowledged one
//!   (the JS client's timer); a Ping goes out when nothing was sent for
//!   [`KEEPALIVE`]; a server silent for [`SERVER_TIMEOUT`] counts as a dropped socket;
//! * **socket dropped** (no hub Close): one stateful resume (after the jittered pause,
//!   under 100 ms the first time; the official client does not wait), same token,
//!   leading `Sequence`; the server's `Sequence{S}` renumbers what follows and
//!   messages at or below the last one processed are dropped (so a resume repeats
//!   nothing); if the resume fails, a full start;
//! * **hub Close** with `allowReconnect` (gateway restart, token expiry): the connection
//!   is over, a full start after the backoff pause resumes from the device cursor
//!   (stateful acks and the gateway's write-then-heard rule move it), so events
//!   delivered in the last second or so before the close may arrive again: readers
//!   drop repeats by `analysis_id`. Without `allowReconnect` (the per-user limit
//!   evicted it) the client stops, as the official one does.

use std::pin::pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use ziraai_proto::signalr::ServerMessage;

use super::conn::{self, ConnectError, Ws};
use super::frames::{self, Hub};
use super::native::End;
use super::{Backoff, CLOSE_TIMEOUT, CONNECT_TIMEOUT, ClientConfig, NO_SEQ, Reporter, unix_ns};

/// The hub path.
const HUB: &str = ziraai_gateway::signalr::HUB_PATH;
/// The JS client's Ack timer.
pub(super) const ACK_DELAY: Duration = Duration::from_secs(1);
/// The JS client's `keepAliveIntervalInMilliseconds`.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);
/// The JS client's `serverTimeoutInMilliseconds`.
pub(super) const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

/// A hub connection as the client knows it, across sockets when it resumes.
struct Connection {
    /// `connectionToken`: resumes present it again.
    token: String,
    /// Negotiated stateful reconnect (numbered messages, Acks, resumes).
    stateful: bool,
    /// Number of the last tracked message processed.
    received: u64,
}

/// An open socket of a connection: the number the next tracked message gets, and the
/// hub messages that came with the handshake (or the resume's `Sequence`).
struct Opened {
    ws: Ws,
    next: u64,
    pending: Vec<Hub>,
}

pub(super) async fn run(cfg: ClientConfig, report: Reporter, cancel: CancellationToken) {
    let msgpack = cfg.protocol.is_msgpack();
    let mut backoff = Backoff::new(report.client);
    let mut connections = 0u64;
    // A stateful connection whose socket dropped: resumed once before a full start.
    let mut resumable: Option<Connection> = None;
    loop {
        let attempt = async {
            if let Some(c) = resumable.take() {
                match resume(&cfg, msgpack, &c).await {
                    Ok(opened) => return Ok((c, opened)),
                    Err(e) => report.disconnected(None, format!("resume failed: {}", e.reason)),
                }
            }
            start(&cfg, msgpack).await
        };
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            // Boxed: the handshake's state lives on the heap only while connecting.
            r = Box::pin(attempt) => r,
        };
        let end = match opened {
            Ok((mut c, opened)) => {
                report.connected(connections > 0);
                connections += 1;
                backoff.reset();
                let mut session = Session {
                    msgpack,
                    report: &report,
                    conn: &mut c,
                    next: opened.next,
                    ack_due: None,
                };
                let Some((end, resume)) = session.serve(opened.ws, opened.pending, &cancel).await
                else {
                    return;
                };
                if resume && c.stateful {
                    resumable = Some(c);
                }
                end
            }
            Err(e) => End::lost(e.reason),
        };
        report.disconnected(end.code, end.reason);
        if !(cfg.reconnect && end.retry) {
            return;
        }
        // The official client resumes a dropped socket at once; the jittered pause
        // (under 100 ms after a connection that worked) spreads a storm of resumes.
        if !backoff.pause(&cancel).await {
            return;
        }
    }
}

/// `?id=<token>&deviceId=<device>` of the hub socket.
fn socket_path(cfg: &ClientConfig, token: &str) -> String {
    format!("{HUB}?id={token}&deviceId={}", cfg.device)
}

/// A new connection: negotiate, socket, handshake, first Ping.
async fn start(cfg: &ClientConfig, msgpack: bool) -> Result<(Connection, Opened), ConnectError> {
    let path = format!(
        "{HUB}/negotiate?deviceId={}&negotiateVersion=1&useStatefulReconnect=true",
        cfg.device
    );
    let (status, body) = conn::post(cfg, &path).await?;
    if status != 200 {
        return Err(ConnectError::other(format!(
            "negotiate: http {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ConnectError::other(format!("negotiate: not JSON: {e}")))?;
    let token = answer["connectionToken"]
        .as_str()
        .ok_or_else(|| ConnectError::other(format!("negotiate: no connectionToken in {answer}")))?
        .to_owned();
    let stateful = answer["useStatefulReconnect"] == true;
    let mut ws = conn::websocket(cfg, &socket_path(cfg, &token), None).await?;
    let version = if stateful { 2 } else { 1 };
    send(&mut ws, frames::handshake_request(msgpack, version)).await?;
    let first = first_message(&mut ws).await?;
    let rest = frames::handshake_response(&first).map_err(ConnectError::other)?;
    let pending = frames::hub(msgpack, rest).map_err(ConnectError::other)?;
    // The JS client pings once right after the handshake.
    send(&mut ws, frames::hub_message(msgpack, &ServerMessage::Ping)).await?;
    let c = Connection {
        token,
        stateful,
        received: 0,
    };
    Ok((
        c,
        Opened {
            ws,
            next: 1,
            pending,
        },
    ))
}

/// A stateful resume of `c`: same token, `Sequence{1}` (this client sends no tracked
/// messages), and the server's `Sequence{S}` first.
async fn resume(cfg: &ClientConfig, msgpack: bool, c: &Connection) -> Result<Opened, ConnectError> {
    let mut ws = conn::websocket(cfg, &socket_path(cfg, &c.token), None).await?;
    send(
        &mut ws,
        frames::hub_message(msgpack, &ServerMessage::Sequence(1)),
    )
    .await?;
    let first = first_message(&mut ws).await?;
    let mut pending = frames::hub(msgpack, &first).map_err(ConnectError::other)?;
    let next = match pending.first() {
        Some(Hub::Sequence(s)) if *s <= c.received.saturating_add(1) => *s,
        Some(Hub::Sequence(s)) => {
            return Err(ConnectError::other(format!(
                "Sequence {s} beyond the {} messages received",
                c.received
            )));
        }
        other => {
            return Err(ConnectError::other(format!(
                "resume answered {other:?} instead of a Sequence"
            )));
        }
    };
    pending.remove(0);
    Ok(Opened { ws, next, pending })
}

async fn send(ws: &mut Ws, m: Message) -> Result<(), ConnectError> {
    ws.send(m)
        .await
        .map_err(|e| ConnectError::other(conn::describe(&e)))
}

/// The payload of the first data message, within [`CONNECT_TIMEOUT`].
async fn first_message(ws: &mut Ws) -> Result<Vec<u8>, ConnectError> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(Vec::from(t.as_bytes())),
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Close(f))) => {
                    let code = f.map(|f| u16::from(f.code));
                    return Err(format!("closed ({code:?}) before the handshake answer"));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(conn::describe(&e)),
                None => return Err("socket ended before the handshake answer".into()),
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, read).await {
        Ok(r) => r.map_err(ConnectError::other),
        Err(_) => Err(ConnectError::other("no handshake answer in time")),
    }
}

/// One socket of a connection being served.
struct Session<'a> {
    msgpack: bool,
    report: &'a Reporter,
    conn: &'a mut Connection,
    /// Number of the next tracked message.
    next: u64,
    /// When the coalesced Ack is due.
    ack_due: Option<Instant>,
}

/// What one hub message asks of the loop.
enum Step {
    Go,
    /// A hub Close: error and `allowReconnect`.
    Closed(Option<String>, bool),
}

impl Session<'_> {
    /// Serves the socket until it ends: `(how, whether to resume it)`; `None` when
    /// cancelled (after a hub Close and the WebSocket close).
    async fn serve(
        &mut self,
        mut ws: Ws,
        pending: Vec<Hub>,
        cancel: &CancellationToken,
    ) -> Option<(End, bool)> {
        let now = Instant::now();
        let (mut last_sent, mut last_heard) = (now, now);
        let mut timer = pin!(tokio::time::sleep_until(now + KEEPALIVE));
        let mut closed = None;
        for m in pending {
            if let Step::Closed(e, allow) = self.on_message(m, unix_ns()) {
                closed = Some((e, allow));
            }
        }
        loop {
            if let Some((error, allow)) = closed.take() {
                return Some((hub_closed(&mut ws, error, allow).await, false));
            }
            if let Some(due) = self.ack_due
                && due < timer.deadline()
            {
                timer.as_mut().reset(due);
            }
            let next = tokio::select! {
                _ = cancel.cancelled() => {
                    Box::pin(stop(&mut ws, self.msgpack)).await;
                    return None;
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= last_heard + SERVER_TIMEOUT {
                        let why = format!("server timeout: nothing heard for {SERVER_TIMEOUT:?}");
                        return Some((End::lost(why), true));
                    }
                    let mut out = None;
                    if self.ack_due.is_some_and(|due| due <= now) {
                        self.ack_due = None;
                        out = Some(ServerMessage::Ack(self.conn.received));
                    } else if now >= last_sent + KEEPALIVE {
                        out = Some(ServerMessage::Ping);
                    }
                    if let Some(m) = out {
                        if let Err(e) = ws.send(frames::hub_message(self.msgpack, &m)).await {
                            return Some((End::lost(conn::describe(&e)), true));
                        }
                        last_sent = now;
                    }
                    let mut deadline = (last_sent + KEEPALIVE).min(last_heard + SERVER_TIMEOUT);
                    if let Some(due) = self.ack_due {
                        deadline = deadline.min(due);
                    }
                    timer.as_mut().reset(deadline);
                    continue;
                }
                m = ws.next() => m,
            };
            last_heard = Instant::now();
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Some((End::lost(conn::describe(&e)), true)),
                None => return Some((End::lost("socket ended"), true)),
            };
            let bytes: &[u8] = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                Message::Close(f) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    let end = End {
                        code,
                        reason: format!("closed without a hub Close ({code:?})"),
                        retry: true,
                    };
                    return Some((end, true));
                }
                _ => continue,
            };
            let at = unix_ns();
            let messages = match frames::hub(self.msgpack, bytes) {
                Ok(m) => m,
                // The official client closes with an error: no resume.
                Err(e) => return Some((End::lost(e), false)),
            };
            for m in messages {
                if let Step::Closed(e, allow) = self.on_message(m, at) {
                    closed = Some((e, allow));
                    break;
                }
            }
        }
    }

    fn on_message(&mut self, m: Hub, at: u64) -> Step {
        match m {
            Hub::Invocation { analysis_id } => {
                if self.tracked() {
                    self.report.delivery(NO_SEQ, analysis_id, at);
                }
            }
            Hub::Tracked => {
                self.tracked();
            }
            Hub::Close {
                error,
                allow_reconnect,
            } => return Step::Closed(error, allow_reconnect),
            Hub::Ping | Hub::Ack(_) | Hub::Sequence(_) | Hub::Other => {}
        }
        Step::Go
    }

    /// Numbers a tracked message; false for a repeat of one already processed.
    fn tracked(&mut self) -> bool {
        if !self.conn.stateful {
            return true;
        }
        let n = self.next;
        self.next = n.saturating_add(1);
        if n <= self.conn.received {
            return false;
        }
        self.conn.received = n;
        if self.ack_due.is_none() {
            self.ack_due = Some(Instant::now() + ACK_DELAY);
        }
        true
    }
}

/// The official client's `stop()`: a hub Close, then the WebSocket close.
async fn stop(ws: &mut Ws, msgpack: bool) {
    let bye = ServerMessage::Close {
        error: None,
        allow_reconnect: false,
    };
    let bye = frames::hub_message(msgpack, &bye);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(bye)).await;
    super::native::close(ws).await;
}

/// After a hub Close: the WebSocket close code (read within [`CLOSE_TIMEOUT`]).
async fn hub_closed(ws: &mut Ws, error: Option<String>, allow: bool) -> End {
    let code = tokio::time::timeout(CLOSE_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap_or(None);
    End {
        code,
        reason: format!(
            "hub Close: {} (allowReconnect {allow})",
            error.as_deref().unwrap_or("no error")
        ),
        retry: allow,
    }
}
