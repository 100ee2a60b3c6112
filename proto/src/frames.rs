//! Frames of the native WebSocket protocol (`GET /ws`).
//!
//! Two subprotocols carry the same objects: `ziraai.v1.json` (text frames, the default
//! when a client offers none) and `ziraai.v1.msgpack` (MessagePack maps in binary
//! frames). Field names are camelCase; every frame has a `type`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Subprotocol name of the JSON encoding.
pub const SUBPROTOCOL_JSON: &str = "ziraai.v1.json";
/// Subprotocol name of the MessagePack encoding.
pub const SUBPROTOCOL_MSGPACK: &str = "ziraai.v1.msgpack";

/// The encoding a socket negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Json,
    MsgPack,
}

impl Protocol {
    /// The `Sec-WebSocket-Protocol` value of this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::Json => SUBPROTOCOL_JSON,
            Self::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// Picks from a client's offered subprotocols (in the client's order of preference).
    /// `Ok(None)` means the client offered none: the JSON default applies without echoing
    /// a subprotocol. `Err` means it offered only ones we do not speak.
    pub fn negotiate<'a>(
        offered: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Self>, String> {
        let mut seen = Vec::new();
        for name in offered {
            let name = name.trim();
            match name {
                SUBPROTOCOL_JSON => return Ok(Some(Self::Json)),
                SUBPROTOCOL_MSGPACK => return Ok(Some(Self::MsgPack)),
                "" => {}
                other => seen.push(other.to_owned()),
            }
        }
        if seen.is_empty() {
            Ok(None)
        } else {
            Err(seen.join(", "))
        }
    }
}

/// An event as clients receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFrame {
    /// Stream sequence of the event in `NOTIFY`: the client's cursor.
    pub seq: u64,
    /// The event id (`Nats-Msg-Id`, or the sequence when the producer sent none).
    pub id: String,
    pub kind: String,
    pub data: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame {
    /// First frame on every socket.
    Welcome {
        connection_id: String,
        user_id: String,
        /// The socket receives every event with a sequence above this one.
        #[serde(default)]
        resumed_after: u64,
        /// True when events after `resumedAfter` may have left the stream (retention)
        /// before this device could receive them.
        #[serde(default)]
        gap: bool,
        /// With `gap`: the oldest sequence still in the stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        oldest_available: Option<u64>,
        /// The device id the socket's cursor belongs to, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
    },
    Event(EventFrame),
    /// Answer to a client `ping`.
    Pong,
    /// Sent before any close the server initiates because of a client fault or limit.
    Error {
        code: String,
        message: String,
    },
    /// Answer to a client `auth` frame: the socket now lives until `expiresAt`
    /// (RFC 3339, the new token's `exp`; the server's leeway comes on top).
    Authenticated {
        expires_at: String,
    },
}

/// Frames a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientFrame {
    Ping,
    /// Acknowledges every event up to and including `seq`.
    Ack {
        seq: u64,
    },
    /// In-band refresh: a fresh token for the same user moves the socket's expiry.
    Auth {
        token: String,
    },
}

/// Why a client frame was refused; each maps to a WebSocket close code.
#[derive(Debug, thiserror::Error)]
pub enum ClientFrameError {
    /// Not JSON / not MessagePack at all (close code 1007).
    #[error("frame is not valid {0}")]
    Undecodable(&'static str),
    /// Well-formed, but not a frame we know (close code 1008).
    #[error("unsupported frame: {0}")]
    Unsupported(String),
}

impl ServerFrame {
    /// JSON text of the frame.
    pub fn to_json(&self) -> String {
        // A frame holds strings, integers and JSON values: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// MessagePack map of the frame.
    pub fn to_msgpack(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }
}

impl ClientFrame {
    /// Decodes a text frame (JSON).
    pub fn from_json(text: &str) -> Result<Self, ClientFrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| ClientFrameError::Undecodable("JSON"))?;
        Self::from_value(value)
    }

    /// Decodes a binary frame (MessagePack).
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ClientFrameError> {
        let value: Value = crate::msgpack::from_slice(bytes)
            .map_err(|_| ClientFrameError::Undecodable("MessagePack"))?;
        Self::from_value(value)
    }

