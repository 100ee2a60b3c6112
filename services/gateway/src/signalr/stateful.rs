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
    kv: kv::Store,
}

impl Resumes {
    pub(crate) async fn new(js: &jetstream::Context) -> Result<Self, String> {
        match tokio::time::timeout(KV_TIMEOUT, js.get_key_value(SIGNALR_BUCKET)).await {
            Ok(Ok(kv)) => Ok(Self { kv }),
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
    record: Record,
    /// Number of the last tracked message sent.
    sent: u64,
    /// Sent, unacknowledged: (number, stream sequence or `None` for a Completion).
    log: VecDeque<(u64, Option<u64>)>,
    overflowed: bool,
}

impl Stateful {
    /// State of a connection whose client has acknowledged `record.acked` messages.
    pub(crate) fn new(resumes: Resumes, cid: Arc<str>, record: Record) -> Self {
        Self {
            sent: record.acked,
            resumes,
            cid,
            record,
            log: VecDeque::new(),
            overflowed: false,
        }
    }

    /// Writes the record now.
    pub(crate) async fn persist(&self) {
        if let Err(e) = self.resumes.put(&self.cid, &self.record).await {
            tracing::warn!(connection = %self.cid, error = %e, "stateful-reconnect state not saved");
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

    /// An event invocation was written.
    pub(crate) fn sent_event(&mut self, seq: u64) {
        self.push(Some(seq));
    }

    /// A Completion is about to be written: mark the record first.
    pub(crate) async fn completion(&mut self) {
        self.push(None);
        self.record.dirty = true;
        self.persist().await;
    }

    /// The client acknowledged messages up to `n`.
    pub(crate) async fn acked(&mut self, n: u64) {
        let n = n.min(self.sent);
        if n <= self.record.acked {
            return;
        }
        while self.log.front().is_some_and(|(id, _)| *id <= n) {
            if let Some((_, Some(seq))) = self.log.pop_front() {
                self.record.seq = seq;
            }
        }
        self.record.acked = n;
        self.record.dirty = self.overflowed || self.log.iter().any(|(_, s)| s.is_none());
        self.persist().await;
    }
}
