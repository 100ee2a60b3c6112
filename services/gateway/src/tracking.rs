//! Delivery tracking: the first delivery of each event to each device, and its
//! acknowledgement, recorded in the `DELIVERY` stream.
//!
//! Subject `delivery.<userId>.<seq>.<deviceId>.<delivered|acked>`; the stream keeps the
//! first message of each subject (`discard_new_per_subject`), so re-deliveries after a
//! reconnect do not overwrite the first record. Sessions hand records to a bounded
//! queue with `try_send` and one task per gateway publishes them with core NATS
//! (no acknowledgement wait): a slow or failing tracking write never delays a
//! delivery; when the queue is full the record is dropped and counted. The task
//! publishes in batches (records gather for a few milliseconds after the first),
//! so its wakes do not grow with the delivery rate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziraai_proto::UserId;

use crate::event::Stats;

/// Records waiting to be published, per gateway.
pub const TRACKING_QUEUE: usize = 16 * 1024;
/// How long the first queued record waits for others before they are published
/// together; a record is published at most this late (plus the publishing itself).
/// At 80,000 records/s about 400 gather, far below [`TRACKING_QUEUE`].
const GATHER: Duration = Duration::from_millis(5);
/// Time the tracking task gets to publish what is queued at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What happened to an event on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Delivered,
    Acked,
}

impl TrackKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Acked => "acked",
        }
    }
}

/// One tracking record.
#[derive(Debug)]
pub struct TrackRecord {
    pub user: UserId,
    /// Device id, or `conn-<connectionId>` for sockets without one.
    pub device: Arc<str>,
    pub connection_id: Arc<str>,
    pub seq: u64,
    pub kind: TrackKind,
}

/// Where sessions hand their records; a no-op when tracking is off.
#[derive(Clone)]
pub struct Tracking {
    tx: Option<mpsc::Sender<TrackRecord>>,
    stats: Arc<Stats>,
}

impl Tracking {
    /// Tracking switched off.
    pub fn disabled(stats: Arc<Stats>) -> Self {
        Self { tx: None, stats }
    }

    /// Queues a record without waiting; drops and counts it if the queue is full.
    pub fn record(&self, rec: TrackRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(rec).is_err()
        {
            self.stats.tracking_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the publishing task; it stops after `stop` is cancelled and the queue drained.
pub fn spawn(
    client: Client,
    gateway_id: Arc<str>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> (Tracking, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<TrackRecord>(TRACKING_QUEUE);
    let task = tokio::spawn(async move {
        loop {
            let rec = tokio::select! {
                rec = rx.recv() => rec,
                _ = stop.cancelled() => break,
            };
            let Some(rec) = rec else { return };
            // Let the records of the next moments gather: one wake of this task (and
            // one batch for the connection) per window instead of one per record.
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                _ = stop.cancelled() => {}
            }
            publish(&client, &gateway_id, rec).await;
            while let Ok(rec) = rx.try_recv() {
                publish(&client, &gateway_id, rec).await;
            }
        }
        let _ = tokio::time::timeout(DRAIN_GRACE, async {
            while let Ok(rec) = rx.try_recv() {
                publish(&client, &gateway_id, rec).await;
            }
        })
        .await;
    });
    (
        Tracking {
            tx: Some(tx),
            stats,
        },
        task,
    )
}

/// `delivery.<userId>.<seq>.<deviceId>.<kind>` and the record's JSON body (keys
/// `userId`, `seq`, `deviceId`, `event`, `at`, `connectionId`, `gatewayId`), written
/// by hand: serde's per-field machinery cost more than the rest of the record.
fn encode(gateway_id: &str, rec: &TrackRecord) -> (String, Bytes) {
    use std::fmt::Write as _;
    let (user, device, kind) = (rec.user.as_str(), &*rec.device, rec.kind.as_str());
    let mut subject = String::with_capacity(40 + user.len() + device.len());
    // Writing to a String cannot fail.
    let _ = write!(subject, "delivery.{user}.{}.{device}.{kind}", rec.seq);
    let at = ziraai_proto::envelope::rfc3339(time::OffsetDateTime::now_utc());
    let connection = &*rec.connection_id;
    let mut out = Vec::with_capacity(
        128 + user.len() + device.len() + at.len() + connection.len() + gateway_id.len(),
    );
    out.extend_from_slice(b"{\"userId\":");
    json_str(&mut out, user);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(rec.seq.to_string().as_bytes());
    out.extend_from_slice(b",\"deviceId\":");
    json_str(&mut out, device);
    out.extend_from_slice(b",\"event\":");
    json_str(&mut out, kind);
    out.extend_from_slice(b",\"at\":");
    json_str(&mut out, &at);
    out.extend_from_slice(b",\"connectionId\":");
    json_str(&mut out, connection);
    out.extend_from_slice(b",\"gatewayId\":");
    json_str(&mut out, gateway_id);
    out.push(b'}');
    (subject, Bytes::from(out))
}

/// `s` as a JSON string. Ids are validated, so a plain copy is the rule; a string
/// that needs an escape goes through serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

async fn publish(client: &Client, gateway_id: &str, rec: TrackRecord) {
    let (subject, body) = encode(gateway_id, &rec);
    if let Err(e) = client.publish(subject, body).await {
        tracing::debug!(error = %e, "tracking record not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_its_subject_and_json_body() {
        let rec = TrackRecord {
            user: UserId::parse("u-1").expect("valid user id"),
            device: "dev\\\"1".into(),
            connection_id: "gw-7".into(),
            seq: 42,
            kind: TrackKind::Acked,
        };
        let (subject, body) = encode("gw", &rec);
        assert_eq!(subject, "delivery.u-1.42.dev\\\"1.acked");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["userId"], "u-1");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["deviceId"], "dev\\\"1");
        assert_eq!(v["event"], "acked");
        assert_eq!(v["connectionId"], "gw-7");
        assert_eq!(v["gatewayId"], "gw");
        let at = v["at"].as_str().expect("at is a string");
        assert!(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok()
        );
    }
}
