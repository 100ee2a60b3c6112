//! Opening a load client's TCP connection (from its source address) and WebSocket
//! with small buffers, and the one HTTP request SignalR needs (negotiate).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Error};

use super::{CONNECT_TIMEOUT, ClientConfig};

/// A load client's socket.
pub(super) type Ws = WebSocketStream<TcpStream>;

/// tungstenite's read chunk: events are small (128 KiB by default would cost that
/// much per socket).
const READ_BUFFER: usize = 4 * 1024;
/// Writes are acks and pings: flush at once past this.
const WRITE_BUFFER: usize = 4 * 1024;
/// Hard cap of the write buffer (a client never queues much).
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Largest message accepted from the gateway.
const MAX_MESSAGE: usize = 1024 * 1024;
/// Largest negotiate answer read.
const MAX_HTTP_ANSWER: usize = 16 * 1024;

/// Why a connection attempt failed, as one line for [`super::ClientEvent::Disconnected`].
#[derive(Debug)]
pub(super) struct ConnectError {
    pub(super) reason: String,
}

impl ConnectError {
    pub(super) fn other(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// A TCP connection to the gateway from the configured source address.
async fn tcp(cfg: &ClientConfig) -> Result<TcpStream, ConnectError> {
    let socket = match cfg.gateway {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ConnectError::other(format!("socket: {e}")))?;
    if let Some(ip) = cfg.source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| ConnectError::other(format!("bind {ip}: {e}")))?;
    }
    let stream = socket
        .connect(cfg.gateway)
        .await
        .map_err(|e| ConnectError::other(format!("connect {}: {e}", cfg.gateway)))?;
    // Acks are tiny and latency is what is measured.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens `ws://<gateway><path>` with the user's bearer token and, if given, a
/// subprotocol; bounded by [`CONNECT_TIMEOUT`].
pub(super) async fn websocket(
    cfg: &ClientConfig,
    path: &str,
    subprotocol: Option<&'static str>,
) -> Result<Ws, ConnectError> {
    let open = async {
        let url = format!("ws://{}{path}", cfg.gateway);
        let mut req = url
            .into_client_request()
            .map_err(|e| ConnectError::other(format!("request {path}: {e}")))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", cfg.token))
            .map_err(|_| ConnectError::other("token is not a valid header value"))?;
        req.headers_mut().insert("Authorization", bearer);
        if let Some(p) = subprotocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
        }
        let stream = tcp(cfg).await?;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        match tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await {
            Ok((ws, _)) => Ok(ws),
            Err(Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let status = resp.status().as_u16();
                Err(ConnectError::other(format!(
                    "http {status}: {}",
                    body.trim()
                )))
            }
            Err(e) => Err(ConnectError::other(format!("upgrade: {e}"))),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::other(format!(
            "connect timed out after {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// `POST <path>` (no body) with the user's bearer token, `Connection: close`; the
/// status and body. Bounded by [`CONNECT_TIMEOUT`] and [`MAX_HTTP_ANSWER`].
pub(super) async fn post(cfg: &ClientConfig, path: &str) -> Result<(u16, Vec<u8>), ConnectError> {
    let exchange = async {
        let mut stream = tcp(cfg).await?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            cfg.gateway, cfg.token
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| ConnectError::other(format!("negotiate write: {e}")))?;
        let mut buf = Vec::new();
        (&mut stream)
            .take(MAX_HTTP_ANSWER as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| ConnectError::other(format!("negotiate read: {e}")))?;
        parse_answer(&buf)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::other(format!(
            "negotiate timed out after {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// Status and body of an HTTP/1.1 answer (content-length framed or read to the end;
/// chunked bodies are not used by the gateway's JSON answers).
fn parse_answer(buf: &[u8]) -> Result<(u16, Vec<u8>), ConnectError> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ConnectError::other("negotiate: no complete HTTP answer"))?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ConnectError::other("negotiate: no HTTP status"))?;
    Ok((status, buf[end + 4..].to_vec()))
}

/// The close code of a WebSocket error that ended a connection, and its reason.
pub(super) fn describe(e: &tungstenite::Error) -> String {
    match e {
        Error::ConnectionClosed | Error::AlreadyClosed => "closed".into(),
        Error::Io(io) => format!("io: {io}"),
        Error::Protocol(p) => format!("protocol: {p}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_are_split_without_panicking() {
        let (status, body) =
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("answer");
        assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert!(parse_answer(b"").is_err());
    }
}
