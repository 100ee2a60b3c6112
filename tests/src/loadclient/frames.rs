//! What load clients read and write: native frames and SignalR hub messages, decoded
//! into just the fields a client acts on. Nothing here panics on bad input: every
//! decoder returns an error string for the client's `Disconnected` reason.

use bytes::Bytes;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use ziraai_proto::signalr::{HubProtocol, RS, ServerMessage, read_varint};
use ziraai_proto::{ClientFrame, msgpack};

/// A native server frame, as far as a load client cares.
#[derive(Debug, PartialEq)]
pub(super) enum Native {
    Welcome,
    Event {
        seq: u64,
        analysis_id: String,
    },
    Error {
        code: String,
        message: String,
    },
    /// `pong`, `authenticated`, or a type this client does not know.
    Other,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    data: Option<Arg>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct RawData {
    #[serde(rename = "analysisId", default)]
    analysis_id: Option<Id>,
}

/// An analysis id: text or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Unsigned(u64),
    Signed(i64),
}

impl Id {
    fn into_string(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Unsigned(n) => n.to_string(),
            Self::Signed(n) => n.to_string(),
        }
    }
}

/// An event's data (or any invocation argument): its `analysisId` if it has a usable
/// one; anything else is accepted and ignored.
#[derive(Deserialize)]
#[serde(untagged)]
enum Arg {
    Data(RawData),
    Other(serde::de::IgnoredAny),
}

fn analysis_id(data: Option<Arg>) -> Option<String> {
    match data? {
        Arg::Data(d) => d.analysis_id.map(Id::into_string),
        Arg::Other(_) => None,
    }
}

/// Decodes a native frame: JSON text or MessagePack binary.
pub(super) fn native(msgpack: bool, bytes: &[u8]) -> Result<Native, String> {
    let raw: RawFrame = if msgpack {
        msgpack::from_slice(bytes).map_err(|e| format!("bad MessagePack frame: {e}"))?
    } else {
        serde_json::from_slice(bytes).map_err(|e| format!("bad JSON frame: {e}"))?
    };
    Ok(match raw.kind.as_str() {
        "welcome" => Native::Welcome,
        "event" => {
            let seq = raw.seq.ok_or("event frame without seq")?;
            let analysis_id = analysis_id(raw.data).or(raw.id).unwrap_or_default();
            Native::Event { seq, analysis_id }
        }
        "error" => Native::Error {
            code: raw.code.unwrap_or_default(),
            message: raw.message.unwrap_or_default(),
        },
        _ => Native::Other,
    })
}

/// The native ack of every event up to `seq`, in the socket's encoding.
pub(super) fn native_ack(msgpack: bool, seq: u64) -> Message {
    let frame = ClientFrame::Ack { seq };
    if msgpack {
        // A map of a string and an integer: encoding cannot fail.
        Message::Binary(Bytes::from(
            rmp_serde::to_vec_named(&frame).unwrap_or_default(),
        ))
    } else {
        Message::Text(serde_json::to_string(&frame).unwrap_or_default().into())
    }
}

/// A hub message from the server, as far as a load client cares.
#[derive(Debug, PartialEq)]
pub(super) enum Hub {
    /// Type 1: an event (its first argument's `analysisId`).
    Invocation {
        analysis_id: String,
    },
    /// Types 2–5: counted by stateful reconnect, otherwise ignored.
    Tracked,
    Ping,
    Close {
        error: Option<String>,
        allow_reconnect: bool,
    },
    Ack(u64),
    Sequence(u64),
    /// Unknown types (ignored, as the official client does).
    Other,
}

