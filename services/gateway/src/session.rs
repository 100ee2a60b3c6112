//! One WebSocket session of the native protocol, generic over the socket so the loop
//! is unit-tested with channel pairs and run for real over axum's WebSocket.
//!
//! A session writes the welcome frame, replays the user's stored events after its
//! start position, then goes live: events from the hub's queue are sent in order,
//! repeats (sequence at or below the last sent) are dropped, and a gap (the event's
//! `Nats-Last-Sequence` above the last sent) is filled from the stream first. The loop
//! (in `conn`) also answers pings, applies acks to the device cursor, keeps the
//! connection alive, and closes on the hub's request or the gateway's shutdown.
//! Every close the server initiates for a client fault is preceded by an `error` frame.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use ziraai_proto::{Protocol, ServerFrame};

use crate::delivery::{Event, Stats};
use crate::tracking::TrackKind;

mod conn;

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
    /// The stream could not be read to replay or fill a gap; reconnect to resume.
    Unavailable,
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
            Self::Unavailable => (
                TRY_AGAIN_LATER,
                Some((
                    "unavailable",
                    "the event log cannot be read right now; reconnect to resume".into(),
                )),
            ),
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
            Self::Unavailable => "event log unavailable; reconnect",
        }
    }
}

/// Shared between a socket's session and the hub.
#[derive(Debug, Default)]
pub struct SocketCtl {
    cancel: CancellationToken,
    reason: OnceLock<CloseReason>,
    acked: AtomicU64,
    /// Set while the session reads from the stream (replay, gap fill): a full queue
    /// then means "catch up again afterwards", not "too slow".
    replaying: AtomicBool,
    lagged: AtomicBool,
    lag: Notify,
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

    /// The hub could not queue a live event for this socket. While the session
    /// replays from the stream that is expected (it fetches what it missed from the
    /// stream afterwards); otherwise the socket is too slow and is closed.
    pub fn queue_full(&self) {
        if self.replaying.load(Ordering::SeqCst) {
            self.lagged.store(true, Ordering::SeqCst);
            self.lag.notify_one();
        } else {
            self.close(CloseReason::SlowConsumer);
        }
    }
}

/// Per-session timing limits.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    /// Shortest interval between two cursor writes.
    pub cursor_flush: Duration,
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

/// What a session needs from the outside world besides its socket: the user's stored
/// events, the device cursor and delivery tracking. The gateway implements it over
/// NATS; unit tests over memory.
pub trait Backend: Send + Sync {
    /// The user's first stored event with a sequence above `after` (`None` at the end).
    fn next_after(&self, after: u64) -> impl Future<Output = Result<Option<Event>, String>> + Send;
    /// Whether the socket has a device cursor to save.
    fn has_cursor(&self) -> bool;
    /// Saves the device cursor (errors are logged by the implementation).
    fn save_cursor(&self, seq: u64) -> impl Future<Output = ()> + Send;
    /// Records a tracking event without waiting.
    fn track(&self, kind: TrackKind, seq: u64);
}

/// Everything a session is started with, besides the socket and its queue.
pub struct Session<B> {
    pub protocol: Protocol,
    pub welcome: ServerFrame,
    pub limits: SessionLimits,
    /// Replay every stored event after this sequence before going live.
    pub start_after: u64,
    pub backend: B,
    pub shutdown: CancellationToken,
    /// Bumped when the gateway's NATS connection came back: re-sync from the stream.
    pub resync: watch::Receiver<u64>,
    pub stats: Arc<Stats>,
}

pub(crate) fn encode(frame: &ServerFrame, protocol: Protocol) -> Message {
    match protocol {
        Protocol::Json => Message::Text(frame.to_json().into()),
        Protocol::MsgPack => Message::Binary(frame.to_msgpack().into()),
    }
}

/// How serving a socket stopped.
pub(crate) enum Stop {
    /// The server closes: error frame (if any) and close frame.
    Close(CloseReason),
    /// The socket is gone or unusable; nothing more can be written.
    Gone,
}

/// Runs a session until the client leaves or the server closes it; returns why the
/// server closed it (`None` when the client closed or vanished).
pub async fn run<S, E, B>(
    socket: S,
    queue: mpsc::Receiver<Arc<Event>>,
    ctl: Arc<SocketCtl>,
    session: Session<B>,
) -> Option<CloseReason>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    E: SocketError,
    B: Backend,
{
    let protocol = session.protocol;
    let write_timeout = session.limits.write_timeout;
    let mut conn = conn::Conn::new(socket, queue, ctl, session);
    let stop = conn.serve().await;
    conn.save_cursor_if_dirty().await;
    match stop {
        Stop::Gone => None,
        Stop::Close(reason) => {
            close(conn.socket(), &reason, protocol, write_timeout).await;
            Some(reason)
        }
    }
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
