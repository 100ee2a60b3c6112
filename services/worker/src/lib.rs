//! ZiraAI Realtime worker: consumes analysis jobs ([`WorkerApp`]) and publishes their
//! outcomes to the `NOTIFY` stream.
//!
//! [`Publisher`] waits for the PubAck of every event and retries with exponential
//! back-off on the transient failures (timeout, no responders while a stream leader
//! is elected, broken connection), always with the same `Nats-Msg-Id`, so a retry
//! that reaches the stream twice is stored once (JetStream de-duplication).

pub mod analyzer;
pub mod app;
pub mod breaker;
pub mod demo;
pub mod dev_analyzer;
pub mod job;
mod runner;

pub use app::{WorkerApp, WorkerProbe};
pub use runner::Counters;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use ziraai_proto::analysis::AnalysisOutcome;
use ziraai_proto::{ENVELOPE_VERSION, Envelope, PayloadEncoding, UserId, headers};

/// First retry delay; doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Attempts per publish before giving up.
pub const DEFAULT_ATTEMPTS: u32 = 8;

/// What a successful publish returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence: the event's cursor value for clients.
    pub seq: u64,
    /// True when the stream had the same `Nats-Msg-Id` already (a retry or a re-run).
    pub duplicate: bool,
}

/// Why a publish failed for good.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("publish refused: {0}")]
    Permanent(String),
}

/// Publishes envelopes to `notify.<userId>` and waits for the stream's PubAck.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    attempts: u32,
    encoding: PayloadEncoding,
}

impl Publisher {
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            attempts: DEFAULT_ATTEMPTS,
            encoding: PayloadEncoding::Json,
        }
    }

    /// Sets the number of attempts (at least one).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
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

    /// Publishes `envelope` for `user` with `event_id` as `Nats-Msg-Id`.
    pub async fn publish(
        &self,
        user: &UserId,
        envelope: &Envelope,
        event_id: &str,
    ) -> Result<Published, PublishError> {
        let subject = user.notify_subject();
        let body = Bytes::from(envelope.encode(self.encoding));
        let mut hdrs = HeaderMap::new();
        hdrs.insert(async_nats::header::NATS_MESSAGE_ID, event_id);
        hdrs.insert(headers::KIND, envelope.kind.as_str());
        hdrs.insert(headers::ENVELOPE, ENVELOPE_VERSION);
        hdrs.insert(headers::CONTENT_TYPE, self.encoding.content_type());
        let mut backoff = INITIAL_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            let msg = PublishMessage::build()
                .payload(body.clone())
                .headers(hdrs.clone());
            let outcome = match self.js.send_publish(subject.clone(), msg).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ack) => {
                    return Ok(Published {
                        seq: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Err(e) if is_transient(e.kind()) => {
                    tracing::warn!(%subject, event_id, attempt, error = %e, "publish failed; retrying");
                    last = e.to_string();
                }
                Err(e) => return Err(PublishError::Permanent(e.to_string())),
            }
            if attempt < self.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        Err(PublishError::Exhausted {
            attempts: self.attempts,
            last,
        })
    }
}

/// Failures worth retrying: the stream may answer on the next attempt.
fn is_transient(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_kinds_are_retried() {
        assert!(is_transient(PublishErrorKind::TimedOut));
        // "no responders" surfaces as StreamNotFound while a stream has no leader.
        assert!(is_transient(PublishErrorKind::StreamNotFound));
        assert!(!is_transient(PublishErrorKind::MaxPayloadExceeded));
        assert!(!is_transient(PublishErrorKind::WrongLastSequence));
    }
}
