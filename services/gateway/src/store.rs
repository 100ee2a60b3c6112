//! Reads a user's events back from the `NOTIFY` stream: live delivery (see `live`),
//! replay after a cursor, gap fills, polling. Direct get (`next_by_subj`) answers from
//! any replica without creating consumers, so a resume costs the server no state.
//!
//! Sequence integrity: a direct-get reply carries the stored message's own headers
//! first and the server's `Nats-Stream`, `Nats-Subject`, `Nats-Sequence` and
//! `Nats-Time-Stamp` appended after them, so a producer that set those headers itself
//! leaves two values. async-nats reads the **last** value of each into
//! `StreamMessage::{sequence, subject}` (the server's); here the subject is also
//! checked to be exactly the user's, so nothing a producer writes moves a sequence.

use std::time::Duration;

use async_nats::jetstream::{self, message::StreamMessage, stream::DirectGetErrorKind};
use bytes::Bytes;
use ziraai_common::nats::NOTIFY_STREAM;
use ziraai_proto::UserId;

use crate::event::Event;

/// Bound of one read from the stream.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the stream could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading stream NOTIFY failed: {0}")]
pub struct StoreError(String);

/// One event as stored, with its body.
#[derive(Debug)]
pub struct Stored {
    pub event: Event,
    pub payload: Bytes,
}

/// Checks a direct-get reply against what was asked: the server's subject (the last
/// `Nats-Subject`, see the module header) exactly `subject`, the sequence at least
/// `from`. Anything else is refused rather than delivered under a wrong sequence.
fn server_checked(m: StreamMessage, subject: &str, from: u64) -> Result<StreamMessage, StoreError> {
    if m.subject.as_str() != subject || m.sequence < from {
        return Err(StoreError(format!(
            "direct get for {subject} from {from} answered {} at {}",
            m.subject, m.sequence
        )));
    }
    Ok(m)
}

/// Handle on `NOTIFY` for reads.
#[derive(Clone)]
pub struct EventStore {
    stream: jetstream::stream::Stream<()>,
    js: jetstream::Context,
}

/// Where the stream starts and ends now.
#[derive(Debug, Clone, Copy)]
pub struct StreamBounds {
    /// Oldest sequence still stored (retention removes older ones).
    pub first_seq: u64,
    pub last_seq: u64,
}

impl EventStore {
    pub async fn new(js: &jetstream::Context) -> Result<Self, StoreError> {
        let stream = js
            .get_stream_no_info(NOTIFY_STREAM)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Self {
            stream,
            js: js.clone(),
        })
    }

    /// The first event of `user` with a sequence above `after`, `None` past the end
    /// (and for `after = u64::MAX`, which no sequence is above).
    pub async fn next_after(&self, user: &UserId, after: u64) -> Result<Option<Event>, StoreError> {
        Ok(self.next_stored(user, after).await?.map(|s| s.event))
    }

    /// Like [`Self::next_after`], with the stored body (the live path compares it).
    pub async fn next_stored(
        &self,
        user: &UserId,
        after: u64,
    ) -> Result<Option<Stored>, StoreError> {
        let Some(from) = after.checked_add(1) else {
            return Ok(None);
        };
        let subject = user.notify_subject();
        let read = self
            .stream
            .direct_get_next_for_subject(subject.as_str(), Some(from));
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Err(_) => Err(StoreError("timed out".into())),
            Ok(Ok(m)) => {
                let m = server_checked(m, &subject, from)?;
                let event = Event::decode(m.sequence, 0, Some(&m.headers), &m.payload);
                Ok(Some(Stored {
                    event,
                    payload: m.payload,
                }))
            }
            Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
        }
    }

    /// The sequence of `user`'s latest event (0 if none): where a fresh socket starts.
    pub async fn latest(&self, user: &UserId) -> Result<u64, StoreError> {
        let read = self
            .stream
            .direct_get_last_for_subject(user.notify_subject());
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Err(_) => Err(StoreError("timed out".into())),
            Ok(Ok(m)) => Ok(server_checked(m, &user.notify_subject(), 1)?.sequence),
            Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
        }
    }

    /// The stream's current first and last sequence.
    pub async fn bounds(&self) -> Result<StreamBounds, StoreError> {
        let info = async {
            // `get_stream` is one STREAM.INFO request; its answer carries the state.
            let s = self
                .js
                .get_stream(NOTIFY_STREAM)
                .await
                .map_err(|e| e.to_string())?;
            let state = &s.cached_info().state;
            Ok::<_, String>(StreamBounds {
                first_seq: state.first_sequence,
                last_seq: state.last_sequence,
            })
        };
        match tokio::time::timeout(READ_TIMEOUT, info).await {
            Err(_) => Err(StoreError("timed out".into())),
            Ok(r) => r.map_err(StoreError),
        }
    }
}
