//! The ASP.NET Core SignalR hub protocols, server side: handshake, JSON (records ending
//! in 0x1E) and MessagePack (VarInt length prefix, array layouts), as described in
//! `shared/reference/signalr-protocol.md`. Only what a push gateway sends and receives.

use serde_json::{Map, Value, json};

/// Record separator ending every JSON hub message and the handshake.
pub const RS: u8 = 0x1e;
/// Highest hub protocol version accepted (2 enables stateful reconnect).
pub const MAX_VERSION: u64 = 2;

/// The hub protocol a connection chose in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubProtocol {
    Json,
    MessagePack,
}

/// A parsed handshake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub protocol: HubProtocol,
    pub version: u64,
    /// Bytes after the handshake's record separator (more messages in the same frame).
    pub rest: Vec<u8>,
}

/// Why a handshake failed; `Display` is the text sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// No record separator yet: wait for more bytes.
    #[error("incomplete handshake")]
    Incomplete,
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion { protocol: String, version: u64 },
    #[error("An unexpected error occurred during connection handshake.")]
    Malformed,
    /// Timed out, or larger than the message limit without completing.
    #[error("Handshake was canceled.")]
    Canceled,
}

/// Parses a handshake request from the first bytes a client sent.
pub fn parse_handshake(bytes: &[u8]) -> Result<Handshake, HandshakeError> {
    let end = bytes
        .iter()
        .position(|b| *b == RS)
        .ok_or(HandshakeError::Incomplete)?;
    let v: Value = serde_json::from_slice(&bytes[..end]).map_err(|_| HandshakeError::Malformed)?;
    let name = v
        .get("protocol")
        .and_then(Value::as_str)
        .ok_or(HandshakeError::Malformed)?;
    let version = v
        .get("version")
        .and_then(Value::as_u64)
        .ok_or(HandshakeError::Malformed)?;
    let protocol = match name {
        "json" => HubProtocol::Json,
        "messagepack" => HubProtocol::MessagePack,
        other => return Err(HandshakeError::UnsupportedProtocol(other.to_owned())),
    };
    if version == 0 || version > MAX_VERSION {
        return Err(HandshakeError::UnsupportedVersion {
            protocol: name.to_owned(),
            version,
        });
    }
    Ok(Handshake {
        protocol,
        version,
        rest: bytes[end + 1..].to_vec(),
    })
}

/// The handshake response: `{}` on success, `{"error": …}` on failure; always JSON + RS.
pub fn handshake_response(error: Option<&HandshakeError>) -> Vec<u8> {
    let mut out = match error {
        None => b"{}".to_vec(),
        Some(e) => serde_json::to_vec(&json!({ "error": e.to_string() })).unwrap_or_default(),
    };
    out.push(RS);
    out
}

/// A hub message from a client (the kinds a push gateway acts on).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Type 1 (or 4, streaming): a call the client expects an answer to when it has an id.
    Invocation {
        invocation_id: Option<String>,
        target: String,
        streaming: bool,
    },
    Ping,
    Close,
    Ack(u64),
    Sequence(u64),
    /// Types 2, 3, 5 and unknown types: ignored.
    Other,
}

/// Why client bytes are not valid hub messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubMessageError {
    #[error("malformed hub message: {0}")]
    Malformed(String),
    #[error("hub message of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

fn malformed(why: impl Into<String>) -> HubMessageError {
    HubMessageError::Malformed(why.into())
}

fn classify(
    kind: u64,
    invocation_id: Option<String>,
    target: Option<&str>,
    seq: Option<u64>,
) -> Result<ClientMessage, HubMessageError> {
    Ok(match kind {
        1 | 4 => ClientMessage::Invocation {
            invocation_id: invocation_id.filter(|s| !s.is_empty()),
            target: target
                .ok_or_else(|| malformed("invocation without target"))?
                .to_owned(),
            streaming: kind == 4,
        },
        6 => ClientMessage::Ping,
        7 => ClientMessage::Close,
        8 => ClientMessage::Ack(seq.ok_or_else(|| malformed("ack without sequenceId"))?),
        9 => ClientMessage::Sequence(seq.ok_or_else(|| malformed("sequence without sequenceId"))?),
        _ => ClientMessage::Other,
    })
}

fn from_json(v: &Value) -> Result<ClientMessage, HubMessageError> {
    let kind = v
        .get("type")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("no numeric type"))?;
    let id = v
        .get("invocationId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    classify(
        kind,
        id,
        v.get("target").and_then(Value::as_str),
        v.get("sequenceId").and_then(Value::as_u64),
    )
}

fn from_msgpack_array(items: &[Value]) -> Result<ClientMessage, HubMessageError> {
    let kind = items
        .first()
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed("no numeric type"))?;
    match kind {
        // [type, headers, invocationId, target, arguments, streamIds?]
        1 | 4 => classify(
            kind,
            items.get(2).and_then(Value::as_str).map(str::to_owned),
            items.get(3).and_then(Value::as_str),
            None,
        ),
        8 | 9 => classify(kind, None, None, items.get(1).and_then(Value::as_u64)),
        _ => classify(kind, None, None, None),
    }
}

/// Splits and parses the hub messages of one frame in `protocol`.
pub fn parse_messages(
    protocol: HubProtocol,
    bytes: &[u8],
    max: usize,
) -> Result<Vec<ClientMessage>, HubMessageError> {
    match protocol {
        HubProtocol::Json => parse_json_messages(bytes, max),
        HubProtocol::MessagePack => parse_msgpack_messages(bytes, max),
    }
}

