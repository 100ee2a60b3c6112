//! One WebSocket session of the native protocol, generic over the socket so the loop
//! is unit-tested with channel pairs and run for real over axum's WebSocket.
//!
//! The loop writes the welcome frame, then selects over: the hub's queue for this
//! socket (written in batches, each write bounded by the write timeout), frames from
//! the client (`ping`, `ack`), a keep-alive tick, the hub's close request (slow
//! consumer) and the gateway's shutdown. Every close the server initiates for a
//! client fault is preceded by an `error` frame.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use ziraai_proto::{ClientFrame, ClientFrameError, Protocol, ServerFrame};

use std::sync::Arc;
use tokio::sync::mpsc;

/// Most frames written per flush.
const WRITE_BATCH: usize = 64;
/// How long the close handshake may take before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Close codes the gateway sends (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Why the server ends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The socket's queue filled up: it cannot keep up with its events.
    SlowConsumer,
    /// The client sent bytes that are not JSON / MessagePack.
    Undecodable(String),
    /// The client sent a frame we do not accept.
    Unsupported(String),
    /// The client sent a frame larger than the limit.
    TooBig,
    /// Nothing came from the client for three keep-alive intervals.
    Idle,
    /// The gateway is shutting down.
    Shutdown,
    /// The hub dropped the socket's queue.
    Internal,
}

impl CloseReason {
    /// Close code, and the error frame (`code`, message) if the client is at fault.
    fn describe(&self) -> (u16, Option<(&'static str, String)>) {
        use close_code::*;
        match self {
            Self::SlowConsumer => (
                TRY_AGAIN_LATER,
                Some((
                    "slow_consumer",
                    "events arrived faster than this socket read them; reconnect".into(),
                )),
            ),
            Self::Undecodable(m) => (INVALID_DATA, Some(("invalid_frame", m.clone()))),
            Self::Unsupported(m) => (POLICY, Some(("unsupported_frame", m.clone()))),
            Self::TooBig => (
                TOO_BIG,
                Some(("frame_too_large", "frame exceeds the size limit".into())),
            ),
            Self::Idle => (
                GOING_AWAY,
                Some(("idle_timeout", "no data or pong from the client".into())),
            ),
            Self::Shutdown => (RESTART, None),
            Self::Internal => (INTERNAL, None),
        }
    }

    fn reason_text(&self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow consumer",
            Self::Undecodable(_) => "invalid frame",
            Self::Unsupported(_) => "unsupported frame",
            Self::TooBig => "frame too large",
            Self::Idle => "idle timeout",
            Self::Shutdown => "gateway restarting; reconnect",
            Self::Internal => "internal error",
        }
    }
}

/// Shared between a socket's session and the hub.
#[derive(Debug, Default)]
pub struct SocketCtl {
    cancel: CancellationToken,
    reason: OnceLock<CloseReason>,
    acked: AtomicU64,
}

impl SocketCtl {
    /// Asks the session to close; returns false if a close was already asked.
    pub fn close(&self, reason: CloseReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.cancel.cancel();
        first
    }

    /// Highest sequence the client acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

/// Per-session timing limits.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub write_timeout: Duration,
    pub ping_interval: Duration,
}

/// How a socket error is classified; lets the loop map oversized frames to 1009.
pub trait SocketError: std::fmt::Display {
    fn is_too_big(&self) -> bool;
}

impl SocketError for axum::Error {
    fn is_too_big(&self) -> bool {
        // axum wraps tungstenite's error; its text is the stable part of its API here.
        let text = self.to_string();
        text.contains("Space limit exceeded")
            || text.contains("too long")
            || text.contains("too big")
    }
}

fn encode(frame: &ServerFrame, protocol: Protocol) -> Message {
    match protocol {
        Protocol::Json => Message::Text(frame.to_json().into()),
        Protocol::MsgPack => Message::Binary(frame.to_msgpack().into()),
    }
}

