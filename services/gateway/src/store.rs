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
//!
//! Monotonic reads on a replicated stream: a direct get is answered by any replica,
//! and a follower may not have applied the newest messages yet (JetStream reads are not
//! read-after-write by default). A socket that was just sent event 120 by the live path
//! could then fill the gap before it from a lagging follower, be told "nothing more",
//! and move past events it never got. So the store keeps the highest stream sequence
//! this gateway has seen ([`EventStore::floor`]) and sends it as `min_last_seq` with
//! every direct get (server 2.12+, ADR-54 "JetStream Read-after-Write"): a replica
//! whose stream ends before it hands the request to the leader instead of answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::StatusCode;
use async_nats::jetstream::{self, message::StreamMessage};
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

/// Handle on `NOTIFY` for reads; a pointer (every socket and user channel holds one).
#[derive(Clone)]
pub struct EventStore(Arc<Shared>);

struct Shared {
    js: jetstream::Context,
    /// Highest stream sequence seen by any read of this gateway (see the module header).
    floor: AtomicU64,
    /// One STREAM.INFO at a time, its answer shared (see [`Self::bounds`]).
    bounds: BoundsFlight,
}

/// The STREAM.INFO requests of [`EventStore::bounds`]: how many were started, and the
/// latest answer with its number. The async lock lets one run at a time.
#[derive(Default)]
struct BoundsFlight {
    started: AtomicU64,
    latest: tokio::sync::Mutex<Option<(u64, Result<StreamBounds, String>)>>,
}

/// The direct-get API subject of `NOTIFY`.
const DIRECT_GET: &str = "$JS.API.DIRECT.GET.NOTIFY";

