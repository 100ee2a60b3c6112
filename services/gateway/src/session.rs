//! One WebSocket session, generic over the socket (unit-tested with channel pairs, run
//! for real over axum's WebSocket) and over the wire dialect (the native protocol, or
//! the SignalR hub protocol).
//!
//! A session greets the client, replays the user's stored events after its start
//! position, then goes live: events from the hub's queue are sent in order, repeats
//! (sequence at or below the last sent) are dropped, and a gap (the event's
//! `Nats-Last-Sequence` above the last sent) is filled from the stream first. The loop
//! (in `conn`) also answers the client, applies acks to the device cursor, keeps the
//! connection alive, and closes on the hub's request or the gateway's shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::event::{Encoding, Event, Stats};
use crate::tracking::TrackKind;

mod conn;
pub mod native;
mod rate;
pub mod refresh;

pub use native::close_code;
pub use rate::FrameLimit;

/// How long the close handshake may take before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

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
    /// The socket's token expired (its `exp` plus the leeway passed).
    TokenExpired,
    /// A token sent on the socket (native `auth` frame) was refused: its auth error code.
    AuthRefused { code: &'static str, message: String },
    /// The user opened more connections than `ZIRAAI_MAX_CONNECTIONS_PER_USER`; this,
    /// their oldest, was evicted.
    ConnectionLimit,
    /// The client sent frames faster than its allowance (`rate_limited`, 1008).
    RateLimited,
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
    /// The close frame the client sent, if it closed: its code and reason (for the
    /// connection's close log line).
    client_close: OnceLock<(u16, String)>,
}

impl SocketCtl {
    /// The client's close frame (code, reason), when the client closed with one.
    pub fn client_close(&self) -> Option<&(u16, String)> {
        self.client_close.get()
    }

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

/// Per-session limits.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub write_timeout: Duration,
    /// Shortest interval between two cursor writes.
    pub cursor_flush: Duration,
    /// Client frames allowed per socket.
    pub frames: FrameLimit,
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
    /// Saves the device cursor; false when it could not (logged by the
    /// implementation): the session keeps it to write again (a leader election of the
    /// bucket's stream fails writes for seconds; a dropped write would leave the device
    /// resuming from an older cursor).
    fn save_cursor(&self, seq: u64) -> impl Future<Output = bool> + Send;
    /// Records a tracking event without waiting.
    fn track(&self, kind: TrackKind, seq: u64);
    /// The device id (or `conn-<connectionId>`) in `notify.ack` spans.
    fn device_label(&self) -> &str {
        ""
    }
}

/// How a dialect keeps a connection alive.
#[derive(Debug, Clone)]
pub struct Keepalive {
    /// How often the loop checks.
    pub tick: Duration,
    /// Send `ping` when nothing was sent for this long (zero: at every tick).
    pub ping_when_idle: Duration,
    /// Close ([`CloseReason::Idle`]) when nothing was heard for this long.
    pub heard_timeout: Duration,
    pub ping: Message,
}

/// What the session does with one client message.
#[derive(Debug)]
pub enum Inbound {
    /// Write this back.
    Reply(Message),
    /// The client acknowledged every event up to this sequence.
    Ack(u64),
    /// End the session for this reason.
    Close(CloseReason),
    /// The client ends the session.
    Gone,
    /// The client presented a fresh token: the socket now closes at this instant.
    Expiry(tokio::time::Instant),
}

/// A wire protocol spoken over the socket.
pub trait Dialect: Send {
    /// Written before the replay starts (the native welcome frame).
    fn greeting(&self) -> Option<Message>;
    /// How this socket's events are encoded (shared per gateway, see [`Event::encoded`]).
    fn encoding(&self) -> Encoding;
    /// Interprets one text or binary message from the client.
    fn inbound(&mut self, msg: &Message) -> impl Future<Output = Vec<Inbound>> + Send;
    /// What one client frame costs against the frame allowance: the messages it
    /// carries (a SignalR frame may batch many), at least one.
    fn cost(&self, _msg: &Message) -> u32 {
        1
    }
    /// An event with this sequence was just written (dialects that number messages).
    fn sent_event(&mut self, _seq: u64) {}
    fn keepalive(&self) -> Keepalive;
    /// The server is about to end the session (before [`Self::farewell`] is written):
    /// a dialect whose connections can be resumed makes this one unresumable first.
    fn ending(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The messages ending the session for `reason`, the WebSocket close frame last.
    fn farewell(&self, reason: &CloseReason) -> Vec<Message>;
    /// Whether written events count as acknowledged once the client is heard from
    /// again (clients that send no acks of their own).
    fn acks_on_write(&self) -> bool;
}

/// Everything a session is started with, besides the socket, its queue and dialect.
pub struct Session<B> {
    pub limits: SessionLimits,
    /// Replay every stored event after this sequence before going live.
    pub start_after: u64,
    pub backend: B,
    pub shutdown: CancellationToken,
    pub stats: Arc<Stats>,
    /// When the socket's token expires (its `exp` plus the leeway); `None`: never.
    pub expires: Option<tokio::time::Instant>,
}

/// How serving a socket stopped.
pub(crate) enum Stop {
    /// The server closes: the dialect's farewell.
    Close(CloseReason),
    /// The socket is gone or unusable; nothing more can be written.
    Gone,
}

/// Runs a session until the client leaves or the server closes it; returns why the
/// server closed it (`None` when the client closed or vanished).
///
/// The connection state is built before the future starts and used in place: an
/// `async fn` taking these arguments would keep them in its state beside the
/// connection they are moved into, doubling what every idle socket holds.
pub fn run<S, E, B, D>(
    socket: S,
    queue: mpsc::Receiver<Arc<Event>>,
    ctl: Arc<SocketCtl>,
    session: Session<B>,
    dialect: D,
) -> impl Future<Output = Option<CloseReason>>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    E: SocketError,
    B: Backend,
    D: Dialect,
{
    let write_timeout = session.limits.write_timeout;
    let mut conn = conn::Conn::new(socket, queue, ctl, session, dialect);
    async move {
        let stop = conn.serve().await;
        conn.save_cursor_if_dirty().await;
        match stop {
            Stop::Gone => None,
            Stop::Close(reason) => {
                // Boxed: runs once, at the end; inline it would add to every socket.
                Box::pin(conn.dialect_mut().ending()).await;
                let farewell = conn.dialect().farewell(&reason);
                Box::pin(close(conn.socket(), farewell, write_timeout)).await;
                Some(reason)
            }
        }
    }
}

/// Writes the farewell messages, then lets the client answer the close.
pub(crate) async fn close<S, E>(socket: &mut S, farewell: Vec<Message>, timeout: Duration)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
{
    let send = async {
        for m in farewell {
            socket.feed(m).await?;
        }
        socket.flush().await
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

/// The size of a connection's state (see `sizes_tests`).
#[cfg(test)]
pub(crate) fn conn_size<S, B, D>() -> usize {
    std::mem::size_of::<conn::Conn<S, B, D>>()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "session_write_acks_tests.rs"]
mod write_acks_tests;

#[cfg(test)]
#[path = "session_expiry_tests.rs"]
mod expiry_tests;

#[cfg(test)]
#[path = "session_cursor_tests.rs"]
mod cursor_tests;
