//! Pacing and picking: a token bucket for paced publishers and a small
//! pseudo-random generator for choosing target users (no dependency needed for it).

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up. A paced publisher
/// takes every token available at each wake-up, so a coarse timer (about 1 ms in
/// tokio) still reaches tens of thousands of sends a second.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket refilling at `rate` per second (at least 1), holding at most `burst`
    /// (at least 1) tokens; it starts with one token.
    pub(crate) fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate: rate.max(1.0),
            burst: burst.max(1.0),
            tokens: 1.0,
            last: now,
        }
    }

    /// The burst for `rate`: 50 ms worth of tokens, at least 2, so a wake-up that
    /// comes late (a busy machine, 1 ms timers) catches up instead of losing tokens.
    pub(crate) fn default_burst(rate: f64) -> f64 {
        (rate / 20.0).max(2.0)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes every whole token available at `now` (0 when none).
    pub(crate) fn take_all(&mut self, now: Instant) -> u64 {
        self.refill(now);
        let n = self.tokens.floor();
        self.tokens -= n;
        n as u64
    }

    /// How long after `now` the next whole token is there.
    pub(crate) fn wait(&self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let have = (self.tokens + elapsed * self.rate).min(self.burst);
        if have >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - have) / self.rate)
        }
    }
}

/// xorshift64*: fast, good enough to spread events over users, seeded per publisher.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // A zero state would stay zero.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_gives_the_rate_over_time_and_caps_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 10.0, t0);
        assert_eq!(b.take_all(t0), 1);
        assert_eq!(b.take_all(t0), 0);
        assert!(b.wait(t0) > Duration::ZERO && b.wait(t0) <= Duration::from_millis(1));
        // 5 ms later: 5 tokens.
        assert_eq!(b.take_all(t0 + Duration::from_millis(5)), 5);
        // A long pause saves up at most the burst.
        assert_eq!(b.take_all(t0 + Duration::from_secs(10)), 10);
        // Over one second in 1 ms steps: the rate, give or take rounding.
        let mut total = 0;
        let start = t0 + Duration::from_secs(10);
        for ms in 1..=1000 {
            total += b.take_all(start + Duration::from_millis(ms));
        }
        assert!((998..=1000).contains(&total), "{total}");
    }

    #[test]
    fn bucket_wait_says_when_the_next_token_is_due() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 1.0, t0);
        assert_eq!(b.take_all(t0), 1);
        let w = b.wait(t0);
        assert!(
            w > Duration::from_millis(99) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        assert_eq!(b.wait(t0 + Duration::from_millis(100)), Duration::ZERO);
        assert_eq!(TokenBucket::default_burst(10.0), 2.0);
        assert_eq!(TokenBucket::default_burst(40_000.0), 2000.0);
    }

    #[test]
    fn rng_spreads_over_the_range() {
        let mut r = Rng::new(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[r.below(10)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
