//! The worker's own section (`[worker]`): the job consumer, the analyzer, the circuit
//! breaker and the demo producer.

use super::file::WorkerFile;
use super::gateway::parse_demo_user;
use super::loader::{
    Loader, addr, parse_addr, parse_nonzero_duration, parse_positive, parse_positive_u32,
};
use super::parse::parse_duration;
use super::*;

/// Variables of the worker's section.
pub(super) const VARS: &[&str] = &[
    "ZIRAAI_WORKER_LISTEN",
    "ZIRAAI_ANALYZER_URL",
    "ZIRAAI_ANALYZER_TIMEOUT",
    "ZIRAAI_WORKER_MAX_IN_FLIGHT",
    "ZIRAAI_WORKER_MAX_ATTEMPTS",
    "ZIRAAI_WORKER_RETRY_BASE",
    "ZIRAAI_WORKER_RETRY_MAX",
    "ZIRAAI_BREAKER_THRESHOLD",
    "ZIRAAI_BREAKER_COOLDOWN",
    "ZIRAAI_WORKER_SHUTDOWN_GRACE",
    "ZIRAAI_DEV_ANALYZER_LISTEN",
    "ZIRAAI_WORKER_ACK_WAIT",
    "ZIRAAI_DEMO_USER",
    "ZIRAAI_DEMO_INTERVAL",
];

/// The `[worker]` section and its variables.
pub(super) fn worker(l: &mut Loader<'_>, w: WorkerFile) -> WorkerConfig {
    WorkerConfig {
        demo_user: l.pick(
            "ZIRAAI_DEMO_USER",
            w.demo_user,
            DEFAULT_DEMO_USER.into(),
            parse_demo_user,
        ),
        demo_interval: l.pick(
            "ZIRAAI_DEMO_INTERVAL",
            w.demo_interval,
            DEFAULT_DEMO_INTERVAL,
            parse_nonzero_duration,
        ),
        listen: l.pick(
            "ZIRAAI_WORKER_LISTEN",
            w.listen,
            addr(DEFAULT_WORKER_LISTEN),
            parse_addr,
        ),
        analyzer_url: l.pick(
            "ZIRAAI_ANALYZER_URL",
            w.analyzer_url,
            format!("http://{DEFAULT_DEV_ANALYZER_LISTEN}/analyze"),
            |s| {
                if s.starts_with("http://") {
                    Ok(s.trim().to_owned())
                } else {
                    Err(format!("{s:?} is not an http:// URL"))
                }
            },
        ),
        analyzer_timeout: l.pick(
            "ZIRAAI_ANALYZER_TIMEOUT",
            w.analyzer_timeout,
            DEFAULT_ANALYZER_TIMEOUT,
            parse_nonzero_duration,
        ),
        max_in_flight: l.pick(
            "ZIRAAI_WORKER_MAX_IN_FLIGHT",
            w.max_in_flight.map(|n| n.to_string()),
            DEFAULT_MAX_IN_FLIGHT,
            parse_positive,
        ),
        max_attempts: l.pick(
            "ZIRAAI_WORKER_MAX_ATTEMPTS",
            w.max_attempts.map(|n| n.to_string()),
            DEFAULT_MAX_ATTEMPTS,
            |s| parse_positive(s).map(|n| n as u64),
        ),
        retry_base: l.pick(
            "ZIRAAI_WORKER_RETRY_BASE",
            w.retry_base,
            DEFAULT_RETRY_BASE,
            parse_nonzero_duration,
        ),
        retry_max: l.pick(
            "ZIRAAI_WORKER_RETRY_MAX",
            w.retry_max,
            DEFAULT_RETRY_MAX,
            parse_nonzero_duration,
        ),
        breaker_threshold: l.pick(
            "ZIRAAI_BREAKER_THRESHOLD",
            w.breaker_threshold.map(|n| n.to_string()),
            DEFAULT_BREAKER_THRESHOLD,
            parse_positive_u32,
        ),
        breaker_cooldown: l.pick(
            "ZIRAAI_BREAKER_COOLDOWN",
            w.breaker_cooldown,
            DEFAULT_BREAKER_COOLDOWN,
            parse_nonzero_duration,
        ),
        shutdown_grace: l.pick(
            "ZIRAAI_WORKER_SHUTDOWN_GRACE",
            w.shutdown_grace,
            DEFAULT_WORKER_SHUTDOWN_GRACE,
            parse_duration,
        ),
        ack_wait: l.pick("ZIRAAI_WORKER_ACK_WAIT", w.ack_wait, None, |s| {
            parse_nonzero_duration(s).map(Some)
        }),
        dev_analyzer_listen: l.pick(
            "ZIRAAI_DEV_ANALYZER_LISTEN",
            w.dev_analyzer_listen,
            addr(DEFAULT_DEV_ANALYZER_LISTEN),
            parse_addr,
        ),
    }
}
