//! The inbound frame budget of one socket (`ZIRAAI_GATEWAY_CLIENT_FRAME_RATE` and
//! `_BURST`): a token bucket that starts full, so a client acknowledging every event of
//! a long replay as it arrives stays within its burst, while a flood runs dry and the
//! session closes with [`CloseReason::RateLimited`](super::CloseReason::RateLimited).

use std::time::Duration;

use tokio::time::Instant;

/// Client frames a socket may send: one allowance back every `interval`, at most
/// `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimit {
    pub interval: Duration,
    pub burst: u32,
}

/// The remaining allowance of one socket.
#[derive(Debug)]
pub(super) struct FrameBudget {
    limit: FrameLimit,
    tokens: f64,
    last: Instant,
}

impl FrameBudget {
    pub(super) fn new(limit: FrameLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    /// Spends one allowance for a client frame; false when none is left.
    #[cfg(test)]
    pub(super) fn take(&mut self) -> bool {
        self.take_n(1)
    }

    /// Spends `n` allowances (a frame carrying `n` messages); false when fewer are left.
    pub(super) fn take_n(&mut self, n: u32) -> bool {
        let now = Instant::now();
        let per = self.limit.interval.as_secs_f64();
        if per > 0.0 {
            let earned = now.duration_since(self.last).as_secs_f64() / per;
            self.tokens = (self.tokens + earned).min(f64::from(self.limit.burst));
        } else {
            self.tokens = f64::from(self.limit.burst);
        }
        self.last = now;
        let n = f64::from(n.max(1));
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: FrameLimit = FrameLimit {
        interval: Duration::from_millis(10),
        burst: 1000,
    };

    #[tokio::test(start_paused = true)]
    async fn a_full_burst_then_the_rate() {
        let mut b = FrameBudget::new(LIMIT);
        assert!(
            (0..1000).all(|_| b.take()),
            "the burst is available at once"
        );
        assert!(!b.take(), "then nothing");
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(b.take(), "one allowance per interval");
        assert!(!b.take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..2000).filter(|_| b.take()).count(),
            1000,
            "capped at the burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_client_at_the_rate_is_never_refused() {
        let mut b = FrameBudget::new(FrameLimit {
            interval: Duration::from_millis(10),
            burst: 1,
        });
        for _ in 0..500 {
            assert!(b.take());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
    }
}
