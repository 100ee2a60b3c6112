//! The session loop over channel pairs: every branch without a network.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use std::sync::Mutex;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziraai_proto::{Protocol, ServerFrame};

use super::*;
use crate::event::{Event, Stats};
use crate::metrics::Path;
use crate::tracking::TrackKind;

/// The user's stored events, cursor writes and tracking records, in memory.
#[derive(Default)]
pub(super) struct MemBackend {
    /// (seq, last_seq, body) of each stored event.
    pub(super) stored: Mutex<Vec<(u64, u64, Vec<u8>)>>,
    pub(super) cursor: bool,
    pub(super) saved: Mutex<Vec<u64>>,
    /// Cursor writes still to fail (a bucket without a leader).
    pub(super) failing_saves: std::sync::atomic::AtomicUsize,
    pub(super) tracked: Mutex<Vec<(TrackKind, u64)>>,
}

impl Backend for Arc<MemBackend> {
    async fn next_after(&self, after: u64) -> Result<Option<Event>, String> {
        let stored = self.stored.lock().expect("lock");
        Ok(stored
            .iter()
            .find(|(seq, _, _)| *seq > after)
            .map(|(seq, last, body)| Event::decode(*seq, *last, None, body)))
    }
    fn has_cursor(&self) -> bool {
        self.cursor
    }
    async fn save_cursor(&self, seq: u64) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let fail = self
            .failing_saves
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !fail {
            self.saved.lock().expect("lock").push(seq);
        }
        !fail
    }
    fn track(&self, kind: TrackKind, seq: u64) {
        self.tracked.lock().expect("lock").push((kind, seq));
    }
}

fn body(seq: u64) -> Vec<u8> {
    format!(r#"{{"kind":"t.e","data":{{"n":{seq}}}}}"#).into_bytes()
}

/// Stores events `seqs` (each one's last_seq is the previous) and returns them.
pub(super) fn store(backend: &MemBackend, seqs: &[u64]) -> Vec<Arc<Event>> {
    let mut stored = backend.stored.lock().expect("lock");
    let mut prev = stored.last().map_or(0, |e| e.0);
    let mut out = Vec::new();
    for &s in seqs {
        out.push(Arc::new(Event::decode(s, prev, None, &body(s))));
        stored.push((s, prev, body(s)));
        prev = s;
    }
    out
}

#[derive(Debug)]
pub(super) struct TestErr {
    too_big: bool,
}

impl std::fmt::Display for TestErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "test error (too big: {})", self.too_big)
    }
}

impl SocketError for TestErr {
    fn is_too_big(&self) -> bool {
        self.too_big
    }
}

/// A socket whose peer is the test: `inbound` feeds it, `outbound` collects writes.
pub(super) struct TestSocket {
    pub(super) inbound: mpsc::UnboundedReceiver<Result<Message, TestErr>>,
    pub(super) outbound: mpsc::UnboundedSender<Message>,
}

impl Stream for TestSocket {
    type Item = Result<Message, TestErr>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_recv(cx)
    }
}

impl Sink<Message> for TestSocket {
    type Error = TestErr;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TestErr>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), TestErr> {
        self.outbound
            .send(item)
            .map_err(|_| TestErr { too_big: false })
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TestErr>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), TestErr>> {
        Poll::Ready(Ok(()))
    }
}

pub(super) struct Peer {
    to_server: mpsc::UnboundedSender<Result<Message, TestErr>>,
    from_server: mpsc::UnboundedReceiver<Message>,
    queue: mpsc::Sender<Arc<Event>>,
    pub(super) backend: Arc<MemBackend>,
    ctl: Arc<SocketCtl>,
    pub(super) shutdown: CancellationToken,
    session: JoinHandle<Option<CloseReason>>,
    stats: Arc<Stats>,
}

pub(super) const LIMITS: SessionLimits = SessionLimits {
    write_timeout: Duration::from_secs(5),
    cursor_flush: Duration::from_secs(1),
    frames: super::FrameLimit {
        interval: Duration::from_millis(10),
        burst: 1000,
    },
};
pub(super) const PING_INTERVAL: Duration = Duration::from_secs(30);

fn start(protocol: Protocol) -> Peer {
    start_with(protocol, Arc::new(MemBackend::default()), 0)
}

