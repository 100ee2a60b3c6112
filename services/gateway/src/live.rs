//! The live path's source of truth, one per user channel (so once per user per
//! gateway, not per socket): a message on `live.<userId>` is only a doorbell
//! ("something new for this user"); the events themselves are read from `NOTIFY` by
//! direct get after the last sequence read, where sequence and subject are the
//! server's own (see `store`).
//!
//! Why: RePublish keeps a producer's own headers, so a `Nats-Sequence` set by a
//! producer reaches us beside the server's, and a core publish straight to
//! `live.<userId>` carries nothing but forged headers. Neither can be told apart by
//! headers alone; the stream can. The doorbell's claimed sequence (its last
//! `Nats-Sequence`) only says how far to read. Afterwards the claim is checked: a
//! doorbell whose sequence is not a stored event of this user with the same body is
//! forged or unverifiable — logged, counted ([`Stats::forged`]), never delivered.
//! A claim ahead of the stream is retried briefly (a replica may lag) before that
//! verdict; meanwhile every other doorbell is served, so a forgery never blocks,
//! reorders or repeats a real event.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use ziraai_proto::UserId;

use crate::event::{Event, Stats};
use crate::store::{EventStore, StoreError, Stored};

/// (sequence, body hash) of the latest events read, to recognise a late doorbell.
const RECENT: usize = 64;
/// Doorbells ahead of the stream waiting for their event; beyond, they are dropped.
const MAX_PENDING: usize = 16;
/// Checks of a doorbell ahead of the stream before it counts as forged.
const PENDING_ATTEMPTS: u32 = 6;
/// First delay before re-reading; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(20);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// A doorbell whose sequence the stream did not hold yet.
struct Pending {
    claim: u64,
    hash: u64,
    attempts: u32,
}

/// Where a reader reads one user's stored events (the stream; memory in unit tests).
pub(crate) trait Source: Send + Sync {
    /// The user's first stored event above `after`, with its body.
    fn next_stored(
        &self,
        after: u64,
    ) -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send;

