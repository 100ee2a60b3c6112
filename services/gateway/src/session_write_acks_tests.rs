//! Clients that send no acks (the SignalR dialect): a written event counts as received
//! only once the client is heard from after it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ziraai_proto::{Protocol, ServerFrame};

use super::tests::{LIMITS, MemBackend, PING_INTERVAL, TestSocket, store};
use super::*;
use crate::event::Stats;

/// The native dialect, but counting written events as received (as SignalR does).
struct WriteAcks(native::NativeDialect);

impl Dialect for WriteAcks {
    fn greeting(&self) -> Option<Message> {
        self.0.greeting()
    }
    fn encoding(&self) -> crate::event::Encoding {
        self.0.encoding()
    }
    async fn inbound(&mut self, msg: &Message) -> Vec<Inbound> {
        self.0.inbound(msg).await
    }
    fn keepalive(&self) -> Keepalive {
        self.0.keepalive()
    }
    fn farewell(&self, reason: &CloseReason) -> Vec<Message> {
        self.0.farewell(reason)
    }
    fn acks_on_write(&self) -> bool {
        true
    }
}

#[tokio::test(start_paused = true)]
async fn written_events_count_as_received_only_once_the_client_is_heard_after_them() {
    let backend = Arc::new(MemBackend {
        cursor: true,
        ..MemBackend::default()
    });
    store(&backend, &[4]);
    let (to_server, inbound) = mpsc::unbounded_channel();
    let (outbound, mut from_server) = mpsc::unbounded_channel();
    let (_queue, queue_rx) = mpsc::channel(8);
    let ctl = Arc::new(SocketCtl::default());
    let shutdown = CancellationToken::new();
    let dialect = WriteAcks(native::NativeDialect {
        protocol: Protocol::Json,
        welcome: ServerFrame::Pong,
        ping_interval: PING_INTERVAL,
        refresh: None,
    });
    let session = Session {
        limits: LIMITS,
        start_after: 0,
        backend: backend.clone(),
        shutdown: shutdown.clone(),
        stats: Arc::new(Stats::default()),
        expires: None,
    };
    let task = tokio::spawn(run(
        TestSocket { inbound, outbound },
        queue_rx,
        ctl.clone(),
        session,
        dialect,
    ));
    // Greeting, then the replayed event 4.
    from_server.recv().await.expect("greeting");
    from_server.recv().await.expect("event");
    // Heard right away: the frame may not have arrived yet; nothing is saved.
    to_server
        .send(Ok(Message::Pong(Default::default())))
        .expect("open");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(backend.saved.lock().expect("lock").is_empty());
    // Heard again more than a second after the write: event 4 counts as received.
    tokio::time::sleep(Duration::from_secs(2)).await;
    to_server
        .send(Ok(Message::Pong(Default::default())))
        .expect("open");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*backend.saved.lock().expect("lock"), vec![4]);
    shutdown.cancel();
    let _ = to_server.send(Ok(Message::Close(None)));
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ends")
        .expect("no panic");
}
