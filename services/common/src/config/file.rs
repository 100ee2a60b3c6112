//! The per-environment file layer (`infra/config/<env>.toml`).
//!
//! Every field is optional (the file overrides defaults key by key) and unknown keys
//! are refused, so a typo fails at start-up instead of being silently ignored.
//! Secrets have no key here on purpose: they come from variables or `*_FILE` only.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) nats: NatsFile,
    #[serde(default)]
    pub(super) gateway: GatewayFile,
    #[serde(default)]
    pub(super) worker: WorkerFile,
    #[serde(default)]
    pub(super) log: LogFile,
    pub(super) metrics_allow: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NatsFile {
    pub(super) url: Option<String>,
    pub(super) creds_file: Option<String>,
    pub(super) user: Option<String>,
    pub(super) connect_timeout: Option<String>,
    /// Validated with the variable (1..=5), so 0 or 7 here get the same message.
    pub(super) replicas: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GatewayFile {
    pub(super) listen: Option<String>,
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) outbound_queue: Option<usize>,
    pub(super) max_client_frame: Option<usize>,
    pub(super) write_timeout: Option<String>,
    pub(super) ping_interval: Option<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) subscribe_timeout: Option<String>,
    pub(super) demo_page: Option<bool>,
    /// The user `/demo` shows (the gateway never reads `[worker]`).
    pub(super) demo_user: Option<String>,
    pub(super) realtime_enabled: Option<bool>,
    pub(super) cursor_flush_interval: Option<String>,
    pub(super) delivery_tracking: Option<bool>,
    pub(super) handshake_burst: Option<u32>,
    pub(super) resync_concurrency: Option<usize>,
    pub(super) resync_jitter: Option<String>,
    pub(super) handshake_interval: Option<String>,
    pub(super) signalr_keepalive: Option<String>,
    pub(super) signalr_client_timeout: Option<String>,
    pub(super) signalr_max_message: Option<usize>,
    pub(super) max_connections_per_user: Option<usize>,
    pub(super) connection_limit_policy: Option<String>,
    pub(super) connection_heartbeat: Option<String>,
    pub(super) header_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) client_frame_rate: Option<String>,
    pub(super) client_frame_burst: Option<u32>,
    pub(super) http_burst: Option<u32>,
    pub(super) http_interval: Option<String>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) trusted_proxy_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkerFile {
    pub(super) demo_user: Option<String>,
    pub(super) demo_interval: Option<String>,
    pub(super) listen: Option<String>,
    pub(super) analyzer_url: Option<String>,
    pub(super) analyzer_timeout: Option<String>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) max_attempts: Option<u64>,
    pub(super) retry_base: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) breaker_threshold: Option<u32>,
    pub(super) breaker_cooldown: Option<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) dev_analyzer_listen: Option<String>,
    pub(super) ack_wait: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    pub(super) format: Option<String>,
}
