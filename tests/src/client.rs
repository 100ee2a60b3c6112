//! A real WebSocket client of the native protocol (tokio-tungstenite).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ziraai_proto::{Protocol, ServerFrame};

use crate::{STEP, within};

/// A refused upgrade: HTTP status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: serde_json::Value,
}

/// A connected native-protocol client.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: Protocol,
    /// Subprotocol the server echoed, if any.
    pub accepted: Option<String>,
}

impl WsClient {
    /// Connects with a bearer header and, if given, an offered subprotocol.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
        offer: Option<&str>,
    ) -> Result<Self, Refused> {
        let mut req = url.into_client_request().expect("valid URL");
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}")).expect("header value");
            req.headers_mut().insert("Authorization", v);
        }
        if let Some(p) = offer {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(p).expect("header value"),
            );
        }
        match within("websocket connect", tokio_tungstenite::connect_async(req)).await {
            Ok((ws, resp)) => {
                let accepted = resp
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let protocol = match accepted.as_deref() {
                    Some("ziraai.v1.msgpack") => Protocol::MsgPack,
                    _ => Protocol::Json,
                };
                Ok(Self {
                    ws,
                    protocol,
                    accepted,
                })
            }
            Err(Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(serde_json::Value::Null);
                Err(Refused {
                    status: resp.status().as_u16(),
                    body,
                })
            }
            Err(e) => panic!("websocket connect failed: {e}"),
        }
    }

    /// Connects as `user` (JSON) and consumes the welcome frame.
    pub async fn open(url: &str, user: &ziraai_proto::UserId) -> Self {
        Self::open_with(url, user, None).await
    }

    /// Connects as `user` with extra query parameters (`since=…&deviceId=…`) and returns
    /// the client and its welcome frame.
    pub async fn resume(
        url: &str,
        user: &ziraai_proto::UserId,
        query: &str,
    ) -> (Self, ServerFrame) {
        let url = format!("{url}?{query}");
        let mut c = Self::connect(&url, Some(&crate::token(user)), None)
            .await
            .expect("upgrade accepted");
        let welcome = c.frame().await;
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "expected welcome, got {welcome:?}"
        );
        (c, welcome)
    }

    /// Acknowledges every event up to `seq`.
    pub async fn ack(&mut self, seq: u64) {
        self.send_text(&format!(r#"{{"type":"ack","seq":{seq}}}"#))
            .await;
    }

    /// The sequences of the next `n` events.
    pub async fn seqs(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.event().await.seq);
        }
        out
    }

    /// Reads frames until the socket ends (closed by either side or cut); returns the
    /// event sequences seen. Bounded by `STEP`.
    pub async fn drain_events(&mut self) -> Vec<u64> {
        let mut seqs = Vec::new();
        let _ = tokio::time::timeout(STEP, async {
            while let Some(Ok(m)) = self.ws.next().await {
                let frame: Option<ServerFrame> = match m {
                    Message::Text(t) => serde_json::from_str(&t).ok(),
                    Message::Binary(b) => rmp_serde::from_slice(&b).ok(),
                    _ => None,
                };
                if let Some(ServerFrame::Event(e)) = frame {
                    seqs.push(e.seq);
                }
            }
        })
        .await;
        seqs
    }

    /// The next event, or `None` once the socket ends (closed, cut, or its server
    /// killed); other frames are skipped. Bounded by `STEP`. Cancel-safe.
    pub async fn next_event_or_end(&mut self) -> Option<ziraai_proto::EventFrame> {
        within("next event or end", async {
            loop {
                let frame: Option<ServerFrame> = match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => serde_json::from_str(&t).ok(),
                    Some(Ok(Message::Binary(b))) => rmp_serde::from_slice(&b).ok(),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                    Some(Ok(_)) => None,
                };
                if let Some(ServerFrame::Event(e)) = frame {
                    return Some(e);
                }
            }
        })
        .await
    }

    /// Connects as `user` offering `offer`, and consumes the welcome frame.
    pub async fn open_with(url: &str, user: &ziraai_proto::UserId, offer: Option<&str>) -> Self {
        let mut c = Self::connect(url, Some(&crate::token(user)), offer)
            .await
            .expect("upgrade accepted");
        match c.frame().await {
            ServerFrame::Welcome { user_id, .. } => assert_eq!(user_id, user.as_str()),
            other => panic!("expected welcome, got {other:?}"),
        }
        c
    }

    /// The next protocol frame (skipping WebSocket pings), decoded per the protocol.
    pub async fn frame(&mut self) -> ServerFrame {
        loop {
            let msg = within("next frame", self.ws.next())
                .await
                .expect("socket open")
                .expect("socket healthy");
            match msg {
                Message::Text(t) => {
                    assert_eq!(
                        self.protocol,
                        Protocol::Json,
                        "text frame on a msgpack socket"
                    );
                    return serde_json::from_str(&t).expect("server frame is JSON");
                }
                Message::Binary(b) => {
                    assert_eq!(
                        self.protocol,
                        Protocol::MsgPack,
                        "binary frame on a JSON socket"
                    );
                    return rmp_serde::from_slice(&b).expect("server frame is MessagePack");
                }
                Message::Close(c) => panic!("closed while waiting for a frame: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next text message as written (a SignalR record, say), skipping pings.
    pub async fn text(&mut self) -> String {
        loop {
            match within("next text", self.ws.next()).await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next event frame, failing on anything else.
    pub async fn event(&mut self) -> ziraai_proto::EventFrame {
        match self.frame().await {
            ServerFrame::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        within("send", self.ws.send(Message::Text(text.into())))
            .await
            .expect("send");
    }

    /// Sends raw bytes.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        within("send", self.ws.send(Message::Binary(bytes.into())))
            .await
            .expect("send");
    }

    /// Reads until the server closes; returns the frames seen before and the close code.
    pub async fn until_close(&mut self) -> (Vec<ServerFrame>, Option<u16>) {
        let mut frames = Vec::new();
        let code = within("server close", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                    Some(Ok(Message::Text(t))) => {
                        frames.push(serde_json::from_str(&t).expect("JSON frame"));
                    }
                    Some(Ok(Message::Binary(b))) => {
                        frames.push(rmp_serde::from_slice(&b).expect("msgpack frame"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await;
        (frames, code)
    }

    /// Closes from the client side.
    /// Closes with a close frame carrying `code` and `reason`, then reads to the end.
    pub async fn close_with(mut self, code: u16, reason: &str) {
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.to_owned().into(),
        };
        let _ = tokio::time::timeout(STEP, self.ws.close(Some(frame))).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while self.ws.next().await.is_some() {}
        })
        .await;
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.ws.close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while self.ws.next().await.is_some() {}
        })
        .await;
    }
}
