//! The native protocol (`GET /ws`): welcome frame, event frames, `ping`/`ack` from the
//! client, WebSocket pings to keep the connection alive, and an `error` frame before
//! each close code the server sends for a client fault.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use ziraai_proto::{ClientFrame, ClientFrameError, Protocol, ServerFrame};

use super::refresh::Refresh;
use super::{CloseReason, Dialect, Inbound, Keepalive};
use crate::event::{Encoding, native_frame};

/// Close codes the gateway sends (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The socket's token expired: reconnect (or refresh earlier) with a fresh one.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Application code: evicted by the per-user connection limit.
    pub const CONNECTION_LIMIT: u16 = 4008;
}

/// The native dialect of one socket.
pub struct NativeDialect {
    pub protocol: Protocol,
    pub welcome: ServerFrame,
    /// WebSocket ping interval; a client silent for three intervals is closed.
    pub ping_interval: Duration,
    /// Accepts `auth` frames; without it they are unsupported.
    pub refresh: Option<Refresh>,
}

impl CloseReason {
    /// Close code, and the error frame (`code`, message) if the client is at fault.
    pub(crate) fn describe(&self) -> (u16, Option<(&'static str, String)>) {
        use close_code::*;
        match self {
            Self::SlowConsumer => (
                TRY_AGAIN_LATER,
                Some((
                    "slow_consumer",
                    "events arrived faster than this socket read them; reconnect".into(),
                )),
            ),
            Self::Undecodable(m) => (INVALID_DATA, Some(("invalid_frame", m.clone()))),
            Self::Unsupported(m) => (POLICY, Some(("unsupported_frame", m.clone()))),
            Self::TooBig => (
                TOO_BIG,
                Some(("frame_too_large", "frame exceeds the size limit".into())),
            ),
            Self::Idle => (
                GOING_AWAY,
                Some(("idle_timeout", "no data or pong from the client".into())),
            ),
            Self::Shutdown => (RESTART, None),
            Self::Unavailable => (
                TRY_AGAIN_LATER,
                Some((
                    "unavailable",
                    "the event log cannot be read right now; reconnect to resume".into(),
                )),
            ),
            Self::Internal => (INTERNAL, None),
            Self::TokenExpired => (
                TOKEN_EXPIRED,
                Some((
                    "token_expired",
                    "the token expired; reconnect with a fresh one (or send an auth frame before it expires)".into(),
                )),
            ),
            Self::AuthRefused { code, message } => (POLICY, Some((code, message.clone()))),
            Self::ConnectionLimit => (
                CONNECTION_LIMIT,
                Some((
                    "connection_limit",
                    "this user opened more connections than allowed; this, the oldest, was closed"
                        .into(),
                )),
            ),
            Self::RateLimited => (
                POLICY,
                Some((
                    "rate_limited",
                    "frames arrived faster than this socket's allowance".into(),
                )),
            ),
        }
    }

    pub(crate) fn reason_text(&self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow consumer",
            Self::Undecodable(_) => "invalid frame",
            Self::Unsupported(_) => "unsupported frame",
            Self::TooBig => "frame too large",
            Self::Idle => "idle timeout",
            Self::Shutdown => "gateway restarting; reconnect",
            Self::Internal => "internal error",
            Self::Unavailable => "event log unavailable; reconnect",
            Self::TokenExpired => "token expired",
            Self::AuthRefused { .. } => "token refused",
            Self::ConnectionLimit => "connection limit",
            Self::RateLimited => "rate limited",
        }
    }
}

impl Dialect for NativeDialect {
    fn greeting(&self) -> Option<Message> {
        Some(native_frame(&self.welcome, self.protocol))
    }

    fn encoding(&self) -> Encoding {
        Encoding::Native(self.protocol)
    }

    async fn inbound(&mut self, msg: &Message) -> Vec<Inbound> {
        let frame = match msg {
            Message::Text(t) => ClientFrame::from_json(t.as_str()),
            Message::Binary(b) => ClientFrame::from_msgpack(b),
            _ => return Vec::new(),
        };
        vec![match frame {
            Ok(ClientFrame::Ping) => {
                Inbound::Reply(native_frame(&ServerFrame::Pong, self.protocol))
            }
            Ok(ClientFrame::Ack { seq }) => Inbound::Ack(seq),
            Ok(ClientFrame::Auth { token }) => match &self.refresh {
                Some(r) => return r.handle(&token, self.protocol),
                None => Inbound::Close(CloseReason::Unsupported(
                    "auth frames are not accepted on this socket".into(),
                )),
            },
            Err(ClientFrameError::Undecodable(what)) => Inbound::Close(CloseReason::Undecodable(
                format!("frame is not valid {what}"),
            )),
            Err(ClientFrameError::Unsupported(detail)) => {
                Inbound::Close(CloseReason::Unsupported(format!(
                    "expected {{\"type\":\"ping\"}} or {{\"type\":\"ack\",\"seq\":n}}: {detail}"
                )))
            }
        }]
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive {
            tick: self.ping_interval,
            // A WebSocket ping at every tick: the browser's automatic pong proves the
            // client is alive even when it never sends a frame of its own.
            ping_when_idle: Duration::ZERO,
            heard_timeout: self.ping_interval * 3,
            ping: Message::Ping(Default::default()),
        }
    }

    fn farewell(&self, reason: &CloseReason) -> Vec<Message> {
        let (code, error) = reason.describe();
        let mut out = Vec::with_capacity(2);
        if let Some((code, message)) = error {
            let frame = ServerFrame::Error {
                code: code.into(),
                message,
            };
            out.push(native_frame(&frame, self.protocol));
        }
        out.push(Message::Close(Some(CloseFrame {
            code,
            reason: reason.reason_text().into(),
        })));
        out
    }

    fn acks_on_write(&self) -> bool {
        false
    }
}
