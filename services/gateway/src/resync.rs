//! Pacing of the catch-up reads after a NATS reconnection.
//!
//! When the connection comes back, every local user's channel reads its user's events
//! stored meanwhile (the doorbells of the outage are lost). With 20,000 users on a
//! gateway, starting all those reads at once would put 20,000 stream reads in front of
//! the doorbells of users still receiving live events. So each channel waits a random
//! delay (up to `jitter`, which also spreads several gateways reconnecting together)
//! and then for one of `concurrency` gateway-wide turns before its catch-up.
//!
//! The live path never waits here: a channel waiting for its turn still answers its
//! doorbells, and a doorbell reads everything after the last event read (the missed
//! ones first), so the turn only bounds the catch-up of users nobody rang for.

use std::future::Future;
use std::hash::BuildHasher as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use ziraai_proto::UserId;

/// A channel's turn: held while its catch-up reads.
pub(crate) type Turn = Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>;

/// Gives out catch-up turns: at most `concurrency` at once, each after a jitter.
#[derive(Clone)]
pub struct ResyncPacer {
    permits: Arc<Semaphore>,
    jitter: Duration,
    hasher: std::collections::hash_map::RandomState,
}

impl ResyncPacer {
    /// At most `concurrency` (at least 1) catch-ups at once, each started after a random
    /// delay below `jitter`.
    pub fn new(concurrency: usize, jitter: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            jitter,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// `user`'s turn for the reconnection numbered `n`: resolves after the jitter,
    /// once a place is free (`None` only if the pacer were closed, which it never is:
    /// the catch-up then goes ahead unpaced).
    pub(crate) fn turn(&self, user: &UserId, n: u64) -> Turn {
        let delay = self.delay(user, n);
        let permits = self.permits.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            permits.acquire_owned().await.ok()
        })
    }

    /// A delay below the jitter, random per process, user and reconnection.
    fn delay(&self, user: &UserId, n: u64) -> Duration {
        let nanos = self.jitter.as_nanos();
        if nanos == 0 {
            return Duration::ZERO;
        }
        let h = u128::from(self.hasher.hash_one((user.as_str(), n)));
        // `h % nanos` < `nanos`, which came from a Duration: it fits its u64 range
        // for any jitter configuration accepts (far below 584 years).
        Duration::from_nanos(u64::try_from(h % nanos).unwrap_or(0))
    }

    /// Turns free now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: usize) -> UserId {
        UserId::parse(&format!("u-{n}")).expect("valid")
    }

    #[test]
    fn delays_stay_below_the_jitter_and_spread() {
        let pacer = ResyncPacer::new(4, Duration::from_millis(500));
        let delays: Vec<Duration> = (0..200).map(|i| pacer.delay(&user(i), 1)).collect();
        assert!(delays.iter().all(|d| *d < Duration::from_millis(500)));
        let early = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(250))
            .count();
        assert!(
            (50..150).contains(&early),
            "{early} of 200 in the first half"
        );
        assert_eq!(
            ResyncPacer::new(1, Duration::ZERO).delay(&user(1), 1),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_concurrency_turns_are_held_at_once() {
        let pacer = ResyncPacer::new(2, Duration::from_millis(100));
        let mut turns: Vec<Turn> = (0..5).map(|i| pacer.turn(&user(i), 1)).collect();
        let first = (&mut turns[0]).await;
        let second = (&mut turns[1]).await;
        assert_eq!(pacer.available(), 0);
        let third = tokio::time::timeout(Duration::from_secs(1), &mut turns[2]).await;
        assert!(third.is_err(), "no third turn while two are held");
        drop(first);
        let third = (&mut turns[2]).await;
        assert!(third.is_some());
        drop((second, third));
        for t in turns.drain(3..) {
            assert!(t.await.is_some());
        }
        assert_eq!(pacer.available(), 2);
    }
}