    fn from_value(value: Value) -> Result<Self, ClientFrameError> {
        serde_json::from_value(value).map_err(|e| ClientFrameError::Unsupported(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> ServerFrame {
        let Value::Object(data) = json!({"analysisId": "a1", "score": 0.97}) else {
            unreachable!()
        };
        ServerFrame::Event(EventFrame {
            seq: 7,
            id: "evt-1".into(),
            kind: "analysis.completed".into(),
            data,
            occurred_at: Some("2026-11-25T10:00:00Z".into()),
        })
    }

    #[test]
    fn server_frames_are_camel_case_with_type() {
        let welcome = ServerFrame::Welcome {
            connection_id: "c1".into(),
            user_id: "u1".into(),
            resumed_after: 41,
            gap: false,
            oldest_available: None,
            device_id: Some("phone-1".into()),
        };
        assert_eq!(
            serde_json::to_value(&welcome).expect("json"),
            json!({"type": "welcome", "connectionId": "c1", "userId": "u1",
                   "resumedAfter": 41, "gap": false, "deviceId": "phone-1"})
        );
        // Older clients' view: the three original fields are enough to decode.
        let minimal: ServerFrame =
            serde_json::from_str(r#"{"type":"welcome","connectionId":"c","userId":"u"}"#)
                .expect("decodes");
        assert!(matches!(
            minimal,
            ServerFrame::Welcome {
                resumed_after: 0,
                gap: false,
                ..
            }
        ));
        assert_eq!(
            serde_json::to_value(event()).expect("json"),
            json!({"type": "event", "seq": 7, "id": "evt-1", "kind": "analysis.completed",
                   "data": {"analysisId": "a1", "score": 0.97},
                   "occurredAt": "2026-11-25T10:00:00Z"})
        );
        assert_eq!(ServerFrame::Pong.to_json(), r#"{"type":"pong"}"#);
    }

    #[test]
    fn server_frames_round_trip_in_both_encodings() {
        let frames = [
            event(),
            ServerFrame::Pong,
            ServerFrame::Error {
                code: "x".into(),
                message: "y".into(),
            },
        ];
        for f in frames {
            let j: ServerFrame = serde_json::from_str(&f.to_json()).expect("json");
            assert_eq!(j, f);
            let m: ServerFrame = rmp_serde::from_slice(&f.to_msgpack()).expect("msgpack");
            assert_eq!(m, f);
        }
    }

    #[test]
    fn msgpack_frames_are_maps() {
        // fixmap marker (0x80..=0x8f), not an array: clients read named fields.
        let bytes = ServerFrame::Pong.to_msgpack();
        assert_eq!(bytes[0] & 0xf0, 0x80, "{bytes:?}");
    }

    #[test]
    fn client_frames_decode() {
        assert_eq!(
            ClientFrame::from_json(r#"{"type":"ping"}"#).ok(),
            Some(ClientFrame::Ping)
        );
        assert_eq!(
            ClientFrame::from_json(r#"{"type":"ack","seq":42}"#).ok(),
            Some(ClientFrame::Ack { seq: 42 })
        );
        let packed = rmp_serde::to_vec_named(&ClientFrame::Ack { seq: 9 }).expect("encode");
        assert_eq!(
            ClientFrame::from_msgpack(&packed).ok(),
            Some(ClientFrame::Ack { seq: 9 })
        );
    }

    #[test]
    fn client_frame_errors_are_classified() {
        for bad in ["", "{", "nope"] {
            assert!(matches!(
                ClientFrame::from_json(bad),
                Err(ClientFrameError::Undecodable(_))
            ));
        }
        for unsupported in [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","seq":-1}"#,
            r#"[1,2]"#,
            r#"{"seq":1}"#,
        ] {
            assert!(
                matches!(
                    ClientFrame::from_json(unsupported),
                    Err(ClientFrameError::Unsupported(_))
                ),
                "{unsupported}"
            );
        }
        assert!(matches!(
            ClientFrame::from_msgpack(&[0xc1]),
            Err(ClientFrameError::Undecodable(_))
        ));
        // Found by the property tests: a 1 KiB frame of nested arrays overflowed the stack
        // and aborted the gateway. Past the JSON nesting limit it is not MessagePack we read.
        let mut nested = vec![0x91; 1_000];
        nested.push(0xc0);
        assert!(matches!(
            ClientFrame::from_msgpack(&nested),
            Err(ClientFrameError::Undecodable(_))
        ));
    }

    #[test]
    fn negotiation() {
        assert_eq!(Protocol::negotiate([]), Ok(None));
        assert_eq!(
            Protocol::negotiate(["foo", "ziraai.v1.msgpack", "ziraai.v1.json"]),
            Ok(Some(Protocol::MsgPack))
        );
        assert_eq!(
            Protocol::negotiate([" ziraai.v1.json"]),
            Ok(Some(Protocol::Json))
        );
        assert!(Protocol::negotiate(["graphql-ws"]).is_err());
    }

    #[test]
    fn refresh_frames() {
        assert_eq!(
            ClientFrame::from_json(r#"{"type":"auth","token":"a.b.c"}"#).ok(),
            Some(ClientFrame::Auth {
                token: "a.b.c".into()
            })
        );
        let packed =
            rmp_serde::to_vec_named(&json!({"type": "auth", "token": "t"})).expect("encode");
        assert_eq!(
            ClientFrame::from_msgpack(&packed).ok(),
            Some(ClientFrame::Auth { token: "t".into() })
        );
        assert!(matches!(
            ClientFrame::from_json(r#"{"type":"auth"}"#),
            Err(ClientFrameError::Unsupported(_))
        ));
        let done = ServerFrame::Authenticated {
            expires_at: "2026-11-26T06:00:00Z".into(),
        };
        assert_eq!(
            done.to_json(),
            r#"{"type":"authenticated","expiresAt":"2026-11-26T06:00:00Z"}"#
        );
        let m: ServerFrame = rmp_serde::from_slice(&done.to_msgpack()).expect("msgpack");
        assert_eq!(m, done);
    }
}
