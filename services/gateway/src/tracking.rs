//! Delivery tracking: the first delivery of each event to each device, and its
//! acknowledgement, recorded in the `DELIVERY` stream.
//!
//! Subject `delivery.<userId>.<seq>.<deviceId>.<delivered|acked>`; the stream keeps the
//! first message of each subject (`discard_new_per_subject`), so re-deliveries after a
//! reconnect do not overwrite the first record. Sessions hand records to a bounded
//! queue with `try_send` and one task per gateway publishes them with core NATS
//! (no acknowledgement wait): a slow or failing tracking write never delays a
//! delivery; when the queue is full the record is dropped and counted.

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
            publish(&client, &gateway_id, rec).await;
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

async fn publish(client: &Client, gateway_id: &str, rec: TrackRecord) {
    let subject = format!(
        "delivery.{}.{}.{}.{}",
        rec.user,
        rec.seq,
        rec.device,
        rec.kind.as_str()
    );
    let body = serde_json::json!({
        "userId": rec.user,
        "seq": rec.seq,
        "deviceId": &*rec.device,
        "event": rec.kind.as_str(),
        "at": ziraai_proto::envelope::rfc3339(time::OffsetDateTime::now_utc()),
        "connectionId": &*rec.connection_id,
        "gatewayId": gateway_id,
    });
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    if let Err(e) = client.publish(subject, bytes).await {
        tracing::debug!(error = %e, "tracking record not published");
    }
}
