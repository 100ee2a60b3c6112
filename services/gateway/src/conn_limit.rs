//! The per-user connection limit, counted across every gateway
//! (`ZIRAAI_MAX_CONNECTIONS_PER_USER`, policy `ZIRAAI_CONNECTION_LIMIT_POLICY`).
//!
//! NATS is the only shared state. The KV bucket `CONNS` holds one key per open socket,
//! `u.<userId>.<gatewayId>.<connectionId>` → `{"gatewayId", "openedAt"}`, written when
//! the handshake is admitted and deleted when the socket ends, and one heartbeat key per
//! gateway, `gw.<gatewayId>`, rewritten every `ZIRAAI_CONNECTION_HEARTBEAT` with a
//! per-message TTL of three intervals (see [`tasks`]). A socket counts while its
//! gateway's heartbeat exists, so a SIGKILLed gateway's sockets stop counting when its
//! heartbeat expires (15 s with the defaults, 30 s at most), and the first admission
//! that meets them purges all of that gateway's entries at once.
//!
//! Admission (before the upgrade): write the new socket's key first, then read the
//! user's keys with one subject-filtered stream-info request. At or under the limit the
//! socket is admitted; only over it are the entries ordered by their stream sequence
//! (registration order, the same on every gateway) and their gateways' heartbeats
//! checked. `refuse` admits the socket only if it is among the oldest `max` live
//! entries; `evict-oldest` deletes the oldest entries over the limit and asks their
//! gateways (`ziraai.gateway.<gatewayId>.evict`) to close those sockets.
//!
//! Guarantee under races: because every handshake writes before it reads, of two
//! concurrent handshakes at least the later reader sees both entries, and both order
//! them the same way. With `refuse` the count never exceeds the limit (both racers may
//! be refused when exactly one slot was free and both read after both wrote). With
//! `evict-oldest` the racers evict the same oldest sockets, so the count is back at the
//! limit as soon as the evictions (one request each) are done; for that moment the
//! user may hold up to one socket more per concurrent handshake.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream::DirectGetErrorKind};
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio_util::task::TaskTracker;
use ziraai_common::config::{ConnectionLimitPolicy, GatewayConfig};
use ziraai_common::nats::CONNS_BUCKET;
use ziraai_proto::UserId;

use crate::error::{ApiError, refuse, unavailable};
use crate::session::SocketCtl;

mod listing;
mod local;
pub(crate) mod tasks;

/// Bound of one bucket operation.
const KV_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound of one eviction request to another gateway.
const EVICT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the bucket could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("connection registry CONNS: {0}")]
pub(crate) struct LimitError(String);

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, LimitError> {
    match tokio::time::timeout(KV_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| LimitError(format!("{what}: {e}"))),
        Err(_) => Err(LimitError(format!("{what}: timed out"))),
    }
}

/// Subject of one socket's key.
fn entry_subject(user: &str, gateway: &str, connection: &str) -> String {
    format!("$KV.{CONNS_BUCKET}.u.{user}.{gateway}.{connection}")
}

/// Subject of a gateway's heartbeat key.
fn heartbeat_subject(gateway: &str) -> String {
    format!("$KV.{CONNS_BUCKET}.gw.{gateway}")
}

/// Every socket key of one gateway (purged when it is found dead, or at its shutdown).
fn gateway_filter(gateway: &str) -> String {
    format!("$KV.{CONNS_BUCKET}.u.*.{gateway}.*")
}

/// Core NATS subject on which a gateway closes its sockets for other gateways.
pub(crate) fn evict_subject(gateway: &str) -> String {
    format!("ziraai.gateway.{gateway}.evict")
}

/// What an eviction request names.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EvictRequest {
    pub(crate) user_id: String,
    pub(crate) connection_id: String,
}

/// One of the user's keys, as listed.
#[derive(Debug, Clone)]
struct Entry {
    subject: String,
    gateway: String,
    connection: String,
    /// Stream sequence of the key's value: registration order.
    seq: u64,
}

/// This gateway's side of the cluster-wide limit.
pub(crate) struct ConnLimit {
    js: jetstream::Context,
    stream: jetstream::stream::Stream<()>,
    client: async_nats::Client,
    gateway_id: Arc<str>,
    max: usize,
    policy: ConnectionLimitPolicy,
    heartbeat: Duration,
    local: local::Registry,
    tracker: TaskTracker,
    /// The gateway drains: closing sockets leave their keys to the one purge of all this
    /// gateway's keys at stop ([`tasks::Tasks::stop`]) instead of one delete each.
    draining: AtomicBool,
    /// Sockets of this gateway closed by an eviction (`/metrics`).
    pub(crate) evictions: AtomicU64,
    /// Handshakes this gateway refused with 429 (`/metrics`).
    pub(crate) refusals: AtomicU64,
}

