//! Stateful reconnect (.NET 8 `withStatefulReconnect`) with the replay buffer backed by
//! the stream instead of memory, so a connection can resume on any gateway.
//!
//! The protocol numbers the server's tracked messages 1, 2, 3… per connection; the
//! client acknowledges them by number, and after a dropped socket it reconnects with
//! the same connection token and expects `Sequence{first unacknowledged}` followed by
//! everything from there. Here every tracked message is an event invocation in stream
//! order, so "message N" maps to a stream sequence: the gateway keeps, per connection,
//! in the KV bucket `SIGNALR`, the last acknowledged number and the stream sequence of
//! the last event it covered. Any gateway can then answer a resume: `Sequence{acked+1}`
//! and a replay from the stream; the client drops what it had already processed.
//!
//! The one tracked message that is not an event is a Completion (the answer to a client
//! invocation). While one is unacknowledged the record is marked `dirty` (written
//! before the Completion is sent) and a resume is refused (404), so the client falls
//! back to a full reconnect instead of mis-numbering.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ziraai_common::nats::SIGNALR_BUCKET;
use ziraai_proto::signalr::HubProtocol;

/// Bound of one KV operation.
const KV_TIMEOUT: Duration = Duration::from_secs(2);
/// Sent-but-unacknowledged messages remembered per connection; beyond it the
/// connection can no longer resume (the client would be far behind anyway).
const MAX_LOG: usize = 65_536;

/// What a gateway needs to resume a connection, stored under its connection id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub(crate) user: String,
    /// `json` or `messagepack`: the hub protocol of the handshake.
    pub(crate) protocol: String,
    /// Last message number the client acknowledged.
    pub(crate) acked: u64,
    /// Stream sequence of the last event among messages up to `acked`.
    pub(crate) seq: u64,
    /// An unacknowledged non-event message exists: resuming would mis-number.
    pub(crate) dirty: bool,
}

impl Record {
    pub(crate) fn protocol(&self) -> Option<HubProtocol> {
        match self.protocol.as_str() {
            "json" => Some(HubProtocol::Json),
            "messagepack" => Some(HubProtocol::MessagePack),
            _ => None,
        }
    }
}

pub(crate) fn protocol_name(p: HubProtocol) -> &'static str {
    match p {
        HubProtocol::Json => "json",
        HubProtocol::MessagePack => "messagepack",
    }
}

/// The `SIGNALR` bucket.
#[derive(Clone)]
pub(crate) struct Resumes {
    /// Shared: every stateful connection's dialect holds one (a `kv::Store` carries
    /// the bucket's stream info, about 1.5 KB).
    kv: Arc<kv::Store>,
}

impl Resumes {
    pub(crate) async fn new(js: &jetstream::Context) -> Result<Self, String> {
        match tokio::time::timeout(KV_TIMEOUT, js.get_key_value(SIGNALR_BUCKET)).await {
            Ok(Ok(kv)) => Ok(Self { kv: Arc::new(kv) }),
            Ok(Err(e)) => Err(format!("bucket {SIGNALR_BUCKET}: {e}")),
            Err(_) => Err(format!("bucket {SIGNALR_BUCKET}: timed out")),
        }
    }