pub(super) fn start_with(protocol: Protocol, backend: Arc<MemBackend>, start_after: u64) -> Peer {
    let (to_server, inbound) = mpsc::unbounded_channel();
    let (outbound, from_server) = mpsc::unbounded_channel();
    let (queue, queue_rx) = mpsc::channel(8);
    let ctl = Arc::new(SocketCtl::default());
    let shutdown = CancellationToken::new();
    let welcome = ServerFrame::Welcome {
        connection_id: "c1".into(),
        user_id: "u1".into(),
        resumed_after: start_after,
        gap: false,
        oldest_available: None,
        device_id: None,
    };
    let stats = Arc::new(Stats::default());
    let dialect = native::NativeDialect {
        protocol,
        welcome,
        ping_interval: PING_INTERVAL,
        refresh: None,
    };
    let session = Session {
        limits: LIMITS,
        start_after,
        backend: backend.clone(),
        shutdown: shutdown.clone(),
        stats: stats.clone(),
        expires: None,
    };
    let session = tokio::spawn(run(
        TestSocket { inbound, outbound },
        queue_rx,
        ctl.clone(),
        session,
        dialect,
    ));
    Peer {
        to_server,
        from_server,
        queue,
        backend,
        ctl,
        shutdown,
        session,
        stats,
    }
}

