//! The event model: from a stored or republished NATS message to an [`Event`], its
//! encodings for sockets (native frames and hub invocations, each built here and only
//! here), and the counters of that path.
//!
//! Every event is read from the `NOTIFY` stream (`store`; the live path only takes a
//! message on `live.<userId>` as a doorbell, see `live`), so its sequence is the
//! server's; the producer's `Nats-Msg-Id` is its id and the body its envelope.
//! A message that cannot become an event is still an [`Event`] (with no frame) so
//! that sockets move their position past it: a producer's mistake is skipped, counted
//! and logged with its sequence, and never stalls a user's stream.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use async_nats::HeaderMap;
use axum::extract::ws::Message;
use bytes::Bytes;
use ziraai_proto::signalr::{HubProtocol, ServerMessage, target_for_kind};
use ziraai_proto::{Envelope, EventFrame, PayloadEncoding, Protocol, ServerFrame, headers};

/// How a socket wants its events: a native protocol or a SignalR hub protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Native(Protocol),
    Hub(HubProtocol),
}

impl Encoding {
    fn index(self) -> usize {
        match self {
            Self::Native(Protocol::Json) => 0,
            Self::Native(Protocol::MsgPack) => 1,
            Self::Hub(HubProtocol::Json) => 2,
            Self::Hub(HubProtocol::MessagePack) => 3,
        }
    }
}

/// Counters of the delivery path (exported by `/health`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames queued to sockets.
    pub delivered: AtomicU64,
    /// Live messages skipped because they were not valid events.
    pub malformed: AtomicU64,
    /// Sockets closed because they could not keep up (queue full or write timed out).
    pub slow_consumers: AtomicU64,
    /// Events fetched from the stream to fill a gap or replay a backlog.
    pub replayed: AtomicU64,
    /// Gaps detected: a live event revealing events that were not sent yet (the
    /// user's channel, or a socket, then reads them from the stream first).
    pub gaps: AtomicU64,
    /// Tracking records dropped because the tracking queue was full.
    pub tracking_dropped: AtomicU64,
    /// Sockets closed for sending frames faster than their allowance.
    pub rate_limited: AtomicU64,
    /// Socket handshakes refused because the process held its maximum of sockets.
    pub gateway_full: AtomicU64,
    /// Live messages that matched no stored event of their user (forged or
    /// unverifiable): never delivered.
    pub forged: AtomicU64,
    /// The `/metrics` instruments of the delivery path (latency, events by path...).
    pub metrics: crate::metrics::Instruments,
}

impl Stats {
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "framesQueued": get(&self.delivered),
            "malformedEventsSkipped": get(&self.malformed),
            "slowConsumersClosed": get(&self.slow_consumers),
            "eventsReplayed": get(&self.replayed),
            "gapsDetected": get(&self.gaps),
            "trackingRecordsDropped": get(&self.tracking_dropped),
            "rateLimitedClosed": get(&self.rate_limited),
            "gatewayFullRefused": get(&self.gateway_full),
            "forgedLiveMessagesDropped": get(&self.forged),
        })
    }
}

/// One event of a user's stream, decoded once and encoded at most once per protocol,
/// shared by every socket of that user on this gateway.
#[derive(Debug)]
pub struct Event {
    /// Stream sequence.
    pub seq: u64,
    /// Previous sequence of the same user as the hub read it from the stream (0 when
    /// unknown): above a socket's position it reveals a gap.
    pub last_seq: u64,
    /// `None` for a malformed message: sockets skip it but move past it.
    pub frame: Option<ServerFrame>,
    /// When it was published: the server's `Nats-Time-Stamp` of the stored message,
    /// else the envelope's `occurredAt` (the start of `ziraai_delivery_latency_seconds`).
    pub published: Option<SystemTime>,
    /// One lazily encoded message per [`Encoding`].
    encoded: [OnceLock<Message>; 4],
    /// The publisher's trace context, the store time and the delivery span.
    pub trace: crate::trace::EventTrace,
}

impl Event {
    /// Decodes headers and body; logs (with the sequence) what cannot be delivered.
    pub fn decode(seq: u64, last_seq: u64, hdrs: Option<&HeaderMap>, body: &[u8]) -> Self {
        let header = |name: &str| hdrs.and_then(|h| h.get(name)).map(|v| v.as_str());
        let decoded = PayloadEncoding::from_content_type(header(headers::CONTENT_TYPE))
            .and_then(|enc| Envelope::decode(body, enc));
        let mut published = hdrs
            .and_then(|h| h.get_last("Nats-Time-Stamp"))
            .and_then(|v| parse_time(v.as_str()));
        let frame = match decoded {
            Ok(envelope) => {
                if published.is_none() {
                    published = envelope.occurred_at.as_deref().and_then(parse_time);
                }
                let id = header("Nats-Msg-Id")
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| seq.to_string(), str::to_owned);
                Some(ServerFrame::Event(EventFrame {
                    seq,
                    id,
                    kind: envelope.kind,
                    data: envelope.data,
                    occurred_at: envelope.occurred_at,
                }))
            }
            Err(e) => {
                tracing::warn!(seq, error = %e, "malformed event skipped");
                None
            }
        };
        Self {
            seq,
            last_seq,
            frame,
            published,
            encoded: Default::default(),
            trace: crate::trace::EventTrace::from_headers(hdrs, published),
        }
    }

    /// Time from publish to now (zero when the clocks disagree); `None` without a
    /// publish time.
    pub fn since_published(&self) -> Option<std::time::Duration> {
        let at = self.published?;
        Some(SystemTime::now().duration_since(at).unwrap_or_default())
    }

    /// The event encoded for `encoding` (encoded on first use, then shared by every
    /// socket of the user on this gateway); `None` for a malformed event.
    pub fn encoded(&self, encoding: Encoding) -> Option<Message> {
        let frame = self.frame.as_ref()?;
        let cell = &self.encoded[encoding.index()];
        Some(
            cell.get_or_init(|| match encoding {
                Encoding::Native(protocol) => native_frame(frame, protocol),
                Encoding::Hub(protocol) => {
                    let ServerFrame::Event(e) = frame else {
                        // Only event frames are stored in an Event.
                        return Message::Binary(Bytes::new());
                    };
                    let target = target_for_kind(&e.kind);
                    let invocation = ServerMessage::Invocation {
                        target: &target,
                        argument: &e.data,
                    };
                    hub_frame(protocol, invocation.encode(protocol))
                }
            })
            .clone(),
        )
    }
}