    /// A doorbell claims a sequence the reads did not find: learn where the stream
    /// really ends (from its leader), so the next reads are not answered by a replica
    /// that has not applied it yet. The claim itself is never trusted for that.
    fn learn_end(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// One user's events in `NOTIFY`.
pub(crate) struct UserEvents {
    store: EventStore,
    user: UserId,
}

impl Source for UserEvents {
    async fn next_stored(&self, after: u64) -> Result<Option<Stored>, StoreError> {
        self.store.next_stored(&self.user, after).await
    }

    async fn learn_end(&self) {
        if let Err(e) = self.store.bounds().await {
            tracing::debug!(user = %self.user, error = %e, "reading where the stream ends failed");
        }
    }
}

/// Reads a user's new events from the stream when rung.
pub(crate) struct LiveReader<S = UserEvents> {
    source: S,
    user: UserId,
    stats: Arc<Stats>,
    /// Highest sequence read: every event of the user up to it was handed out.
    last: u64,
    recent: VecDeque<(u64, u64)>,
    hasher: std::hash::RandomState,
    pending: Vec<Pending>,
    /// A read failed or the connection came back: read to the end at the next retry.
    behind: bool,
    retry_at: Option<Instant>,
    delay: Duration,
}

impl LiveReader {
    /// Starts after the user's latest stored event: older ones are each socket's
    /// replay (read after the subscription is in place, so nothing falls between).
    pub(crate) async fn start(
        store: EventStore,
        user: UserId,
        stats: Arc<Stats>,
    ) -> Result<Self, StoreError> {
        let latest = store.latest_stored(&user).await?;
        let source = UserEvents {
            store,
            user: user.clone(),
        };
        let last = latest.as_ref().map_or(0, |(seq, _)| *seq);
        let mut reader = LiveReader::with_source(source, user, stats, last);
        if let Some((seq, payload)) = latest {
            // Its doorbell may still be on its way (stored between the subscription and
            // this read): recognised as real, not counted as forged. Not delivered here:
            // each socket's replay covers everything up to the start.
            reader.remember(seq, &payload);
        }
        Ok(reader)
    }
}

impl<S: Source> LiveReader<S> {
    /// A reader of `source` that has handed out everything up to `last`.
    pub(crate) fn with_source(source: S, user: UserId, stats: Arc<Stats>, last: u64) -> Self {
        Self {
            source,
            user,
            stats,
            last,
            recent: VecDeque::new(),
            hasher: std::hash::RandomState::new(),
            pending: Vec::new(),
            behind: false,
            retry_at: None,
            delay: FIRST_RETRY,
        }
    }

    /// When [`Self::retry`] is due, if anything waits.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// One message on the user's live subject: reads what is new, hands each event to
    /// `deliver` in order, then judges the doorbell.
    pub(crate) async fn doorbell(
        &mut self,
        msg: &async_nats::Message,
        deliver: &mut impl FnMut(Event),
    ) {
        let hdrs = msg.headers.as_ref();
        // RePublish appends the server's value after any the producer set: the last
        // one is the server's on a real doorbell. Still only a claim to verify.
        let claim = hdrs
            .and_then(|h| h.get_last("Nats-Sequence"))
            .and_then(|v| v.as_str().parse::<u64>().ok());
        let hash = self.hasher.hash_one(&msg.payload[..]);
        let Some(claim) = claim else {
            self.forged(None, "no Nats-Sequence");
            return;
        };
        if hdrs.is_some_and(|h| h.get_all("Nats-Sequence").count() > 1) {
            tracing::warn!(user = %self.user, seq = claim, "a producer set Nats-* headers on its event; ignored (the stream's sequence is used)");
        }
        let before = self.last;
        if claim > self.last {
            self.read_through(claim, deliver).await;
        }
        match self.judge(claim, hash) {
            Some(true) => {
                if self.last_read_count(before, claim) > 1 {
                    self.stats.gaps.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(false) => self.forged(Some(claim), "no stored event of this user with this body"),
            None if self.pending.len() < MAX_PENDING => {
                self.pending.push(Pending {
                    claim,
                    hash,
                    attempts: 0,
                });
                self.schedule();
            }
            None => self.forged(Some(claim), "beyond the stream (too many waiting)"),
        }
    }

    /// The NATS connection came back: doorbells may have been lost; read to the end.
    pub(crate) async fn resync(&mut self, deliver: &mut impl FnMut(Event)) {
        self.behind = true;
        self.retry(deliver).await;
    }

    /// Re-reads for doorbells ahead of the stream and after failed reads.
    pub(crate) async fn retry(&mut self, deliver: &mut impl FnMut(Event)) {
        self.retry_at = None;
        let target = if self.behind {
            u64::MAX
        } else {
            self.pending.iter().map(|p| p.claim).max().unwrap_or(0)
        };
        self.behind = false;
        if !self.pending.is_empty() {
            self.source.learn_end().await;
        }
        self.read_through(target, deliver).await;
        let pending = std::mem::take(&mut self.pending);
        for mut p in pending {
            match self.judge(p.claim, p.hash) {
                Some(true) => {}
                Some(false) => {
                    self.forged(Some(p.claim), "no stored event of this user with this body")
                }
                None if p.attempts + 1 >= PENDING_ATTEMPTS => {
                    self.forged(Some(p.claim), "beyond the stream's last sequence")
                }
                None => {
                    p.attempts += 1;
                    self.pending.push(p);
                }
            }
        }
        if self.pending.is_empty() && !self.behind {
            self.delay = FIRST_RETRY;
        } else {
            self.schedule();
        }
    }

    /// Reads and hands out the user's events after `last` until one at or beyond
    /// `target` (or the end). A failed read leaves the rest for a retry.
    async fn read_through(&mut self, target: u64, deliver: &mut impl FnMut(Event)) {
        while self.last < target {
            match self.source.next_stored(self.last).await {
                Ok(Some(stored)) => {
                    let mut event = stored.event;
                    event.last_seq = self.last;
                    self.last = event.seq;
                    self.remember(event.seq, &stored.payload);
                    deliver(event);
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(user = %self.user, after = self.last, error = %e, "reading new events failed; retrying");
                    self.behind = true;
                    self.schedule();
                    return;
                }
            }
        }
    }

    /// `Some(true)`: the claim is a stored event of this user with this body (read
    /// now or recently); `Some(false)`: it cannot be; `None`: not read yet.
    fn judge(&self, claim: u64, hash: u64) -> Option<bool> {
        if let Some((_, h)) = self.recent.iter().find(|(s, _)| *s == claim) {
            return Some(*h == hash);
        }
        // At or below what was read but not among the recent events: either not this
        // user's sequence, or too old to check. Unverifiable either way.
        if claim <= self.last {
            return Some(false);
        }
        None
    }

    /// How many recent events lie in (`before`, `claim`].
    fn last_read_count(&self, before: u64, claim: u64) -> usize {
        self.recent
            .iter()
            .filter(|(s, _)| *s > before && *s <= claim)
            .count()
    }

    /// Keeps (sequence, body hash) of an event read, to judge its doorbell.
    fn remember(&mut self, seq: u64, payload: &[u8]) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        let hash = self.hasher.hash_one(payload);
        self.recent.push_back((seq, hash));
    }

    fn schedule(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.delay);
            self.delay = (self.delay * 2).min(MAX_RETRY);
        }
    }

    fn forged(&self, claim: Option<u64>, why: &str) {
        self.stats.forged.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(user = %self.user, claimed_seq = ?claim, last_read = self.last, why, "live message dropped: forged or unverifiable");
    }
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
