//! `ziraai-gateway watch`: a command-line client that prints a user's frames.
//!
//! For development and operations: connects to `/ws` with a token (given, or minted
//! with the configured secret), prints every frame as a JSON line, acknowledges each
//! event, and reconnects with a back-off when the socket closes.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Watches `url` as the bearer of `token` until `stop` resolves.
pub async fn run(
    url: &str,
    token: &str,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut request = url.into_client_request().context("bad --url")?;
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))
                .context("token is not a header value")?,
        );
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("ziraai.v1.json"),
        );
        let connected = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = tokio_tungstenite::connect_async(request) => r,
        };
        match connected {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                anyhow::bail!("refused with HTTP {}: {body}", resp.status());
            }
            Err(e) => eprintln!("connect failed: {e}; retrying in {backoff:?}"),
            Ok((mut ws, _)) => {
                backoff = Duration::from_millis(250);
                loop {
                    let next = tokio::select! {
                        _ = &mut stop => {
                            let _ = ws.close(None).await;
                            return Ok(());
                        }
                        m = ws.next() => m,
                    };
                    match next {
                        Some(Ok(Message::Text(t))) => {
                            println!("{t}");
                            let seq = serde_json::from_str::<serde_json::Value>(&t)
                                .ok()
                                .filter(|v| v["type"] == "event")
                                .and_then(|v| v["seq"].as_u64());
                            if let Some(seq) = seq {
                                let ack = format!("{{\"type\":\"ack\",\"seq\":{seq}}}");
                                if ws.send(Message::Text(ack.into())).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            eprintln!("closed by server: {frame:?}");
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            eprintln!("socket error: {e}");
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