impl Peer {
    /// Events written by path (replay, live, gap fill), after every earlier write (a
    /// ping's pong comes after them).
    pub(super) async fn written(&mut self) -> (u64, u64, u64) {
        self.send(Message::Text(r#"{"type":"ping"}"#.into()));
        assert_eq!(self.frame().await, ServerFrame::Pong);
        let by = |path| self.stats.metrics.events(path);
        (by(Path::Replay), by(Path::Live), by(Path::GapFill))
    }

    pub(super) async fn next(&mut self) -> Message {
        // Longer than the keep-alive timers, which paused-time tests skip through.
        let bound = PING_INTERVAL * 4;
        tokio::time::timeout(bound, self.from_server.recv())
            .await
            .expect("a frame in time")
            .expect("session still writing")
    }

    pub(super) async fn seq(&mut self) -> u64 {
        match self.frame().await {
            ServerFrame::Event(e) => e.seq,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    pub(super) async fn frame(&mut self) -> ServerFrame {
        match self.next().await {
            Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Binary(b) => rmp_serde::from_slice(&b).expect("msgpack frame"),
            other => panic!("expected a protocol frame, got {other:?}"),
        }
    }

    pub(super) fn send(&self, m: Message) {
        self.to_server.send(Ok(m)).expect("session reading");
    }

    /// Expects an optional error frame with `code`, then a close with `close`.
    pub(super) async fn expect_close(
        mut self,
        error: Option<&str>,
        close: u16,
    ) -> Option<CloseReason> {
        if let Some(code) = error {
            match self.frame().await {
                ServerFrame::Error { code: got, .. } => assert_eq!(got, code),
                other => panic!("expected error {code}, got {other:?}"),
            }
        }
        match self.next().await {
            Message::Close(Some(f)) => assert_eq!(f.code, close),
            other => panic!("expected close {close}, got {other:?}"),
        }
        // The session lingers for the client's close; answer it.
        let _ = self.to_server.send(Ok(Message::Close(None)));
        tokio::time::timeout(Duration::from_secs(5), self.session)
            .await
            .expect("session ends")
            .expect("no panic")
    }
}

#[tokio::test]
async fn welcome_then_queued_events_then_pong_and_acks() {
    let mut p = start(Protocol::Json);
    assert!(matches!(p.frame().await, ServerFrame::Welcome { .. }));
    for e in store(&p.backend, &[1, 2, 7, 9]) {
        p.queue.send(e).await.expect("queued");
    }
    for want in [1, 2, 7, 9] {
        assert_eq!(p.seq().await, want);
    }
    p.send(Message::Text(r#"{"type":"ack","seq":7}"#.into()));
    p.send(Message::Text(r#"{"type":"ack","seq":3}"#.into()));
    p.send(Message::Text(r#"{"type":"ack","seq":1000}"#.into()));
    p.send(Message::Text(r#"{"type":"ping"}"#.into()));
    assert_eq!(p.frame().await, ServerFrame::Pong);
    assert_eq!(
        p.ctl.acked(),
        9,
        "acks only move forward, and never past what was sent"
    );
    let tracked = p.backend.tracked.lock().expect("lock").clone();
    let acked: Vec<u64> = tracked
        .iter()
        .filter(|(k, _)| *k == TrackKind::Acked)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        acked,
        vec![1, 2, 7, 9],
        "each delivered event is tracked as acked once"
    );
}

#[tokio::test]
async fn replays_after_the_start_then_goes_live_without_repeats() {
    let backend = Arc::new(MemBackend::default());
    let stored = store(&backend, &[3, 5, 8]);
    let mut p = start_with(Protocol::Json, backend, 3);
    p.frame().await;
    // The live subscription saw 8 too (it was buffered while replaying): sent once.
    p.queue.send(stored[2].clone()).await.expect("queued");
    let live = store(&p.backend, &[11]);
    p.queue.send(live[0].clone()).await.expect("queued");
    for want in [5, 8, 11] {
        assert_eq!(p.seq().await, want);
    }
    assert_eq!(p.written().await, (2, 1, 0), "(replay, live, gap fill)");
}

#[tokio::test]
async fn a_gap_in_live_events_is_filled_from_the_stream_in_order() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    let events = store(&p.backend, &[2, 4, 6, 9]);
    // Only 9 arrives live; its Nats-Last-Sequence (6) shows 2, 4 and 6 were missed.
    p.queue.send(events[3].clone()).await.expect("queued");
    for want in [2, 4, 6, 9] {
        assert_eq!(p.seq().await, want);
    }
    assert_eq!(p.written().await, (0, 1, 3), "(replay, live, gap fill)");
}

#[tokio::test]
async fn a_lagging_queue_during_replay_is_recovered_from_the_stream() {
    let backend = Arc::new(MemBackend::default());
    store(&backend, &[1, 2]);
    let mut p = start_with(Protocol::Json, backend, 0);
    p.frame().await;
    assert_eq!(p.seq().await, 1);
    assert_eq!(p.seq().await, 2);
    // A live event dropped because the queue was full while replaying:
    let dropped = store(&p.backend, &[3]);
    p.ctl.replaying.store(true, Ordering::SeqCst);
    p.ctl.queue_full();
    p.ctl.replaying.store(false, Ordering::SeqCst);
    assert_eq!(p.seq().await, 3, "fetched from the stream, not lost");
    drop(dropped);
    // Outside a replay, a full queue is a slow consumer.
    p.ctl.queue_full();
    p.expect_close(Some("slow_consumer"), close_code::TRY_AGAIN_LATER)
        .await;
}

#[tokio::test]
async fn malformed_stored_events_are_skipped_not_stalled_on() {
    let backend = Arc::new(MemBackend::default());
    store(&backend, &[1]);
    backend
        .stored
        .lock()
        .expect("lock")
        .push((2, 1, b"{bad".to_vec()));
    store(&backend, &[3]);
    let mut p = start_with(Protocol::Json, backend, 0);
    p.frame().await;
    assert_eq!(p.seq().await, 1);
    assert_eq!(p.seq().await, 3);
}

#[tokio::test]
async fn msgpack_sessions_answer_in_binary() {
    let mut p = start(Protocol::MsgPack);
    assert!(
        matches!(p.next().await, Message::Binary(_)),
        "welcome is binary"
    );
    let ping = rmp_serde::to_vec_named(&ziraai_proto::ClientFrame::Ping).expect("encode");
    p.send(Message::Binary(ping.into()));
    assert_eq!(p.frame().await, ServerFrame::Pong);
}

#[tokio::test]
async fn undecodable_frames_close_with_1007() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    p.send(Message::Text("{".into()));
    let end = p
        .expect_close(Some("invalid_frame"), close_code::INVALID_DATA)
        .await;
    assert!(matches!(end, Some(CloseReason::Undecodable(_))));
}

#[tokio::test]
async fn unknown_frames_close_with_1008() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    p.send(Message::Text(
        r#"{"type":"publish","subject":"notify.other"}"#.into(),
    ));
    p.expect_close(Some("unsupported_frame"), close_code::POLICY)
        .await;
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    p.to_server
        .send(Err(TestErr { too_big: true }))
        .expect("reading");
    assert_eq!(
        p.expect_close(Some("frame_too_large"), close_code::TOO_BIG)
            .await,
        Some(CloseReason::TooBig)
    );
}

#[tokio::test]
async fn a_hub_close_request_ends_with_slow_consumer_1013() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    assert!(p.ctl.close(CloseReason::SlowConsumer));
    assert!(!p.ctl.close(CloseReason::Internal), "the first reason wins");
    assert_eq!(
        p.expect_close(Some("slow_consumer"), close_code::TRY_AGAIN_LATER)
            .await,
        Some(CloseReason::SlowConsumer)
    );
}

#[tokio::test]
async fn shutdown_closes_with_1012_and_no_error_frame() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    p.shutdown.cancel();
    assert_eq!(
        p.expect_close(None, close_code::RESTART).await,
        Some(CloseReason::Shutdown)
    );
}

#[tokio::test(start_paused = true)]
async fn silent_clients_get_pings_then_an_idle_close() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    // Time is paused: the runtime advances it to each timer while idle.
    assert!(matches!(p.next().await, Message::Ping(_)));
    assert!(matches!(p.next().await, Message::Ping(_)));
    p.expect_close(Some("idle_timeout"), close_code::GOING_AWAY)
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_pong_keeps_the_session_alive() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    for _ in 0..5 {
        assert!(matches!(p.next().await, Message::Ping(_)));
        p.send(Message::Pong(Default::default()));
    }
    assert!(!p.session.is_finished());
}

#[tokio::test]
async fn a_vanished_client_ends_the_session_quietly() {
    let mut p = start(Protocol::Json);
    p.frame().await;
    drop(p.to_server);
    let end = tokio::time::timeout(Duration::from_secs(5), p.session)
        .await
        .expect("ends")
        .expect("no panic");
    assert_eq!(end, None);
}