/// A direct-get request, serialised from borrowed fields (no JSON tree per read):
/// `{"seq":…,"next_by_subj":…}` or `{"last_by_subj":…}`, with `min_last_seq` once a
/// floor is known.
#[derive(Default, serde::Serialize)]
struct GetRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    min_last_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
        // Fails early when the stream is missing.
        js.get_stream_no_info(NOTIFY_STREAM)
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Self(Arc::new(Shared {
            js: js.clone(),
            floor: AtomicU64::new(0),
            bounds: BoundsFlight::default(),
        })))
    }

    /// The highest stream sequence this gateway has seen: no read is answered by a
    /// replica whose stream ends before it.
    pub fn floor(&self) -> u64 {
        self.0.floor.load(Ordering::Relaxed)
    }

    fn saw(&self, seq: u64) {
        self.0.floor.fetch_max(seq, Ordering::Relaxed);
    }

    /// One direct get of `request` with `min_last_seq` set to the floor: the message,
    /// `None` when there is none, an error otherwise (a replica behind the floor that
    /// could not hand over to a leader answers 412: retried by the callers).
    async fn direct_get(
        &self,
        mut request: GetRequest<'_>,
    ) -> Result<Option<StreamMessage>, StoreError> {
        request.min_last_seq = self.floor();
        // Serialising two numbers and a subject into a Vec cannot fail.
        let body = serde_json::to_vec(&request).unwrap_or_default();
        let client = self.0.js.client();
        let read = client.request(DIRECT_GET, Bytes::from(body));
        let reply = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Err(_) => return Err(StoreError("timed out".into())),
            Ok(Err(e)) => return Err(StoreError(e.to_string())),
            Ok(Ok(reply)) => reply,
        };
        match reply.status {
            Some(StatusCode::NOT_FOUND) => return Ok(None),
            Some(status) if status != StatusCode::OK => {
                let why = reply.description.as_deref().unwrap_or("no description");
                return Err(StoreError(format!("direct get answered {status}: {why}")));
            }
            _ => {}
        }
        let m = StreamMessage::try_from(reply).map_err(|e| StoreError(e.to_string()))?;
        self.saw(m.sequence);
        Ok(Some(m))
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
        let request = GetRequest {
            seq: Some(from),
            next_by_subj: Some(&subject),
            ..GetRequest::default()
        };
        let Some(m) = self.direct_get(request).await? else {
            return Ok(None);
        };
        let m = server_checked(m, &subject, from)?;
        let event = Event::decode(m.sequence, 0, Some(&m.headers), &m.payload);
        Ok(Some(Stored {
            event,
            payload: m.payload,
        }))
    }

    /// The sequence of `user`'s latest event (0 if none): where a fresh socket starts.
    pub async fn latest(&self, user: &UserId) -> Result<u64, StoreError> {
        Ok(self.latest_stored(user).await?.map_or(0, |(seq, _)| seq))
    }

    /// `user`'s latest event as (sequence, body), `None` if the user has none.
    pub async fn latest_stored(&self, user: &UserId) -> Result<Option<(u64, Bytes)>, StoreError> {
        let subject = user.notify_subject();
        let request = GetRequest {
            last_by_subj: Some(&subject),
            ..GetRequest::default()
        };
        match self.direct_get(request).await? {
            Some(m) => {
                let m = server_checked(m, &subject, 1)?;
                Ok(Some((m.sequence, m.payload)))
            }
            None => Ok(None),
        }
    }

    /// The stream's current first and last sequence: the answer of a STREAM.INFO
    /// request started after this call, shared by every call waiting meanwhile. Each
    /// resume asks (a cursor is checked against both ends), and a gateway restart brings
    /// thousands at once: they cost a few JetStream API requests instead of one each,
    /// which nats-server queues (and drops past its API queue limit).
    pub async fn bounds(&self) -> Result<StreamBounds, StoreError> {
        let flight = &self.0.bounds;
        // Any request numbered from here on starts after this call.
        let wanted = flight.started.load(Ordering::SeqCst) + 1;
        let mut latest = flight.latest.lock().await;
        if let Some((n, answer)) = latest.as_ref()
            && *n >= wanted
        {
            return answer.clone().map_err(StoreError);
        }
        let n = flight.started.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = self.stream_info().await.map_err(|e| e.0);
        *latest = Some((n, answer.clone()));
        answer.map_err(StoreError)
    }

    /// One STREAM.INFO of `NOTIFY`, bounded by [`READ_TIMEOUT`].
    async fn stream_info(&self) -> Result<StreamBounds, StoreError> {
        let info = async {
            // `get_stream` is one STREAM.INFO request; its answer carries the state.
            let s = self
                .0
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
            Ok(r) => {
                let bounds = r.map_err(StoreError)?;
                // The leader's answer: everything up to its last sequence is stored.
                self.saw(bounds.last_seq);
                Ok(bounds)
            }
        }
    }
}

/// Passes each NATS reconnection on once the stream's end is learned from its leader,
/// so the catch-up reads that follow (every local user's) cannot be answered "nothing
/// more" by a replica still behind: the doorbells lost during the outage never raised
/// the read floor. One STREAM.INFO per reconnection for the whole gateway.
pub fn after_learning_the_end(
    store: EventStore,
    mut reconnects: tokio::sync::watch::Receiver<u64>,
) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(*reconnects.borrow_and_update());
    tokio::spawn(async move {
        while reconnects.changed().await.is_ok() {
            let n = *reconnects.borrow_and_update();
            for attempt in 1..=3 {
                match store.bounds().await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::info!(attempt, error = %e, "learning where NOTIFY ends after a reconnection failed")
                    }
                }
            }
            if tx.send(n).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_get_requests_are_the_servers_json() {
        let next = GetRequest {
            seq: Some(7),
            next_by_subj: Some("notify.u-1"),
            ..GetRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&next).ok().as_deref(),
            Some(r#"{"seq":7,"next_by_subj":"notify.u-1"}"#)
        );
        let last = GetRequest {
            last_by_subj: Some("notify.u-1"),
            min_last_seq: 42,
            ..GetRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&last).ok().as_deref(),
            Some(r#"{"last_by_subj":"notify.u-1","min_last_seq":42}"#)
        );
    }
}