/// The hub protocol of a SignalR client.
pub(super) fn hub_protocol(msgpack: bool) -> HubProtocol {
    if msgpack {
        HubProtocol::MessagePack
    } else {
        HubProtocol::Json
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonHub {
    #[serde(rename = "type")]
    kind: u64,
    #[serde(default)]
    arguments: Option<Vec<Arg>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    allow_reconnect: Option<bool>,
    #[serde(default)]
    sequence_id: Option<u64>,
}

/// Splits and decodes the hub messages of one WebSocket message.
pub(super) fn hub(msgpack: bool, bytes: &[u8]) -> Result<Vec<Hub>, String> {
    let mut out = Vec::new();
    if msgpack {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (len, used) = read_varint(rest).map_err(|e| e.to_string())?;
            let end = used
                .checked_add(len)
                .filter(|end| *end <= rest.len())
                .ok_or("truncated MessagePack hub message")?;
            out.push(hub_msgpack(&rest[used..end])?);
            rest = &rest[end..];
        }
    } else {
        let mut records = bytes.split(|b| *b == RS);
        let last = records.next_back().unwrap_or_default();
        if !last.is_empty() {
            return Err("JSON hub message without a record separator".into());
        }
        for record in records {
            let m: JsonHub =
                serde_json::from_slice(record).map_err(|e| format!("bad JSON hub message: {e}"))?;
            let id = if m.kind == 1 {
                first_id(m.arguments)
            } else {
                String::new()
            };
            out.push(classify(
                m.kind,
                id,
                m.error,
                m.allow_reconnect.unwrap_or(false),
                m.sequence_id,
            )?);
        }
    }
    Ok(out)
}

fn first_id(arguments: Option<Vec<Arg>>) -> String {
    analysis_id(arguments.and_then(|a| a.into_iter().next())).unwrap_or_default()
}

fn classify(
    kind: u64,
    analysis_id: String,
    error: Option<String>,
    allow_reconnect: bool,
    sequence_id: Option<u64>,
) -> Result<Hub, String> {
    Ok(match kind {
        1 => Hub::Invocation { analysis_id },
        2..=5 => Hub::Tracked,
        6 => Hub::Ping,
        7 => Hub::Close {
            error,
            allow_reconnect,
        },
        8 => Hub::Ack(sequence_id.ok_or("Ack without sequenceId")?),
        9 => Hub::Sequence(sequence_id.ok_or("Sequence without sequenceId")?),
        _ => Hub::Other,
    })
}

/// Element types of the MessagePack layouts this client reads: `[1, headers,
/// invocationId, target, [arguments], streamIds?]`, `[7, error, allowReconnect?]`,
/// `[8|9, sequenceId]`. Decoded as a sequence of untyped values, then picked apart.
#[derive(Deserialize)]
#[serde(untagged)]
enum Element {
    Int(u64),
    Bool(bool),
    Text(String),
    Args(Vec<Arg>),
    Other(serde::de::IgnoredAny),
}

fn hub_msgpack(body: &[u8]) -> Result<Hub, String> {
    let items: Vec<Element> =
        msgpack::from_slice(body).map_err(|e| format!("bad MessagePack hub message: {e}"))?;
    let kind = match items.first() {
        Some(Element::Int(k)) => *k,
        _ => return Err("MessagePack hub message without a numeric type".into()),
    };
    let text = |i: usize| match items.get(i) {
        Some(Element::Text(s)) => Some(s.clone()),
        _ => None,
    };
    let int = |i: usize| match items.get(i) {
        Some(Element::Int(n)) => Some(*n),
        _ => None,
    };
    let allow = matches!(items.get(2), Some(Element::Bool(true)));
    let (error, seq) = (text(1), int(1));
    let id = match (kind, items.into_iter().nth(4)) {
        (1, Some(Element::Args(args))) => first_id(Some(args)),
        _ => String::new(),
    };
    classify(kind, id, error, allow, seq)
}

/// The handshake request (always a text frame, as the JS client sends it). Version 2
/// asks for stateful reconnect (when negotiate granted it).
pub(super) fn handshake_request(msgpack: bool, version: u8) -> Message {
    let name = if msgpack { "messagepack" } else { "json" };
    Message::Text(format!("{{\"protocol\":\"{name}\",\"version\":{version}}}\u{1e}").into())
}

/// Splits the handshake response off the first bytes: `Ok(rest)` on `{}`, `Err` on an
/// error answer or anything else.
pub(super) fn handshake_response(bytes: &[u8]) -> Result<&[u8], String> {
    let end = bytes
        .iter()
        .position(|b| *b == RS)
        .ok_or("handshake response without a record separator")?;
    let v: serde_json::Value = serde_json::from_slice(&bytes[..end])
        .map_err(|e| format!("bad handshake response: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!("handshake refused: {e}"));
    }
    Ok(&bytes[end + 1..])
}

/// A client hub message (Ping, Ack, Sequence, Close) as a WebSocket message. These
/// layouts are the same in both directions, so the server's encoder serves.
pub(super) fn hub_message(msgpack: bool, m: &ServerMessage<'_>) -> Message {
    let protocol = hub_protocol(msgpack);
    let bytes = m.encode(protocol);
    match protocol {
        HubProtocol::Json => Message::Text(String::from_utf8_lossy(&bytes).into_owned().into()),
        HubProtocol::MessagePack => Message::Binary(Bytes::from(bytes)),
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
