//! Device cursors written from acks: coalesced, flushed at the close, and a write that
//! failed (the bucket electing a leader) written again instead of dropped.

use std::sync::Arc;

use axum::extract::ws::Message;
use ziraai_proto::{Protocol, ServerFrame};

use super::tests::{MemBackend, start_with, store};
use super::*;

#[tokio::test(start_paused = true)]
async fn cursor_writes_are_coalesced_and_flushed_at_close() {
    let backend = Arc::new(MemBackend {
        cursor: true,
        ..MemBackend::default()
    });
    store(&backend, &[1, 2, 3, 4]);
    let mut p = start_with(Protocol::Json, backend, 0);
    p.frame().await;
    for _ in 0..4 {
        p.seq().await;
    }
    for n in 1..=4 {
        p.send(Message::Text(
            format!(r#"{{"type":"ack","seq":{n}}}"#).into(),
        ));
    }
    p.send(Message::Text(r#"{"type":"ping"}"#.into()));
    assert_eq!(p.frame().await, ServerFrame::Pong);
    // Leading edge: the first ack is written at once; the next three wait for the tick.
    assert_eq!(*p.backend.saved.lock().expect("lock"), vec![1]);
    p.shutdown.cancel();
    let backend = p.backend.clone();
    p.expect_close(None, close_code::RESTART).await;
    assert_eq!(
        *backend.saved.lock().expect("lock"),
        vec![1, 4],
        "flushed at close"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cursor_write_that_failed_is_written_again() {
    let backend = Arc::new(MemBackend {
        cursor: true,
        failing_saves: 1.into(),
        ..MemBackend::default()
    });
    store(&backend, &[1]);
    let mut p = start_with(Protocol::Json, backend, 0);
    p.frame().await;
    assert_eq!(p.seq().await, 1);
    p.send(Message::Text(r#"{"type":"ack","seq":1}"#.into()));
    p.send(Message::Text(r#"{"type":"ping"}"#.into()));
    assert_eq!(p.frame().await, ServerFrame::Pong);
    assert!(p.backend.saved.lock().expect("lock").is_empty(), "failed");
    p.shutdown.cancel();
    let backend = p.backend.clone();
    p.expect_close(None, close_code::RESTART).await;
    assert_eq!(*backend.saved.lock().expect("lock"), vec![1], "not dropped");
}
