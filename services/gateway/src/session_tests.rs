//! The session loop over channel pairs: every branch without a network.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziraai_proto::{Protocol, ServerFrame};

use super::*;

#[derive(Debug)]
struct TestErr {
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
struct TestSocket {
    inbound: mpsc::UnboundedReceiver<Result<Message, TestErr>>,
    outbound: mpsc::UnboundedSender<Message>,
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

struct Peer {
    to_server: mpsc::UnboundedSender<Result<Message, TestErr>>,
    from_server: mpsc::UnboundedReceiver<Message>,
    queue: mpsc::Sender<Message>,
    ctl: Arc<SocketCtl>,
    shutdown: CancellationToken,
    session: JoinHandle<Option<CloseReason>>,
}

const LIMITS: SessionLimits = SessionLimits {
    write_timeout: Duration::from_secs(5),
    ping_interval: Duration::from_secs(30),
};

fn start(protocol: Protocol) -> Peer {
    let (to_server, inbound) = mpsc::unbounded_channel();
    let (outbound, from_server) = mpsc::unbounded_channel();
    let (queue, queue_rx) = mpsc::channel(8);
    let ctl = Arc::new(SocketCtl::default());
    let shutdown = CancellationToken::new();
    let welcome = ServerFrame::Welcome {
        connection_id: "c1".into(),
        user_id: "u1".into(),
    };
    let session = tokio::spawn(run(
        TestSocket { inbound, outbound },
        queue_rx,
        ctl.clone(),
        protocol,
        welcome,
        LIMITS,
        shutdown.clone(),
    ));
    Peer {
        to_server,
        from_server,
        queue,
        ctl,
        shutdown,
        session,
    }
}

impl Peer {
    async fn next(&mut self) -> Message {
        // Longer than the keep-alive timers, which paused-time tests skip through.
        let bound = LIMITS.ping_interval * 4;
        tokio::time::timeout(bound, self.from_server.recv())
            .await
            .expect("a frame in time")
            .expect("session still writing")
    }

    async fn frame(&mut self) -> ServerFrame {
        match self.next().await {
            Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Binary(b) => rmp_serde::from_slice(&b).expect("msgpack frame"),
            other => panic!("expected a protocol frame, got {other:?}"),
        }
    }

    fn send(&self, m: Message) {
        self.to_server.send(Ok(m)).expect("session reading");
    }

    /// Expects an optional error frame with `code`, then a close with `close`.
    async fn expect_close(mut self, error: Option<&str>, close: u16) -> Option<CloseReason> {
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
async fn welcome_then_queued_frames_then_pong_and_acks() {
    let mut p = start(Protocol::Json);
    assert!(matches!(p.frame().await, ServerFrame::Welcome { .. }));
    p.queue
        .send(Message::Text("{\"type\":\"pong\"}".into()))
        .await
        .expect("queued");
    assert_eq!(p.frame().await, ServerFrame::Pong);
    p.send(Message::Text(r#"{"type":"ack","seq":7}"#.into()));
    p.send(Message::Text(r#"{"type":"ack","seq":3}"#.into()));
    p.send(Message::Text(r#"{"type":"ping"}"#.into()));
    assert_eq!(p.frame().await, ServerFrame::Pong);
    assert_eq!(p.ctl.acked(), 7, "acks only move forward");
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