/// Runs a session until the client leaves or the server closes it; returns why it ended
/// (`None` when the client closed or vanished).
pub async fn run<S, E>(
    mut socket: S,
    mut queue: mpsc::Receiver<Message>,
    ctl: Arc<SocketCtl>,
    protocol: Protocol,
    welcome: ServerFrame,
    limits: SessionLimits,
    shutdown: CancellationToken,
) -> Option<CloseReason>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    E: SocketError,
{
    if !write(
        &mut socket,
        encode(&welcome, protocol),
        limits.write_timeout,
    )
    .await
    {
        return None;
    }
    let mut last_heard = Instant::now();
    let mut ticker =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    let reason = loop {
        tokio::select! {
            biased;
            _ = ctl.cancel.cancelled() => {
                break ctl.reason.get().cloned().unwrap_or(CloseReason::Internal);
            }
            _ = shutdown.cancelled() => break CloseReason::Shutdown,
            queued = queue.recv() => {
                let Some(first) = queued else { break CloseReason::Internal };
                let batch = async {
                    socket.feed(first).await?;
                    for _ in 1..WRITE_BATCH {
                        match queue.try_recv() {
                            Ok(m) => socket.feed(m).await?,
                            Err(_) => break,
                        }
                    }
                    socket.flush().await
                };
                match tokio::time::timeout(limits.write_timeout, batch).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "write failed");
                        return None;
                    }
                    Err(_) => {
                        tracing::info!("write timed out; dropping socket");
                        return Some(CloseReason::SlowConsumer);
                    }
                }
            }
            incoming = socket.next() => {
                last_heard = Instant::now();
                let frame = match incoming {
                    None => return None,
                    Some(Err(e)) if e.is_too_big() => break CloseReason::TooBig,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "read failed");
                        return None;
                    }
                    Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(t))) => ClientFrame::from_json(t.as_str()),
                    Some(Ok(Message::Binary(b))) => ClientFrame::from_msgpack(&b),
                };
                match frame {
                    Ok(ClientFrame::Ping) => {
                        if !write(&mut socket, encode(&ServerFrame::Pong, protocol), limits.write_timeout).await {
                            return None;
                        }
                    }
                    Ok(ClientFrame::Ack { seq }) => {
                        ctl.acked.fetch_max(seq, Ordering::Relaxed);
                    }
                    Err(ClientFrameError::Undecodable(what)) => {
                        break CloseReason::Undecodable(format!("frame is not valid {what}"));
                    }
                    Err(ClientFrameError::Unsupported(detail)) => {
                        break CloseReason::Unsupported(format!(
                            "expected {{\"type\":\"ping\"}} or {{\"type\":\"ack\",\"seq\":n}}: {detail}"
                        ));
                    }
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() >= limits.ping_interval * 3 {
                    break CloseReason::Idle;
                }
                if !write(&mut socket, Message::Ping(Default::default()), limits.write_timeout).await {
                    return None;
                }
            }
        }
    };
    close(&mut socket, &reason, protocol, limits.write_timeout).await;
    Some(reason)
}

/// Writes one frame within `timeout`; false if the socket is unusable.
async fn write<S, E>(socket: &mut S, msg: Message, timeout: Duration) -> bool
where
    S: Sink<Message, Error = E> + Unpin,
{
    matches!(
        tokio::time::timeout(timeout, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Sends the error frame (if any) and the close frame, then lets the client answer.
async fn close<S, E>(socket: &mut S, reason: &CloseReason, protocol: Protocol, timeout: Duration)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
{
    let (code, error) = reason.describe();
    let send = async {
        if let Some((code, message)) = error {
            let frame = ServerFrame::Error {
                code: code.into(),
                message,
            };
            socket.feed(encode(&frame, protocol)).await?;
        }
        socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.reason_text().into(),
            })))
            .await
    };
    if !matches!(tokio::time::timeout(timeout, send).await, Ok(Ok(()))) {
        return;
    }
    // Read until the client's close so the TCP close does not race our last frames.
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = socket.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
