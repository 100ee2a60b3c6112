//! [`Publisher`]: puts an envelope on `notify.<userId>` and waits for the stream's
//! PubAck ([`Publisher::publish`]), or sends it and returns a [`PendingPublish`] to
//! await later ([`Publisher::send`], and a window of them in a [`Pipeline`]).
//!
//! Before anything is sent, the envelope is checked with the code the gateway decodes
//! with ([`Envelope::decode`] on the encoded body: the kind rule, `data` an object, the
//! timestamp), its size against the `NOTIFY` stream's largest message (body and
//! headers, as the server counts) and the event id; the user id is a [`UserId`], so
//! its rule holds by type. An event the gateway could not deliver is refused with
//! [`InvalidEvent`] instead of being stored and skipped by every gateway.
//!
//! Transient failures (time-out, no responders while a stream leader is elected, a
//! broken connection) are retried with exponential back-off for [`RETRY_WINDOW`] (a
//! leader election fits in it), always with the same
//! `Nats-Msg-Id`, so a retry that reaches the stream twice is stored once (JetStream
//! de-duplication); [`Published::duplicate`] says when the id was stored already.
//!
//! Each publish is a `notify.publish` span (a child of the caller's span, e.g. the
//! worker's `job`), and its W3C `traceparent`/`tracestate` travel in the event's
//! headers, so the gateway's delivery spans join the same trace. The trace headers are
//! best-effort: an event that fits the stream only without them is sent without them.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use tracing::field::Empty;
use ziraai_common::nats::NOTIFY_MAX_MESSAGE;
use ziraai_proto::analysis::AnalysisOutcome;
use ziraai_proto::envelope::EnvelopeError;
use ziraai_proto::{ENVELOPE_VERSION, Envelope, PayloadEncoding, UserId, headers};

pub use crate::pending::{PendingPublish, Pipeline};

/// First retry delay; doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a publish keeps retrying transient failures before giving up: longer than
/// a stream leader election in a cluster (the followers wait 4 to 9 s for the dead
/// leader's heartbeat, then vote), during which the stream answers "no responders" at
/// once, so a count of quick attempts alone (7 s of back-off) could give up first.
pub const RETRY_WINDOW: Duration = Duration::from_secs(30);

/// What a successful publish returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence: the event's cursor value for clients. For a duplicate, the
    /// sequence the event was stored at earlier.
    pub seq: u64,
    /// True when the stream had the same `Nats-Msg-Id` already (a retry or a re-run).
    pub duplicate: bool,
}

/// Why an event is refused before it is sent: a gateway could not deliver it.
#[derive(Debug, thiserror::Error)]
pub enum InvalidEvent {
    /// The encoded body does not decode as the gateway decodes it.
    #[error("the envelope would not decode at the gateway: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Body and headers exceed the `NOTIFY` stream's `max_msg_size`.
    #[error("the event is {size} bytes with its headers; the NOTIFY stream stores at most {max}")]
    TooLarge { size: usize, max: usize },
    /// The event id (`Nats-Msg-Id`) is empty or holds a control character.
    #[error("event id {0:?} must be non-empty and free of control characters")]
    BadEventId(String),
}

/// Why a publish failed for good.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid event: {0}")]
    Invalid(#[from] InvalidEvent),
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("publish refused: {0}")]
    Permanent(String),
}

/// Publishes envelopes to `notify.<userId>` and waits for the stream's PubAck. Cheap
/// to clone; clones share one connection (and its order). For throughput, pipeline
/// ([`Pipeline`]) and use a few publishers on connections of their own.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    encoding: PayloadEncoding,
}

/// An event checked as a gateway will read it: the body and headers to send.
#[derive(Debug, Clone)]
pub struct CheckedEvent {
    body: Bytes,
    headers: HeaderMap,
    size: usize,
}

impl CheckedEvent {
    /// Encodes `envelope` and checks it; sends nothing, so a CLI can refuse bad input
    /// before it connects.
    pub fn new(
        envelope: &Envelope,
        event_id: &str,
        encoding: PayloadEncoding,
    ) -> Result<Self, InvalidEvent> {
        if event_id.is_empty() || event_id.chars().any(char::is_control) {
            return Err(InvalidEvent::BadEventId(event_id.to_owned()));
        }
        let body = envelope.encode(encoding);
        // The gateway's own decoding, so both sides apply one rule.
        Envelope::decode(&body, encoding)?;
        let mut hdrs = HeaderMap::new();
        hdrs.insert(async_nats::header::NATS_MESSAGE_ID, event_id);
        hdrs.insert(headers::KIND, envelope.kind.as_str());
        hdrs.insert(headers::ENVELOPE, ENVELOPE_VERSION);
        hdrs.insert(headers::CONTENT_TYPE, encoding.content_type());
        let size = body.len() + header_len(&hdrs);
        if size > NOTIFY_MAX_MESSAGE {
            return Err(InvalidEvent::TooLarge {
                size,
                max: NOTIFY_MAX_MESSAGE,
            });
        }
        Ok(Self {
            body: Bytes::from(body),
            headers: hdrs,
            size,
        })
    }

