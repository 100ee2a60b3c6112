//! A circuit breaker for the analyzer: after `threshold` consecutive transient failures
//! it opens for `cooldown` (no calls, no pulling; the worker reports not ready), then
//! lets one trial call through (half-open): a success closes it, a failure opens it again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state, as `/health` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    trial_running: bool,
    opened: u64,
}

/// Shared by every job task of a worker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                trial_running: false,
                opened: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain counters: a poisoned lock still holds consistent values.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> State {
        let i = self.lock();
        match i.open_until {
            None => State::Closed,
            Some(t) if Instant::now() < t => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// How many times the breaker opened.
    pub fn times_opened(&self) -> u64 {
        self.lock().opened
    }

    /// How long until a call may be made: `None` when closed or when the half-open
    /// trial is free.
    fn wait(i: &Inner) -> Option<Duration> {
        let t = i.open_until?;
        let now = Instant::now();
        if now < t {
            Some(t - now)
        } else if i.trial_running {
            Some(Duration::from_millis(100))
        } else {
            None
        }
    }

    /// When closed, always; when half-open, for one trial call at a time; when open,
    /// the time to wait.
    pub fn permit(&self) -> Result<(), Duration> {
        let mut i = self.lock();
        if let Some(wait) = Self::wait(&i) {
            return Err(wait);
        }
        if i.open_until.is_some() {
            i.trial_running = true;
        }
        Ok(())
    }

    /// Whether the worker should pull more jobs now: not while open, nor while a
    /// half-open trial is running; the wait otherwise.
    pub fn permit_to_pull(&self) -> Result<(), Duration> {
        Self::wait(&self.lock()).map_or(Ok(()), Err)
    }

    /// A trial call that ended without a verdict (handed back at shutdown).
    pub fn abandoned(&self) {
        self.lock().trial_running = false;
    }

    pub fn success(&self) {
        let mut i = self.lock();
        i.failures = 0;
        i.open_until = None;
        i.trial_running = false;
    }

    /// A transient failure; returns true if it opened the breaker.
    pub fn failure(&self) -> bool {
        let mut i = self.lock();
        i.failures += 1;
        let half_open = i.open_until.is_some();
        i.trial_running = false;
        if half_open || i.failures >= self.threshold {
            let was_closed = i.open_until.is_none();
            i.open_until = Some(Instant::now() + self.cooldown);
            if was_closed {
                i.opened += 1;
            }
            return was_closed;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_then_half_opens_and_closes() {
        let b = Breaker::new(3, Duration::from_secs(10));
        assert_eq!(b.state(), State::Closed);
        assert!(!b.failure() && !b.failure());
        b.success();
        assert!(!b.failure() && !b.failure(), "a success resets the count");
        assert!(b.failure(), "the third in a row opens it");
        assert_eq!(b.state(), State::Open);
        assert!(b.permit().is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.permit().is_ok(), "one trial call");
        assert!(b.permit().is_err(), "only one");
        assert!(!b.failure(), "a failed trial re-opens (not a new opening)");
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.permit().is_ok());
        b.success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.times_opened(), 1);
    }
}
