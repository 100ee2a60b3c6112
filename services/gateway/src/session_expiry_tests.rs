//! Token lifetime in the session loop (paused time): the socket closes at its
//! expiry with `token_expired` + 4001, an `auth` frame moves the expiry, a refused one
//! closes with 1008. (The SignalR farewell is tested in `signalr/dialect.rs`.)

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use ziraai_proto::{Protocol, ServerFrame, UserId};

use super::refresh::Refresh;
use super::tests::{LIMITS, MemBackend, PING_INTERVAL, TestSocket};
use super::*;
use crate::auth::{Authenticator, mint};
use crate::event::Stats;

const EXPIRES_IN: Duration = Duration::from_secs(10);

fn secret() -> SecretString {
    SecretString::from("expiry-test-secret-expiry-test-secret")
}

struct Peer {
    to_server: mpsc::UnboundedSender<Result<Message, super::tests::TestErr>>,
    from_server: mpsc::UnboundedReceiver<Message>,
    session: JoinHandle<Option<CloseReason>>,
    _queue: mpsc::Sender<Arc<Event>>,
}

fn start() -> Peer {
    let (to_server, inbound) = mpsc::unbounded_channel();
    let (outbound, from_server) = mpsc::unbounded_channel();
    let (queue, queue_rx) = mpsc::channel(8);
    let dialect = native::NativeDialect {
        protocol: Protocol::Json,
        welcome: ServerFrame::Pong,
        ping_interval: PING_INTERVAL,
        refresh: Some(Refresh {
            auth: Arc::new(Authenticator::new(&secret())),
            user: UserId::parse("u1").expect("id"),
        }),
    };
    let session = Session {
        limits: LIMITS,
        start_after: 0,
        backend: Arc::new(MemBackend::default()),
        shutdown: CancellationToken::new(),
        stats: Arc::new(Stats::default()),
        expires: Some(Instant::now() + EXPIRES_IN),
    };
    let session = tokio::spawn(run(
        TestSocket { inbound, outbound },
        queue_rx,
        Arc::new(SocketCtl::default()),
        session,
        dialect,
    ));
    Peer {
        to_server,
        from_server,
        session,
        _queue: queue,
    }
}

impl Peer {
    async fn frame(&mut self) -> ServerFrame {
        match self.from_server.recv().await.expect("session writing") {
            Message::Text(t) => serde_json::from_str(t.as_str()).expect("JSON frame"),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn send(&self, text: String) {
        self.to_server
            .send(Ok(Message::Text(text.into())))
            .expect("session reading");
    }

    /// The error frame's code, the close code, and the session's close reason.
    async fn closed(mut self) -> (String, u16, Option<CloseReason>) {
        let code = match self.frame().await {
            ServerFrame::Error { code, .. } => code,
            other => panic!("expected an error frame, got {other:?}"),
        };
        let close = match self.from_server.recv().await {
            Some(Message::Close(Some(f))) => f.code,
            other => panic!("expected a close, got {other:?}"),
        };
        let _ = self.to_server.send(Ok(Message::Close(None)));
        let reason = tokio::time::timeout(Duration::from_secs(5), self.session)
            .await
            .expect("session ends")
            .expect("no panic");
        (code, close, reason)
    }
}

#[tokio::test(start_paused = true)]
async fn the_socket_closes_with_token_expired_4001_at_its_expiry() {
    let started = Instant::now();
    let mut p = start();
    assert_eq!(p.frame().await, ServerFrame::Pong, "greeting");
    let (code, close, reason) = p.closed().await;
    assert_eq!((code.as_str(), close), ("token_expired", 4001));
    assert_eq!(reason, Some(CloseReason::TokenExpired));
    assert!(started.elapsed() >= EXPIRES_IN, "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn an_auth_frame_moves_the_expiry_and_a_refused_one_closes_with_1008() {
    let mut p = start();
    assert_eq!(p.frame().await, ServerFrame::Pong, "greeting");
    let token = mint(&secret(), "u1", 3600);
    p.send(serde_json::json!({"type": "auth", "token": token}).to_string());
    match p.frame().await {
        ServerFrame::Authenticated { expires_at } => {
            let at = time::OffsetDateTime::parse(
                &expires_at,
                &time::format_description::well_known::Rfc3339,
            )
            .expect("RFC 3339");
            let ahead = at.unix_timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
            assert!((3590..=3600).contains(&ahead), "{expires_at}");
        }
        other => panic!("expected authenticated, got {other:?}"),
    }
    // Past the first expiry, the socket still answers.
    tokio::time::advance(EXPIRES_IN * 2).await;
    p.send(r#"{"type":"ping"}"#.into());
    assert_eq!(p.frame().await, ServerFrame::Pong);
    p.send(serde_json::json!({"type": "auth", "token": mint(&secret(), "u2", 60)}).to_string());
    let (code, close, reason) = p.closed().await;
    assert_eq!((code.as_str(), close), ("token_other_user", 1008));
    assert!(matches!(reason, Some(CloseReason::AuthRefused { .. })));
}
