//! From a republished NATS message to an event frame, and the counters of that path.
//!
//! Messages on `live.<userId>` carry the stream sequence in `Nats-Sequence` (added by
//! the stream's RePublish), the producer's `Nats-Msg-Id`, and the envelope in the
//! body. A message that cannot become an event is skipped, counted and logged with
//! its sequence: a producer's mistake never stalls a user's stream.

use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::Message;
use ziraai_proto::{Envelope, EventFrame, PayloadEncoding, headers};

/// Counters of the delivery path (exported by `/health`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames queued to sockets.
    pub delivered: AtomicU64,
    /// Live messages skipped because they were not valid events.
    pub malformed: AtomicU64,
    /// Sockets closed because they could not keep up (queue full or write timed out).
    pub slow_consumers: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "framesQueued": self.delivered.load(Ordering::Relaxed),
            "malformedEventsSkipped": self.malformed.load(Ordering::Relaxed),
            "slowConsumersClosed": self.slow_consumers.load(Ordering::Relaxed),
        })
    }
}

/// Decodes a republished message; `None` (counted and logged) if it is not an event.
pub fn decode_event(msg: &Message, stats: &Stats) -> Option<EventFrame> {
    let hdrs = msg.headers.as_ref();
    let header = |name: &str| hdrs.and_then(|h| h.get(name)).map(|v| v.as_str());
    let Some(seq) = header("Nats-Sequence").and_then(|s| s.parse::<u64>().ok()) else {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(subject = %msg.subject, "live message without Nats-Sequence skipped (not from the NOTIFY stream's RePublish)");
        return None;
    };
    let decoded = PayloadEncoding::from_content_type(header(headers::CONTENT_TYPE))
        .and_then(|enc| Envelope::decode(&msg.payload, enc));
    let envelope = match decoded {
        Ok(e) => e,
        Err(e) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(subject = %msg.subject, seq, error = %e, "malformed event skipped");
            return None;
        }
    };
    let id = header("Nats-Msg-Id")
        .filter(|s| !s.is_empty())
        .map_or_else(|| seq.to_string(), str::to_owned);
    Some(EventFrame {
        seq,
        id,
        kind: envelope.kind,
        data: envelope.data,
        occurred_at: envelope.occurred_at,
    })
}
