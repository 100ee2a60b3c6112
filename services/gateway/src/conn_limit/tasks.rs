//! The limit's background work on each gateway: the heartbeat that keeps this
//! gateway's sockets counted, the listener that closes the sockets other gateways
//! evict, and the clean-up when the gateway stops.
//!
//! Write rate per gateway in steady state: one heartbeat per interval (every 5 s by
//! default), whatever the number of sockets; besides that one key write when a socket
//! opens and one delete when it closes. Nothing is written per socket while it is open.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{
    ConnLimit, EvictRequest, KV_TIMEOUT, LimitError, bounded, entry_subject, evict_subject,
    gateway_filter, heartbeat_subject,
};

/// A heartbeat lives this many intervals.
const HEARTBEAT_LIVES: u32 = 3;

/// Outcome of one heartbeat write.
enum Beat {
    Written(u64),
    /// The previous heartbeat had expired (or was purged): others may have removed
    /// this gateway's keys meanwhile.
    Expired,
    Failed(String),
}

/// The running heartbeat and eviction listener.
pub(crate) struct Tasks {
    stop: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

impl ConnLimit {
    /// Writes the first heartbeat and subscribes to the eviction subject (before the
    /// gateway serves, so others see it alive and can reach it), then runs both loops.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<Tasks, LimitError> {
        let first = match self.beat(None).await {
            Beat::Written(seq) => seq,
            Beat::Expired => return Err(LimitError("first heartbeat refused".into())),
            Beat::Failed(e) => return Err(LimitError(format!("first heartbeat: {e}"))),
        };
        let subject = evict_subject(&self.gateway_id);
        let sub = bounded("subscribe evictions", self.client.subscribe(subject)).await?;
        let stop = CancellationToken::new();
        let handles = vec![
            tokio::spawn(heartbeat_loop(self.clone(), first, stop.clone())),
            tokio::spawn(evictions(self.clone(), sub, stop.clone())),
        ];
        Ok(Tasks { stop, handles })
    }

    /// Writes this gateway's heartbeat with a TTL of [`HEARTBEAT_LIVES`] intervals;
    /// with `last`, only if the previous one is still there.
    async fn beat(&self, last: Option<u64>) -> Beat {
        let ttl = self.heartbeat * HEARTBEAT_LIVES;
        let mut msg = PublishMessage::build()
            .payload(Bytes::from(self.gateway_id.to_string()))
            .ttl(ttl);
        if let Some(last) = last {
            msg = msg.expected_last_subject_sequence(last);
        }
        let write = async {
            self.js
                .send_publish(heartbeat_subject(&self.gateway_id), msg)
                .await?
                .await
        };
        match tokio::time::timeout(KV_TIMEOUT, write).await {
            Ok(Ok(ack)) => Beat::Written(ack.sequence),
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => Beat::Expired,
            Ok(Err(e)) => Beat::Failed(e.to_string()),
            Err(_) => Beat::Failed("timed out".into()),
        }
    }

    /// Writes every local socket's key again (after this gateway was taken for dead).
    async fn reregister(&self) {
        for r in self.local.all() {
            match self.put(&r.subject).await {
                Ok(seq) if !self.local.rewritten(&r.subject, r.id, seq) => self.delete(seq).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot register a socket again"),
            }
        }
    }
}

impl Tasks {
    /// Stops both loops, then removes this gateway's heartbeat and every key it still
    /// holds (its sockets are closed by now).
    pub(crate) async fn stop(self, limit: &ConnLimit) {
        self.stop.cancel();
        for h in self.handles {
            let _ = tokio::time::timeout(KV_TIMEOUT, h).await;
        }
        let purges = [
            gateway_filter(&limit.gateway_id),
            heartbeat_subject(&limit.gateway_id),
        ];
        for filter in purges {
            let purge = limit.stream.purge().filter(filter.clone());
            if let Err(e) = bounded("purge at shutdown", purge.into_future()).await {
                tracing::debug!(%filter, error = %e, "not purged at shutdown");
            }
        }
    }
}

async fn heartbeat_loop(limit: Arc<ConnLimit>, mut last: u64, stop: CancellationToken) {
    let every: Duration = limit.heartbeat;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match limit.beat(Some(last)).await {
            Beat::Written(seq) => last = seq,
            Beat::Expired => {
                tracing::warn!(
                    sockets = limit.local.len(),
                    "this gateway's heartbeat had expired (NATS unreachable?); registering its sockets again"
                );
                // Heartbeat first: keys written while this gateway looks dead could be
                // purged again by another gateway's admission.
                match limit.beat(None).await {
                    Beat::Written(seq) => {
                        last = seq;
                        limit.reregister().await;
                    }
                    Beat::Expired | Beat::Failed(_) => {
                        tracing::warn!("heartbeat not written; retrying")
                    }
                }
            }
            Beat::Failed(e) => tracing::warn!(error = %e, "heartbeat not written; retrying"),
        }
    }
}

/// Closes the sockets other gateways evict; answers `{"closed": bool}`.
async fn evictions(
    limit: Arc<ConnLimit>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = sub.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        let closed = match serde_json::from_slice::<EvictRequest>(&msg.payload) {
            Ok(r) => {
                let subject = entry_subject(&r.user_id, &limit.gateway_id, &r.connection_id);
                let closed = limit.close_local(&subject);
                tracing::info!(user = %r.user_id, connection_id = %r.connection_id, closed, "connection limit: closing a connection another gateway evicted");
                closed
            }
            Err(e) => {
                tracing::debug!(error = %e, "malformed eviction request");
                false
            }
        };
        if let Some(reply) = msg.reply {
            let answer = Bytes::from(serde_json::json!({ "closed": closed }).to_string());
            if let Err(e) = limit.client.publish(reply, answer).await {
                tracing::debug!(error = %e, "eviction answer not sent");
            }
        }
    }
    if let Err(e) = sub.unsubscribe().await {
        tracing::debug!(error = %e, "eviction subscription not removed");
    }
}
