//! The session [`Backend`] over NATS: the `NOTIFY` stream, the `CURSORS` bucket and
//! delivery tracking.

use std::sync::Arc;

use ziraai_proto::{DeviceId, UserId};

use crate::cursors::Cursors;
use crate::event::Event;
use crate::session::Backend;
use crate::store::EventStore;
use crate::tracking::{TrackKind, TrackRecord, Tracking};

pub(crate) struct NatsBackend {
    pub(crate) store: EventStore,
    pub(crate) user: UserId,
    /// The device's cursor, when the socket named a device.
    pub(crate) cursor: Option<(Cursors, DeviceId)>,
    pub(crate) tracking: Tracking,
    /// Device id, or `conn-<connectionId>` without one (tracking key).
    pub(crate) device_label: Arc<str>,
    pub(crate) connection_id: Arc<str>,
    /// Where cursor writes are counted.
    pub(crate) stats: Arc<crate::event::Stats>,
}

impl Backend for NatsBackend {
    async fn next_after(&self, after: u64) -> Result<Option<Event>, String> {
        self.store
            .next_after(&self.user, after)
            .await
            .map_err(|e| e.to_string())
    }

    fn has_cursor(&self) -> bool {
        self.cursor.is_some()
    }

    async fn save_cursor(&self, seq: u64) -> bool {
        let Some((cursors, device)) = &self.cursor else {
            return true;
        };
        let saved = cursors.advance(&self.user, device, seq).await;
        self.stats.metrics.cursor_write(saved.is_ok());
        if let Err(e) = &saved {
            tracing::warn!(user = %self.user, device = %device, seq, error = %e, "cursor not saved; retrying at the next cursor tick");
        }
        saved.is_ok()
    }

    fn device_label(&self) -> &str {
        &self.device_label
    }

    fn track(&self, kind: TrackKind, seq: u64) {
        self.tracking.record(TrackRecord {
            user: self.user.clone(),
            device: self.device_label.clone(),
            connection_id: self.connection_id.clone(),
            seq,
            kind,
        });
    }
}