impl ConnLimit {
    /// Binds the `CONNS` stream (applied from `nats/streams/KV_CONNS.json`).
    pub(crate) async fn new(
        js: &jetstream::Context,
        client: async_nats::Client,
        gateway_id: &str,
        cfg: &GatewayConfig,
        tracker: TaskTracker,
    ) -> Result<Arc<Self>, LimitError> {
        let name = format!("KV_{CONNS_BUCKET}");
        let stream = bounded("bind stream", js.get_stream_no_info(name)).await?;
        Ok(Arc::new(Self {
            js: js.clone(),
            stream,
            client,
            gateway_id: gateway_id.into(),
            max: cfg.max_connections_per_user,
            policy: cfg.connection_limit_policy,
            heartbeat: cfg.connection_heartbeat,
            local: local::Registry::default(),
            tracker,
            draining: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
        }))
    }

    /// Registers a new socket of `user` and applies the limit: the ticket keeps the
    /// socket's key until it is dropped; `Err` is the refusal to answer the handshake.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        user: &UserId,
        connection_id: &str,
    ) -> Result<Ticket, ApiError> {
        if ziraai_proto::ids::validate_token(connection_id).is_err() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_connection_id",
                "connection id is not a single token",
            ));
        }
        let subject = entry_subject(user.as_str(), &self.gateway_id, connection_id);
        let t0 = tokio::time::Instant::now();
        let seq = self.put(&subject).await.map_err(|e| unavailable(&e))?;
        let t_put = t0.elapsed();
        let id = self.local.insert(&subject, seq);
        let ticket = Ticket {
            limit: self.clone(),
            subject: subject.clone(),
            id,
        };
        let keys = self.list(user).await.map_err(|e| unavailable(&e))?;
        tracing::debug!(
            user = %user,
            put_ms = crate::socket::ms(t_put),
            list_ms = crate::socket::ms(t0.elapsed() - t_put),
            keys = keys.len(),
            "connection limit: registered and listed"
        );
        if keys.len() <= self.max {
            return Ok(ticket);
        }
        let live = self.live_in_order(user, keys).await;
        if live.len() <= self.max {
            return Ok(ticket);
        }
        match self.policy {
            ConnectionLimitPolicy::Refuse => {
                let rank = live.iter().position(|e| e.subject == subject);
                if rank.is_some_and(|r| r >= self.max) {
                    self.refusals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(user = %user, connection_id, max = self.max, "connection limit: refused");
                    return Err(refuse(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_connections",
                        format!(
                            "this user already has {} open connections, the limit",
                            self.max
                        ),
                    ));
                }
            }
            ConnectionLimitPolicy::EvictOldest => {
                let excess = live.len() - self.max;
                for victim in live.iter().take(excess).filter(|e| e.subject != subject) {
                    self.evict(user, victim).await;
                }
            }
        }
        Ok(ticket)
    }

    /// Writes a socket's key; returns its stream sequence.
    async fn put(&self, subject: &str) -> Result<u64, LimitError> {
        let opened_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let value = serde_json::json!({"gatewayId": &*self.gateway_id, "openedAt": opened_at});
        let msg = PublishMessage::build().payload(Bytes::from(value.to_string()));
        let ack = async {
            self.js
                .send_publish(subject.to_owned(), msg)
                .await?
                .await
                .map(|a| a.sequence)
        };
        bounded("register socket", ack).await
    }

    /// The user's keys with their sequences: one batched direct get (see [`listing`]),
    /// or, for a user with more keys than one batch, a subject-filtered stream info
    /// (a JetStream API request; its sequences are read when they are needed).
    async fn list(&self, user: &UserId) -> Result<Vec<(String, Option<u64>)>, LimitError> {
        let filter = format!("$KV.{CONNS_BUCKET}.u.{user}.*.*");
        let stream = format!("KV_{CONNS_BUCKET}");
        match listing::multi_last(&self.client, &stream, &filter, KV_TIMEOUT).await? {
            listing::Listed::Keys(keys) => {
                Ok(keys.into_iter().map(|(k, s)| (k, Some(s))).collect())
            }
            listing::Listed::TooMany => {
                let read = async {
                    let info = self.stream.info_with_subjects(&filter).await?;
                    info.map_ok(|(subject, _count)| (subject, None))
                        .try_collect::<Vec<_>>()
                        .await
                        .map_err(async_nats::Error::from)
                };
                bounded("list the user's sockets", read).await
            }
        }
    }

    /// The user's entries on live gateways, oldest first. Entries of gateways without
    /// a heartbeat are dropped here and purged; a key or heartbeat that cannot be read
    /// counts (erring towards the limit rather than past it).
    async fn live_in_order(&self, user: &UserId, keys: Vec<(String, Option<u64>)>) -> Vec<Entry> {
        let prefix = format!("$KV.{CONNS_BUCKET}.u.{user}.");
        let parsed: Vec<(String, String, String, Option<u64>)> = keys
            .into_iter()
            .filter_map(|(subject, seq)| {
                let rest = subject.strip_prefix(&prefix)?;
                let (gw, conn) = rest.split_once('.')?;
                Some((gw.to_owned(), conn.to_owned(), subject.clone(), seq))
            })
            .collect();
        let gateways: HashSet<&str> = parsed
            .iter()
            .map(|(gw, _, _, _)| gw.as_str())
            .filter(|gw| *gw != &*self.gateway_id)
            .collect();
        let mut dead = HashSet::new();
        for gw in gateways {
            if !self.alive(gw).await {
                dead.insert(gw.to_owned());
            }
        }
        for gw in &dead {
            self.purge_gateway(gw).await;
        }
        let reads = parsed
            .into_iter()
            .filter(|(gw, _, _, _)| !dead.contains(gw))
            .map(|(gateway, connection, subject, listed)| async move {
                if let Some(seq) = listed {
                    return Some(Entry {
                        subject,
                        gateway,
                        connection,
                        seq,
                    });
                }
                let read = self.stream.direct_get_last_for_subject(subject.clone());
                let seq = match tokio::time::timeout(KV_TIMEOUT, read).await {
                    Ok(Ok(m)) => m.sequence,
                    Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => return None,
                    // Unknown: count it, ordered last (never chosen as the oldest).
                    _ => u64::MAX,
                };
                Some(Entry {
                    subject,
                    gateway,
                    connection,
                    seq,
                })
            });
        let mut live: Vec<Entry> = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        live.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.subject.cmp(&b.subject)));
        live
    }

    /// Whether `gateway`'s heartbeat key exists (an unreadable one counts as alive).
    async fn alive(&self, gateway: &str) -> bool {
        let read = self
            .stream
            .direct_get_last_for_subject(heartbeat_subject(gateway));
        let answer = tokio::time::timeout(KV_TIMEOUT, read).await;
        !matches!(answer, Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound)
    }

    /// Removes every key of a gateway (found dead, or stopping).
    async fn purge_gateway(&self, gateway: &str) {
        let purge = self.stream.purge().filter(gateway_filter(gateway));
        match bounded("purge a gateway's sockets", purge.into_future()).await {
            Ok(r) => tracing::info!(
                gateway,
                purged = r.purged,
                "removed the socket keys of a gateway without heartbeat"
            ),
            Err(e) => {
                tracing::warn!(gateway, error = %e, "cannot purge a dead gateway's socket keys")
            }
        }
    }

    /// Deletes the victim's key (so no other admission counts it), then has its
    /// gateway close the socket: `connection_limit`, 4008 or a hub Close without
    /// reconnect.
    async fn evict(&self, user: &UserId, victim: &Entry) {
        self.delete(victim.seq).await;
        let connection_id = &victim.connection;
        if victim.gateway == *self.gateway_id {
            let closed = self.close_local(&victim.subject);
            tracing::info!(user = %user, connection_id, closed, "connection limit: evicted the oldest connection");
            return;
        }
        let body = EvictRequest {
            user_id: user.to_string(),
            connection_id: connection_id.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let request = self.client.request(evict_subject(&victim.gateway), payload);
        match tokio::time::timeout(EVICT_TIMEOUT, request).await {
            Ok(Ok(reply)) => tracing::info!(
                user = %user, connection_id, gateway = %victim.gateway,
                reply = %String::from_utf8_lossy(&reply.payload),
                "connection limit: evicted the oldest connection"
            ),
            Ok(Err(e)) => {
                tracing::warn!(user = %user, connection_id, gateway = %victim.gateway, error = %e, "eviction request failed; its key is removed")
            }
            Err(_) => {
                tracing::warn!(user = %user, connection_id, gateway = %victim.gateway, "eviction request timed out; its key is removed")
            }
        }
    }

    /// Closes a socket of this gateway for the limit; false when it is not here.
    fn close_local(&self, subject: &str) -> bool {
        let closed = self.local.evict(subject);
        if closed {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        closed
    }

    /// The gateway starts draining: from now on a closing socket's key is not deleted
    /// by itself (a delete is a JetStream API request; 19,000 of them at once queue for
    /// tens of seconds in nats-server, ahead of the next gateway's start-up), but with
    /// every key of this gateway by the purge at stop, or by the heartbeat's expiry.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Deletes one key's message; a missing one (already deleted) is fine.
    async fn delete(&self, seq: u64) {
        if seq == u64::MAX {
            return;
        }
        if let Err(e) = bounded("delete socket key", self.stream.delete_message(seq)).await {
            tracing::debug!(seq, error = %e, "socket key not deleted (already gone?)");
        }
    }
}

/// A registered socket: its key lives until the ticket is dropped (socket closed,
/// handshake failed or refused).
pub(crate) struct Ticket {
    limit: Arc<ConnLimit>,
    subject: String,
    id: u64,
}

impl Ticket {
    /// The socket's session runs: an eviction now closes it through `ctl` (one that
    /// arrived during the handshake closes it at once).
    pub(crate) fn attach(&self, ctl: &Arc<SocketCtl>) {
        self.limit.local.attach(&self.subject, self.id, ctl);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(seq) = self.limit.local.remove(&self.subject, self.id) {
            if self.limit.draining.load(Ordering::Relaxed) {
                return;
            }
            let limit = self.limit.clone();
            // Tracked: a drain waits for these before it purges what is left.
            self.limit
                .tracker
                .spawn(async move { limit.delete(seq).await });
        }
    }
}