/// An RFC 3339 timestamp (the server's `Nats-Time-Stamp`, an envelope's `occurredAt`).
fn parse_time(raw: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// A native frame in the WebSocket frame type of `protocol`: text for JSON, binary for
/// MessagePack. Events, the welcome, pongs and error frames all go through here.
pub(crate) fn native_frame(frame: &ServerFrame, protocol: Protocol) -> Message {
    match protocol {
        Protocol::Json => Message::Text(frame.to_json().into()),
        Protocol::MsgPack => Message::Binary(Bytes::from(frame.to_msgpack())),
    }
}

/// Wraps encoded hub-protocol bytes in the WebSocket frame type of `protocol`: text
/// for JSON (serde_json output plus 0x1E is UTF-8), binary for MessagePack.
pub(crate) fn hub_frame(protocol: HubProtocol, bytes: Vec<u8>) -> Message {
    match protocol {
        HubProtocol::Json => Message::Text(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                .into(),
        ),
        HubProtocol::MessagePack => Message::Binary(Bytes::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ids_and_skips_malformed_bodies() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "evt-1");
        let ok = Event::decode(5, 2, Some(&h), br#"{"kind":"a.b","data":{"x":1}}"#);
        match &ok.frame {
            Some(ServerFrame::Event(e)) => assert_eq!((e.seq, e.id.as_str()), (5, "evt-1")),
            other => panic!("{other:?}"),
        }
        let no_id = Event::decode(6, 5, None, br#"{"kind":"a.b","data":{}}"#);
        match &no_id.frame {
            Some(ServerFrame::Event(e)) => assert_eq!(e.id, "6", "the sequence is the id"),
            other => panic!("{other:?}"),
        }
        let bad = Event::decode(7, 6, None, b"{oops");
        assert!(bad.frame.is_none() && bad.encoded(Encoding::Native(Protocol::Json)).is_none());
    }

    #[test]
    fn the_publish_time_is_the_servers_else_the_envelopes() {
        let body = br#"{"kind":"a.b","data":{},"occurredAt":"2026-11-25T10:00:00Z"}"#;
        let envelope_only = Event::decode(1, 0, None, body);
        let occurred = parse_time("2026-11-25T10:00:00Z");
        assert!(occurred.is_some());
        assert_eq!(envelope_only.published, occurred);
        let mut h = HeaderMap::new();
        // A producer's own value comes first; the server appends its own last.
        h.append("Nats-Time-Stamp", "2020-01-01T00:00:00Z");
        h.append("Nats-Time-Stamp", "2026-11-25T10:00:01.5Z");
        let stored = Event::decode(2, 1, Some(&h), body);
        assert_eq!(stored.published, parse_time("2026-11-25T10:00:01.5Z"));
        assert!(
            stored
                .since_published()
                .is_some_and(|d| d > std::time::Duration::ZERO)
        );
        let none = Event::decode(3, 2, None, br#"{"kind":"a.b","data":{}}"#);
        assert_eq!((none.published, none.since_published()), (None, None));
    }

    #[test]
    fn encodes_once_per_encoding() {
        let e = Event::decode(1, 0, None, br#"{"kind":"a","data":{}}"#);
        let json = Encoding::Native(Protocol::Json);
        let (Some(Message::Text(a)), Some(Message::Text(b))) = (e.encoded(json), e.encoded(json))
        else {
            panic!("JSON is text")
        };
        assert_eq!(
            a.as_str().as_ptr(),
            b.as_str().as_ptr(),
            "shared, not re-encoded"
        );
        assert!(matches!(
            e.encoded(Encoding::Native(Protocol::MsgPack)),
            Some(Message::Binary(_))
        ));
        let Some(Message::Text(hub)) = e.encoded(Encoding::Hub(HubProtocol::Json)) else {
            panic!("hub JSON is text")
        };
        assert_eq!(
            hub.as_str(),
            "{\"arguments\":[{}],\"target\":\"A\",\"type\":1}\u{1e}"
        );
        assert!(matches!(
            e.encoded(Encoding::Hub(HubProtocol::MessagePack)),
            Some(Message::Binary(_))
        ));
    }
}