    pub(crate) async fn get(&self, cid: &str) -> Result<Option<Record>, String> {
        match tokio::time::timeout(KV_TIMEOUT, self.kv.get(cid)).await {
            Ok(Ok(Some(v))) => Ok(serde_json::from_slice(&v).ok()),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    pub(crate) async fn put(&self, cid: &str, record: &Record) -> Result<(), String> {
        let value = Bytes::from(serde_json::to_vec(record).unwrap_or_default());
        match tokio::time::timeout(KV_TIMEOUT, self.kv.put(cid, value)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// The resume state of one live stateful connection.
pub(crate) struct Stateful {
    resumes: Resumes,
    cid: Arc<str>,
    book: Numbering,
}

/// Message numbers of one connection and the record they lead to (no I/O).
#[derive(Debug)]
struct Numbering {
    record: Record,
    /// Number of the last tracked message sent.
    sent: u64,
    /// Sent, unacknowledged: (number, stream sequence or `None` for a Completion).
    log: VecDeque<(u64, Option<u64>)>,
    overflowed: bool,
}

impl Numbering {
    fn new(record: Record) -> Self {
        Self {
            sent: record.acked,
            record,
            log: VecDeque::new(),
            overflowed: false,
        }
    }

    fn push(&mut self, seq: Option<u64>) {
        self.sent += 1;
        if self.log.len() == MAX_LOG {
            self.log.pop_front();
            self.overflowed = true;
        }
        self.log.push_back((self.sent, seq));
    }

    fn completion(&mut self) {
        self.push(None);
        self.record.dirty = true;
    }

    /// Applies an ack; false if it acknowledged nothing new.
    fn ack(&mut self, n: u64) -> bool {
        let n = n.min(self.sent);
        if n <= self.record.acked {
            return false;
        }
        while self.log.front().is_some_and(|(id, _)| *id <= n) {
            if let Some((_, Some(seq))) = self.log.pop_front() {
                self.record.seq = seq;
            }
        }
        self.record.acked = n;
        self.record.dirty = self.overflowed || self.log.iter().any(|(_, s)| s.is_none());
        true
    }
}

impl Stateful {
    /// State of a connection whose client has acknowledged `record.acked` messages.
    pub(crate) fn new(resumes: Resumes, cid: Arc<str>, record: Record) -> Self {
        Self {
            resumes,
            cid,
            book: Numbering::new(record),
        }
    }

    /// Writes the record now; whether it was saved.
    pub(crate) async fn persist(&self) -> bool {
        match self.resumes.put(&self.cid, &self.book.record).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(connection = %self.cid, error = %e, "stateful-reconnect state not saved");
                false
            }
        }
    }

    /// The server ends the connection: the record refuses resumes from now on (a
    /// dirty record is answered 404, and the client reconnects in full instead). Tried
    /// three times: a record left resumable would let the closed connection be resumed
    /// beside the client's new one (the bucket may be electing a leader at a shutdown).
    pub(crate) async fn end(&mut self) {
        self.book.record.dirty = true;
        for _ in 0..3 {
            if self.persist().await {
                return;
            }
        }
    }

    /// An event invocation was written.
    pub(crate) fn sent_event(&mut self, seq: u64) {
        self.book.push(Some(seq));
    }

    /// A Completion is about to be written: mark the record first.
    pub(crate) async fn completion(&mut self) {
        self.book.completion();
        self.persist().await;
    }

    /// The client acknowledged messages up to `n`; returns the stream sequence that
    /// covers, when it moved.
    pub(crate) async fn acked(&mut self, n: u64) -> Option<u64> {
        if !self.book.ack(n) {
            return None;
        }
        self.persist().await;
        Some(self.book.record.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(start_seq: u64) -> Numbering {
        Numbering::new(Record {
            user: "u".into(),
            protocol: "json".into(),
            acked: 0,
            seq: start_seq,
            dirty: false,
        })
    }

    #[test]
    fn acks_map_message_numbers_to_stream_sequences() {
        let mut b = book(10);
        for seq in [12, 15, 19] {
            b.push(Some(seq));
        }
        assert!(b.ack(2));
        assert_eq!(
            (b.record.acked, b.record.seq, b.record.dirty),
            (2, 15, false)
        );
        assert!(!b.ack(1), "old acks change nothing");
        assert!(b.ack(99), "an ack beyond what was sent is clamped");
        assert_eq!((b.record.acked, b.record.seq), (3, 19));
    }

    #[test]
    fn an_unacknowledged_completion_makes_the_record_dirty() {
        let mut b = book(0);
        b.push(Some(5));
        b.completion();
        b.push(Some(8));
        assert!(b.record.dirty, "dirty as soon as a Completion is sent");
        assert!(b.ack(1));
        assert!(
            b.record.dirty,
            "the Completion (message 2) is still unacknowledged"
        );
        assert!(b.ack(3));
        assert_eq!(
            (b.record.acked, b.record.seq, b.record.dirty),
            (3, 8, false)
        );
    }

    #[test]
    fn numbering_continues_after_a_resume() {
        let mut b = Numbering::new(Record {
            user: "u".into(),
            protocol: "json".into(),
            acked: 7,
            seq: 40,
            dirty: false,
        });
        b.push(Some(41));
        assert_eq!(b.log.back(), Some(&(8, Some(41))));
    }
}
