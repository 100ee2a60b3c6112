//! The native `/ws` load client, as README's lossless client: `?deviceId=<device>` on
//! every connect (no `since`: the gateway resumes after the device's stored cursor and
//! replays what was missed), the subprotocol `ziraai.v1.json` or `ziraai.v1.msgpack`,
//! and an `ack` for every event frame (written before the client next waits for the
//! network, so a burst of events is acknowledged with one flush). Repeats after a
//! reconnect (events not yet acknowledged when the socket dropped) are reported as
//! they arrive; the report's `seq` lets the reader drop them.

use std::pin::pin;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;
use ziraai_proto::frames::{SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};

use super::conn::{self, ConnectError, Ws};
use super::frames::{self, Native};
use super::{Backoff, CLOSE_TIMEOUT, CONNECT_TIMEOUT, ClientConfig, Reporter, unix_ns};

/// With nothing heard for this long (the gateway pings every 30 s), the connection is
/// taken for dead and reopened.
const SILENCE: Duration = Duration::from_secs(90);
/// Close code of a socket evicted by the per-user limit: do not reconnect.
const CONNECTION_LIMIT: u16 = 4008;

/// How a connection ended.
pub(super) struct End {
    pub(super) code: Option<u16>,
    pub(super) reason: String,
    /// False when the gateway said not to reconnect.
    pub(super) retry: bool,
}

impl End {
    pub(super) fn lost(reason: impl Into<String>) -> Self {
        Self {
            code: None,
            reason: reason.into(),
            retry: true,
        }
    }
}

pub(super) async fn run(cfg: ClientConfig, report: Reporter, cancel: CancellationToken) {
    let msgpack = cfg.protocol.is_msgpack();
    let path = format!("/ws?deviceId={}", cfg.device);
    let mut backoff = Backoff::new(report.client);
    let mut connections = 0u64;
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            // Boxed: the handshake's state lives on the heap only while connecting,
            // so the task holding an idle socket stays small.
            r = Box::pin(open(&cfg, &path, msgpack)) => r,
        };
        let end = match opened {
            Ok(ws) => {
                report.connected(connections > 0);
                connections += 1;
                backoff.reset();
                match serve(ws, msgpack, &report, &cancel).await {
                    Some(end) => end,
                    None => return,
                }
            }
            Err(e) => End::lost(e.reason),
        };
        report.disconnected(end.code, end.reason);
        let again = cfg.reconnect && end.retry;
        if !again || !backoff.pause(&cancel).await {
            return;
        }
    }
}

/// Connects and reads the welcome frame.
async fn open(cfg: &ClientConfig, path: &str, msgpack: bool) -> Result<Ws, ConnectError> {
    let sub = if msgpack {
        SUBPROTOCOL_MSGPACK
    } else {
        SUBPROTOCOL_JSON
    };
    let mut ws = conn::websocket(cfg, path, Some(sub)).await?;
    let welcome = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            let msg = match ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(format!("before the welcome: {}", conn::describe(&e))),
                None => return Err("socket ended before the welcome".into()),
            };
            let bytes: &[u8] = match &msg {
                Message::Text(t) => t.as_bytes(),
                Message::Binary(b) => b,
                Message::Close(f) => {
                    return Err(format!("closed before the welcome: {}", close_text(f)));
                }
                _ => continue,
            };
            return match frames::native(msgpack, bytes)? {
                Native::Welcome => Ok(()),
                Native::Error { code, message } => Err(format!("error {code}: {message}")),
                other => Err(format!("expected the welcome, got {other:?}")),
            };
        }
    })
    .await;
    match welcome {
        Ok(Ok(())) => Ok(ws),
        Ok(Err(reason)) => Err(ConnectError::other(reason)),
        Err(_) => Err(ConnectError::other("no welcome frame in time")),
    }
}

fn close_text(f: &Option<CloseFrame>) -> String {
    match f {
        Some(f) => format!("{} {}", u16::from(f.code), f.reason),
        None => "no close frame".into(),
    }
}

/// Receives and acks until the connection ends (`Some`) or the client is cancelled
/// (`None`, after closing the socket).
async fn serve(
    mut ws: Ws,
    msgpack: bool,
    report: &Reporter,
    cancel: &CancellationToken,
) -> Option<End> {
    let mut last_heard = Instant::now();
    let mut silence = pin!(tokio::time::sleep(SILENCE));
    // Acks written but not flushed yet.
    let mut unflushed = false;
    // The last `error` frame, reported with the close that follows it.
    let mut error: Option<String> = None;
    loop {
        let next = if unflushed {
            // Another frame already arrived: handle it before flushing.
            match ws.next().now_or_never() {
                Some(m) => m,
                None => {
                    unflushed = false;
                    if let Err(e) = ws.flush().await {
                        return Some(End::lost(format!("ack flush: {}", conn::describe(&e))));
                    }
                    continue;
                }
            }
        } else {
            tokio::select! {
                _ = cancel.cancelled() => {
                    Box::pin(close(&mut ws)).await;
                    return None;
                }
                _ = &mut silence => {
                    if last_heard.elapsed() >= SILENCE {
                        return Some(End::lost(format!("nothing heard for {SILENCE:?}")));
                    }
                    silence.as_mut().reset(last_heard + SILENCE);
                    continue;
                }
                m = ws.next() => m,
            }
        };
        last_heard = Instant::now();
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Some(End::lost(conn::describe(&e))),
            None => return Some(End::lost("socket ended")),
        };
        let bytes: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            Message::Close(f) => {
                let code = f.as_ref().map(|f| u16::from(f.code));
                let mut reason = close_text(f);
                if let Some(e) = error.take() {
                    reason = format!("{reason} (after error {e})");
                }
                return Some(End {
                    code,
                    reason,
                    retry: code != Some(CONNECTION_LIMIT),
                });
            }
            _ => continue,
        };
        let at = unix_ns();
        match frames::native(msgpack, bytes) {
            Ok(Native::Event { seq, analysis_id }) => {
                if let Err(e) = ws.feed(frames::native_ack(msgpack, seq)).await {
                    return Some(End::lost(format!("ack: {}", conn::describe(&e))));
                }
                unflushed = true;
                report.delivery(seq, analysis_id, at);
            }
            Ok(Native::Error { code, message }) => error = Some(format!("{code}: {message}")),
            Ok(Native::Welcome | Native::Other) => {}
            Err(e) => return Some(End::lost(e)),
        }
    }
}

/// Closes from the client side and reads to the end, within [`CLOSE_TIMEOUT`].
pub(super) async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
