//! Publishing without waiting for each PubAck: [`PendingPublish`] (one event sent, its
//! PubAck awaited later, with the publisher's retries) and [`Pipeline`] (a bounded
//! window of them, outcomes in the order sent).
//!
//! A PubAck is the stream's back-pressure, so a producer must not skip it (a core
//! publish that nobody acknowledges is dropped by nats-server under load, "excessive
//! stream ingest rate"); it must stop *waiting* for each one before sending the next.
//! Pipelined events keep every guarantee of [`Publisher::publish`](crate::Publisher):
//! the same checks before sending, the same `Nats-Msg-Id` on every retry (stored once),
//! transient failures retried for [`RETRY_WINDOW`].
//!
//! Order: one connection's messages are stored in the order sent, so events sent
//! through one [`Publisher`](crate::Publisher) (or [`Pipeline`]) are stored in that
//! order while nothing fails. A retried event is stored when its retry arrives, which
//! can be after events sent later (its first attempt was lost while they went
//! through); a producer needing one user's events strictly in order across failures
//! awaits that user's previous event before sending the next.

use std::future::Future;
use std::pin::Pin;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use tracing::Instrument as _;
use ziraai_proto::UserId;

use crate::publisher::is_transient;
use crate::{CheckedEvent, INITIAL_BACKOFF, MAX_BACKOFF, PublishError, Published, RETRY_WINDOW};

type Sent = Result<PublishAckFuture, jetstream::context::PublishError>;

/// One event sent, its PubAck not yet awaited ([`Publisher::send`](crate::Publisher::send)).
/// Dropping it gives up waiting (the event may still be stored).
#[must_use = "the PubAck says whether the event was stored: await `acked`"]
pub struct PendingPublish {
    js: jetstream::Context,
    subject: String,
    body: Bytes,
    headers: HeaderMap,
    span: tracing::Span,
    started: tokio::time::Instant,
    first: Sent,
}

impl PendingPublish {
    /// Sends the first attempt; its failure is kept for [`Self::acked`] to retry.
    pub(crate) async fn send(
        js: jetstream::Context,
        subject: String,
        body: Bytes,
        headers: HeaderMap,
        span: tracing::Span,
    ) -> Self {
        let started = tokio::time::Instant::now();
        let first = js
            .send_publish(subject.clone(), message(&body, &headers))
            .instrument(span.clone())
            .await;
        Self {
            js,
            subject,
            body,
            headers,
            span,
            started,
            first,
        }
    }

    /// Waits for the PubAck, retrying transient failures (time-out, no responders
    /// during a leader election, a broken connection) with the same `Nats-Msg-Id`
    /// until [`RETRY_WINDOW`] has passed since the first send.
    pub async fn acked(self) -> Result<Published, PublishError> {
        let span = self.span.clone();
        let outcome = self.until_acked().instrument(span.clone()).await;
        match &outcome {
            Ok(p) => {
                span.record("messaging.nats.stream.sequence", p.seq);
                span.record("messaging.nats.duplicate", p.duplicate);
            }
            Err(e) => {
                let kind = match e {
                    PublishError::Invalid(_) => "invalid_event",
                    PublishError::Exhausted { .. } => "retries_exhausted",
                    PublishError::Permanent(_) => "refused",
                };
                span.record("error.type", kind);
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", e.to_string());
            }
        }
        outcome
    }

    async fn until_acked(self) -> Result<Published, PublishError> {
        let Self {
            js,
            subject,
            body,
            headers,
            started,
            first,
            ..
        } = self;
        let event_id = headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map_or("", |v| v.as_str());
        let mut backoff = INITIAL_BACKOFF;
        let mut attempt = 1;
        let mut sent = first;
        let last = loop {
            let outcome = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let last = match outcome {
                Ok(ack) => {
                    return Ok(Published {
                        seq: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Err(e) if is_transient(e.kind()) => {
                    tracing::warn!(%subject, event_id, attempt, error = %e, "publish failed; retrying");
                    e.to_string()
                }
                Err(e) => return Err(PublishError::Permanent(e.to_string())),
            };
            if started.elapsed() + backoff >= RETRY_WINDOW {
                break last;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
            sent = js
                .send_publish(subject.clone(), message(&body, &headers))
                .await;
        };
        Err(PublishError::Exhausted {
            attempts: attempt,
            last,
        })
    }
}

fn message(body: &Bytes, headers: &HeaderMap) -> PublishMessage {
    PublishMessage::build()
        .payload(body.clone())
        .headers(headers.clone())
}

type Acked = Pin<Box<dyn Future<Output = Result<Published, PublishError>> + Send>>;

/// Up to `window` publishes in flight on one [`Publisher`](crate::Publisher); outcomes
/// come back in the order the events were pushed.
///
/// ```ignore
/// let mut pipeline = Pipeline::new(publisher.clone(), 64);
/// for (user, event) in events {
///     if let Some(outcome) = pipeline.push(&user, &event).await {
///         outcome?; // the oldest event's PubAck
///     }
/// }
/// for outcome in pipeline.finish().await {
///     outcome?;
/// }
/// ```
pub struct Pipeline {
    publisher: crate::Publisher,
    window: usize,
    in_flight: FuturesOrdered<Acked>,
}

impl Pipeline {
    /// A pipeline of at most `window` unacknowledged events (at least 1). Keep the
    /// total of all pipelines on one connection under the JetStream context's
    /// `max_ack_inflight` (5,000 by default), above which a send waits for a retry.
    pub fn new(publisher: crate::Publisher, window: usize) -> Self {
        Self {
            publisher,
            window: window.max(1),
            in_flight: FuturesOrdered::new(),
        }
    }

    /// Events sent whose outcome has not been returned yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends `event` for `user`. When `window` events are in flight already, first
    /// waits for the oldest one's PubAck (with its retries) and returns its outcome.
    pub async fn push(
        &mut self,
        user: &UserId,
        event: &CheckedEvent,
    ) -> Option<Result<Published, PublishError>> {
        let oldest = if self.in_flight() >= self.window {
            self.next().await
        } else {
            None
        };
        let pending = self.publisher.send_checked(user, event).await;
        self.in_flight.push_back(Box::pin(pending.acked()));
        oldest
    }

    /// The oldest outcome not returned yet (waiting for it), or `None` when nothing is
    /// in flight.
    pub async fn next(&mut self) -> Option<Result<Published, PublishError>> {
        self.in_flight.next().await
    }

    /// Waits for every event still in flight; their outcomes in the order pushed.
    pub async fn finish(mut self) -> Vec<Result<Published, PublishError>> {
        let mut outcomes = Vec::with_capacity(self.in_flight());
        while let Some(outcome) = self.next().await {
            outcomes.push(outcome);
        }
        outcomes
    }
}