/// How many hub messages one frame carries, counted without parsing them (0x1E
/// separators for JSON, length prefixes for MessagePack; a malformed tail counts as
/// one more): what a frame costs against the client's frame allowance.
pub fn count_messages(protocol: HubProtocol, bytes: &[u8]) -> usize {
    match protocol {
        HubProtocol::Json => bytes.iter().filter(|b| **b == RS).count().max(1),
        HubProtocol::MessagePack => {
            let (mut n, mut rest) = (0, bytes);
            while !rest.is_empty() {
                n += 1;
                match read_varint(rest) {
                    Ok((len, used)) if used.saturating_add(len) <= rest.len() => {
                        rest = &rest[used + len..];
                    }
                    _ => break,
                }
            }
            n.max(1)
        }
    }
}

/// Splits and parses the JSON hub messages of one text frame.
pub fn parse_json_messages(
    bytes: &[u8],
    max: usize,
) -> Result<Vec<ClientMessage>, HubMessageError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|b| *b == RS)
            .ok_or_else(|| malformed("message not terminated by 0x1E"))?;
        if end > max {
            return Err(HubMessageError::TooLarge(end));
        }
        let v: Value =
            serde_json::from_slice(&rest[..end]).map_err(|e| malformed(e.to_string()))?;
        out.push(from_json(&v)?);
        rest = &rest[end + 1..];
    }
    Ok(out)
}

/// Splits and parses the length-prefixed MessagePack hub messages of one binary frame.
pub fn parse_msgpack_messages(
    bytes: &[u8],
    max: usize,
) -> Result<Vec<ClientMessage>, HubMessageError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, used) = read_varint(rest)?;
        if len > max {
            return Err(HubMessageError::TooLarge(len));
        }
        let body = rest
            .get(used..used + len)
            .ok_or_else(|| malformed("truncated message"))?;
        let v: Value = crate::msgpack::from_slice(body).map_err(|e| malformed(e.to_string()))?;
        let items = v
            .as_array()
            .ok_or_else(|| malformed("message is not an array"))?;
        out.push(from_msgpack_array(items)?);
        rest = &rest[used + len..];
    }
    Ok(out)
}

/// Reads a VarInt length (7 bits per byte, least significant first, at most 5 bytes).
pub fn read_varint(bytes: &[u8]) -> Result<(usize, usize), HubMessageError> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        if i == 4 && *b > 0x07 {
            return Err(malformed("length prefix too large"));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value as usize, i + 1));
        }
    }
    Err(malformed("truncated length prefix"))
}

/// Appends a VarInt length.
pub fn write_varint(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Server-to-client messages.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage<'a> {
    /// Fire-and-forget invocation of `target` with one argument.
    Invocation {
        target: &'a str,
        argument: &'a Map<String, Value>,
    },
    /// Completion carrying an error, for a client invocation with an id.
    CompletionError {
        invocation_id: &'a str,
        error: &'a str,
    },
    Ping,
    Close {
        error: Option<&'a str>,
        allow_reconnect: bool,
    },
    Ack(u64),
    Sequence(u64),
}

impl ServerMessage<'_> {
    /// Encodes the message in `protocol`, framing included (RS or length prefix).
    pub fn encode(&self, protocol: HubProtocol) -> Vec<u8> {
        match protocol {
            HubProtocol::Json => {
                let v = match self {
                    Self::Invocation { target, argument } => {
                        json!({"type": 1, "target": target, "arguments": [argument]})
                    }
                    Self::CompletionError {
                        invocation_id,
                        error,
                    } => json!({"type": 3, "invocationId": invocation_id, "error": error}),
                    Self::Ping => json!({"type": 6}),
                    Self::Close {
                        error,
                        allow_reconnect,
                    } => {
                        let mut m = Map::new();
                        m.insert("type".into(), json!(7));
                        if let Some(e) = error {
                            m.insert("error".into(), json!(e));
                        }
                        // .NET writes only `true`; a Close with an error states
                        // `false` too, so a client reading the record sees the decision.
                        if *allow_reconnect || error.is_some() {
                            m.insert("allowReconnect".into(), json!(allow_reconnect));
                        }
                        Value::Object(m)
                    }
                    Self::Ack(n) => json!({"type": 8, "sequenceId": n}),
                    Self::Sequence(n) => json!({"type": 9, "sequenceId": n}),
                };
                let mut out = serde_json::to_vec(&v).unwrap_or_default();
                out.push(RS);
                out
            }
            HubProtocol::MessagePack => {
                let v = match self {
                    Self::Invocation { target, argument } => {
                        json!([1, {}, null, target, [argument], []])
                    }
                    Self::CompletionError {
                        invocation_id,
                        error,
                    } => json!([3, {}, invocation_id, 1, error]),
                    Self::Ping => json!([6]),
                    Self::Close {
                        error,
                        allow_reconnect,
                    } => json!([7, error, allow_reconnect]),
                    Self::Ack(n) => json!([8, n]),
                    Self::Sequence(n) => json!([9, n]),
                };
                let body = rmp_serde::to_vec(&v).unwrap_or_default();
                let mut out = Vec::with_capacity(body.len() + 5);
                write_varint(body.len(), &mut out);
                out.extend_from_slice(&body);
                out
            }
        }
    }
}

/// The invocation target of an event kind: PascalCase of its dotted (and underscored)
/// parts: `analysis.completed` → `AnalysisCompleted`, `crop.alert_raised` → `CropAlertRaised`.
pub fn target_for_kind(kind: &str) -> String {
    kind.split(['.', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
#[path = "signalr_tests.rs"]
mod tests;
