//! The SignalR hub protocol as a session [`Dialect`].

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use ziraai_proto::signalr::{
    ClientMessage, HubMessageError, HubProtocol, ServerMessage, count_messages, parse_messages,
};

use super::stateful::Stateful;
use crate::event::{Encoding, hub_frame};
use crate::session::close_code;
use crate::session::{CloseReason, Dialect, Inbound, Keepalive};

/// How often the keep-alive and client-timeout checks run (.NET's heartbeat).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The error .NET sends when it closes a connection because of the client.
pub(crate) const CLOSED_WITH_ERROR: &str = "Connection closed with an error.";

/// One SignalR connection's protocol state.
pub(crate) struct SignalrDialect {
    pub(crate) protocol: HubProtocol,
    pub(crate) keepalive: Duration,
    pub(crate) client_timeout: Duration,
    pub(crate) max_message: usize,
    /// Present on connections that negotiated stateful reconnect.
    pub(crate) stateful: Option<Stateful>,
}

/// The hub Close error of a connection evicted by the per-user limit.
pub(crate) const CONNECTION_LIMIT_ERROR: &str = "connection_limit";

impl SignalrDialect {
    fn message(&self, m: &ServerMessage<'_>) -> Message {
        hub_frame(self.protocol, m.encode(self.protocol))
    }

    /// A hub Close with `error`, then the WebSocket close.
    fn close_messages(&self, error: &str, allow_reconnect: bool) -> Vec<Message> {
        let close = ServerMessage::Close {
            error: Some(error),
            allow_reconnect,
        };
        vec![
            self.message(&close),
            Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            })),
        ]
    }
}

impl Dialect for SignalrDialect {
    fn greeting(&self) -> Option<Message> {
        // The handshake response was the greeting.
        None
    }

    fn encoding(&self) -> Encoding {
        Encoding::Hub(self.protocol)
    }

    fn cost(&self, msg: &Message) -> u32 {
        let bytes: &[u8] = match msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => return 1,
        };
        u32::try_from(count_messages(self.protocol, bytes)).unwrap_or(u32::MAX)
    }

    async fn inbound(&mut self, msg: &Message) -> Vec<Inbound> {
        let bytes: &[u8] = match msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            _ => return Vec::new(),
        };
        let messages = match parse_messages(self.protocol, bytes, self.max_message) {
            Ok(m) => m,
            Err(HubMessageError::TooLarge(_)) => return vec![Inbound::Close(CloseReason::TooBig)],
            Err(HubMessageError::Malformed(why)) => {
                return vec![Inbound::Close(CloseReason::Unsupported(why))];
            }
        };
        let mut out = Vec::new();
        for m in messages {
            match m {
                // A push-only hub has no methods: answer calls that expect an answer.
                ClientMessage::Invocation {
                    invocation_id: Some(id),
                    target,
                    ..
                } => {
                    if let Some(st) = self.stateful.as_mut() {
                        st.completion().await;
                    }
                    let error = format!(
                        "Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
                    );
                    out.push(Inbound::Reply(self.message(
                        &ServerMessage::CompletionError {
                            invocation_id: &id,
                            error: &error,
                        },
                    )));
                }
                ClientMessage::Close => {
                    out.push(Inbound::Gone);
                    break;
                }
                ClientMessage::Ack(n) => {
                    // Stateful clients acknowledge explicitly: that is the cursor too.
                    if let Some(st) = self.stateful.as_mut()
                        && let Some(seq) = st.acked(n).await
                    {
                        out.push(Inbound::Ack(seq));
                    }
                }
                // Pings only reset the timer; fire-and-forget calls, acks, sequences
                // and unknown types are ignored.
                _ => {}
            }
        }
        out
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive {
            tick: HEARTBEAT,
            ping_when_idle: self.keepalive,
            heard_timeout: self.client_timeout,
            ping: self.message(&ServerMessage::Ping),
        }
    }

    async fn ending(&mut self) {
        // The server ends this connection: like ASP.NET Core, it no longer exists, so a
        // resume with its token gets 404. The official client (8.0.x) also tries to
        // resume the transport it was told to close while its automatic reconnect opens
        // a new connection; were that resume accepted, two connections would feed one
        // client (events interleaved out of order).
        if let Some(st) = self.stateful.as_mut() {
            st.end().await;
        }
    }

    fn farewell(&self, reason: &CloseReason) -> Vec<Message> {
        if *reason == CloseReason::ConnectionLimit {
            // Evicted: reconnecting would only evict the next oldest connection.
            return self.close_messages(CONNECTION_LIMIT_ERROR, false);
        }
        let error = match reason {
            CloseReason::Shutdown => "Server is restarting; reconnect.",
            // The client reconnects and its accessTokenFactory supplies a fresh token.
            CloseReason::TokenExpired => "token_expired",
            CloseReason::RateLimited => "rate_limited",
            _ => CLOSED_WITH_ERROR,
        };
        // allowReconnect: the client's automatic reconnect resumes, losing nothing.
        let close = ServerMessage::Close {
            error: Some(error),
            allow_reconnect: true,
        };
        vec![
            self.message(&close),
            Message::Close(Some(CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            })),
        ]
    }

    fn acks_on_write(&self) -> bool {
        true
    }

    fn sent_event(&mut self, seq: u64) {
        if let Some(st) = self.stateful.as_mut() {
            st.sent_event(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_close_for_an_expired_token_allows_reconnect() {
        let dialect = SignalrDialect {
            protocol: HubProtocol::Json,
            keepalive: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            max_message: 1024,
            stateful: None,
        };
        let farewell = dialect.farewell(&CloseReason::TokenExpired);
        let Some(Message::Text(close)) = farewell.first() else {
            panic!("{farewell:?}")
        };
        let json: serde_json::Value =
            serde_json::from_str(close.as_str().trim_end_matches('\u{1e}')).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({"type": 7, "error": "token_expired", "allowReconnect": true})
        );
    }
}