    /// Bytes the stream counts for this event (body and headers).
    pub fn size(&self) -> usize {
        self.size
    }

    fn event_id(&self) -> &str {
        self.headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map_or("", |v| v.as_str())
    }
}

impl Publisher {
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            encoding: PayloadEncoding::Json,
        }
    }

    /// Publishes bodies as MessagePack instead of JSON.
    pub fn with_encoding(mut self, encoding: PayloadEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Publishes an analysis outcome; its event id derives from the analysis id.
    pub async fn publish_outcome(
        &self,
        outcome: &AnalysisOutcome,
    ) -> Result<Published, PublishError> {
        self.publish(
            outcome.user_id(),
            &outcome.to_envelope(),
            &outcome.event_id(),
        )
        .await
    }

    /// Publishes `envelope` for `user` with `event_id` as `Nats-Msg-Id`, after
    /// checking it ([`CheckedEvent::new`]).
    pub async fn publish(
        &self,
        user: &UserId,
        envelope: &Envelope,
        event_id: &str,
    ) -> Result<Published, PublishError> {
        let event = CheckedEvent::new(envelope, event_id, self.encoding)?;
        self.publish_checked(user, &event).await
    }

    /// The encoding this publisher sends bodies in.
    pub fn encoding(&self) -> PayloadEncoding {
        self.encoding
    }

    /// Publishes an event checked earlier (with [`Self::encoding`]) and waits for its
    /// PubAck: [`Self::send_checked`], then [`PendingPublish::acked`].
    pub async fn publish_checked(
        &self,
        user: &UserId,
        event: &CheckedEvent,
    ) -> Result<Published, PublishError> {
        self.send_checked(user, event).await.acked().await
    }

    /// Checks `envelope` ([`CheckedEvent::new`]) and sends it for `user` without
    /// waiting for the PubAck: see [`Self::send_checked`].
    pub async fn send(
        &self,
        user: &UserId,
        envelope: &Envelope,
        event_id: &str,
    ) -> Result<PendingPublish, PublishError> {
        let event = CheckedEvent::new(envelope, event_id, self.encoding)?;
        Ok(self.send_checked(user, &event).await)
    }

    /// Sends an event checked earlier without waiting for its PubAck; the returned
    /// [`PendingPublish`] waits for it (and retries) when awaited. Sending several
    /// before awaiting any pipelines them on this connection: the server stores them
    /// in the order sent. Returns once the message is queued on the connection (a
    /// full client buffer or the context's `max_ack_inflight` holds it back); a
    /// failure of this first attempt is retried by [`PendingPublish::acked`].
    pub async fn send_checked(&self, user: &UserId, event: &CheckedEvent) -> PendingPublish {
        let subject = user.notify_subject();
        let span = publish_span(&subject, event.event_id());
        let headers = with_trace_context(&span, event);
        PendingPublish::send(self.js.clone(), subject, event.body.clone(), headers, span).await
    }
}

/// The `notify.publish` span of one event, a child of the caller's span.
fn publish_span(subject: &str, event_id: &str) -> tracing::Span {
    tracing::info_span!(
        "notify.publish",
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.destination.name = %subject,
        messaging.operation.type = "publish",
        messaging.message.id = event_id,
        messaging.nats.stream.sequence = Empty,
        messaging.nats.duplicate = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
}

/// `event`'s headers with `span`'s trace context added, as long as the event still
/// fits the stream: else `tracestate` is left out, then `traceparent` too.
fn with_trace_context(span: &tracing::Span, event: &CheckedEvent) -> HeaderMap {
    let mut headers = event.headers.clone();
    ziraai_common::telemetry::inject(span, &mut headers);
    let fits = |h: &HeaderMap| event.body.len() + header_len(h) <= NOTIFY_MAX_MESSAGE;
    if fits(&headers) {
        return headers;
    }
    let mut without_state = event.headers.clone();
    if let Some(parent) = headers.get(TRACEPARENT) {
        without_state.insert(TRACEPARENT, parent.as_str());
    }
    if fits(&without_state) {
        return without_state;
    }
    tracing::debug!(
        event_id = event.event_id(),
        "event at the size limit: sent without trace context"
    );
    event.headers.clone()
}

/// The W3C trace context header.
const TRACEPARENT: &str = "traceparent";

/// Bytes of the header block on the wire, which the server counts against
/// `max_msg_size`: `NATS/1.0\r\n`, each `Name: value\r\n`, then `\r\n`.
fn header_len(hdrs: &HeaderMap) -> usize {
    let lines: usize = hdrs
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| AsRef::<str>::as_ref(name).len() + 2 + v.as_str().len() + 2)
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

/// Failures worth retrying: the stream may answer on the next attempt.
pub(crate) fn is_transient(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending
    )
}

#[cfg(test)]
#[path = "publisher_tests.rs"]
mod tests;
