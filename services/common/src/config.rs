//! Layered configuration: built-in defaults < `infra/config/<env>.toml` < `ZIRAAI_*`
//! variables, validated once at start-up with one line per problem.
//!
//! Loading reads from a map passed in (never from the process environment directly),
//! so tests exercise every rule without `set_var`.
//!
//! Each service validates the shared section (environment, NATS, logs, `/metrics`
//! access) plus its own only: [`GatewayServiceConfig`] (gateway and token settings) and
//! [`WorkerServiceConfig`] (worker settings). A worker never needs the JWT secret.

mod file;
mod gateway;
mod limits;
mod loader;
mod parse;
mod validate;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

pub use limits::open_file_limit;
pub use parse::parse_duration;

/// Secret built in for `development` only; staging and production refuse it.
pub const DEV_JWT_SECRET: &str = "ziraai-development-secret-do-not-use-in-production";
/// Shortest JWT secret accepted outside development, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Default NATS URL (the broker's standard port).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default gateway listen address.
pub const DEFAULT_GATEWAY_LISTEN: &str = "127.0.0.1:8080";
/// Frames queued per socket before it counts as too slow and is closed.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 256;
/// Largest client frame accepted (clients only send pings and acks).
pub const DEFAULT_MAX_CLIENT_FRAME: usize = 4 * 1024;
/// How long one write to a socket may take before the socket is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of WebSocket pings; a socket silent for three intervals is closed.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Time sockets get to close at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a new socket waits for its user's subscription to be in place.
pub const DEFAULT_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to connect to NATS at start-up.
pub const DEFAULT_NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Replicas of every stream and bucket unless configured (one server, development).
pub const DEFAULT_NATS_REPLICAS: usize = 1;
/// Most replicas JetStream allows for a stream.
pub const MAX_NATS_REPLICAS: usize = 5;
/// Shortest time between two cursor writes of one socket (acks in between coalesce).
pub const DEFAULT_CURSOR_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// SignalR: a hub Ping is sent when nothing was sent for this long (.NET default).
pub const DEFAULT_SIGNALR_KEEPALIVE: Duration = Duration::from_secs(15);
/// SignalR: a client silent for this long is closed (.NET `ClientTimeoutInterval`).
pub const DEFAULT_SIGNALR_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// SignalR: largest client message, bytes (.NET `MaximumReceiveMessageSize`).
pub const DEFAULT_SIGNALR_MAX_MESSAGE: usize = 32 * 1024;
/// Handshake rate limit per client IP: a burst, then one every interval.
pub const DEFAULT_HANDSHAKE_BURST: u32 = 40;
pub const DEFAULT_HANDSHAKE_INTERVAL: Duration = Duration::from_millis(100);
/// After a NATS reconnection, local users whose catch-up reads run at once (the rest
/// wait; live deliveries do not), and the longest random delay before each starts.
pub const DEFAULT_RESYNC_CONCURRENCY: usize = 32;
pub const DEFAULT_RESYNC_JITTER: Duration = Duration::from_secs(1);
/// Open sockets one user may hold across all gateways (the SignalR checklist's
/// "max 5 devices").
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 5;
/// How often a gateway renews its heartbeat in the `CONNS` bucket; the heartbeat lives
/// three intervals, so a killed gateway's sockets stop counting within that.
pub const DEFAULT_CONNECTION_HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest heartbeat interval: three of them must stay within the 30 s self-healing
/// bound of the per-user limit.
pub const MAX_CONNECTION_HEARTBEAT: Duration = Duration::from_secs(10);
/// Worker defaults.
pub const DEFAULT_WORKER_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_DEV_ANALYZER_LISTEN: &str = "127.0.0.1:8082";
pub const DEFAULT_ANALYZER_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;
pub const DEFAULT_MAX_ATTEMPTS: u64 = 5;
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_WORKER_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Demo producer: user and interval.
pub const DEFAULT_DEMO_USER: &str = "demo-farmer";
pub const DEFAULT_DEMO_INTERVAL: Duration = Duration::from_secs(5);
/// Longest lifetime a client token may still have when presented (`ZIRAAI_JWT_MAX_TTL`).
pub const DEFAULT_JWT_MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated on a token's `exp` and `nbf` (`ZIRAAI_JWT_LEEWAY`); a socket
/// closes this long after its token's `exp`.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);
/// Time a connection has to send a complete request head (also the idle bound of a
/// keep-alive connection between requests).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Share of the process's open-file limit the socket cap takes by default, percent.
pub const DEFAULT_MAX_CONNECTIONS_PERCENT: u64 = 90;
/// Client frames per socket: a sustained rate and a burst.
pub const DEFAULT_CLIENT_FRAME_RATE: FrameRate = FrameRate {
    count: 100,
    per: Duration::from_secs(1),
};
pub const DEFAULT_CLIENT_FRAME_BURST: u32 = 1000;
/// Polling, ack and admin requests per client IP: a burst, then one every interval.
pub const DEFAULT_HTTP_BURST: u32 = 100;
pub const DEFAULT_HTTP_INTERVAL: Duration = Duration::from_millis(100);

/// Which deployment this is; selects the file under `infra/config/` and the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "development" | "dev" => Some(Self::Development),
            "staging" => Some(Self::Staging),
            "production" | "prod" => Some(Self::Production),
            _ => None,
        }
    }
}

/// How the services reach NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URLs (the client picks among them and fails over).
    pub urls: Vec<String>,
    /// `.creds` file (JWT + nkey seed) for decentralised auth.
    pub creds_file: Option<PathBuf>,
    pub token: Option<SecretString>,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub connect_timeout: Duration,
    /// Replicas of every stream and bucket start-up applies (`ZIRAAI_NATS_REPLICAS`,
    /// `[nats] replicas`; 1..=5). Start-up refuses a cluster with fewer JetStream servers.
    pub replicas: usize,
}

impl NatsConfig {
    /// Whether any credential is configured (in options or in a URL's user info).
    pub fn has_auth(&self) -> bool {
        self.creds_file.is_some()
            || self.token.is_some()
            || (self.user.is_some() && self.password.is_some())
            || self.urls.iter().any(|u| {
                u.split_once("://")
                    .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
                    .unwrap_or(false)
            })
    }
}

/// Everything a gateway needs besides NATS.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Origins allowed on WebSocket upgrades; `*` allows any (refused in production).
    pub allowed_origins: Vec<String>,
    pub outbound_queue: usize,
    pub max_client_frame: usize,
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    pub shutdown_grace: Duration,
    pub subscribe_timeout: Duration,
    /// Serve `/demo` with a minted development token (development only).
    pub demo_page: bool,
    /// The user whose events `/demo` shows (`ZIRAAI_DEMO_USER`, as the worker's demo).
    pub demo_user: String,
    /// Realtime switch of the rollback plan: when false, socket endpoints answer 503
    /// and clients poll `/api/v1/notifications`.
    pub realtime_enabled: bool,
    /// Shortest interval between cursor writes of one socket.
    pub cursor_flush_interval: Duration,
    /// Record deliveries and acknowledgements in the `DELIVERY` stream.
    pub delivery_tracking: bool,
    /// Handshakes (WebSocket upgrades and negotiates) one client IP may burst.
    pub handshake_burst: u32,
    /// Catch-up reads after a NATS reconnection running at once, gateway-wide.
    pub resync_concurrency: usize,
    /// Longest random delay before a user's catch-up after a NATS reconnection.
    pub resync_jitter: Duration,
    /// One handshake allowance comes back every this long (per client IP).
    pub handshake_interval: Duration,
    /// SignalR hub keep-alive interval.
    pub signalr_keepalive: Duration,
    /// SignalR client timeout.
    pub signalr_client_timeout: Duration,
    /// SignalR largest client message.
    pub signalr_max_message: usize,
    /// Open sockets per user across all gateways (`ZIRAAI_MAX_CONNECTIONS_PER_USER`).
    pub max_connections_per_user: usize,
    /// What happens to the connection over the limit.
    pub connection_limit_policy: ConnectionLimitPolicy,
    /// Heartbeat interval of this gateway in the `CONNS` bucket.
    pub connection_heartbeat: Duration,
    /// A connection that has not sent a complete request head within this is closed.
    pub header_timeout: Duration,
    /// Sockets (native and SignalR) this process holds at most; more get 503.
    pub max_connections: usize,
    /// Sustained client frames per socket.
    pub client_frame_rate: FrameRate,
    /// Client frames a socket may send at once above the rate.
    pub client_frame_burst: u32,
    /// Polling, ack and admin requests one client IP may burst.
    pub http_burst: u32,
    /// One such request allowance comes back every this long (per client IP).
    pub http_interval: Duration,
    /// Peers whose `Forwarded` / `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

/// Proxies whose forwarded header names the client (`ZIRAAI_TRUSTED_PROXIES`), and
/// which header that is (`ZIRAAI_TRUSTED_PROXY_HEADER`): only the one the proxies
/// write is read, since a proxy passes the other through as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    pub ranges: Vec<crate::metrics::IpRange>,
    pub header: ForwardedHeader,
}

/// The forwarded header trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy `option forwardfor`, AWS ALB, Envoy).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
}

impl ForwardedHeader {
    /// `x-forwarded-for` or `forwarded`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!("{other:?} is not x-forwarded-for or forwarded")),
        }
    }
}

/// A rate: `count` per `per` (`100/s`, `6000/m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRate {
    pub count: u32,
    pub per: Duration,
}

/// What a handshake over the per-user connection limit gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionLimitPolicy {
    /// Close the user's oldest connection (on whichever gateway) and admit the new one.
    EvictOldest,
    /// Answer the new handshake with 429 `too_many_connections`.
    Refuse,
}

impl ConnectionLimitPolicy {
    /// `evict-oldest` or `refuse`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "evict-oldest" => Ok(Self::EvictOldest),
            "refuse" => Ok(Self::Refuse),
            other => Err(format!("{other:?} is not a policy: evict-oldest or refuse")),
        }
    }
}

/// Verification of client tokens.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_secret: SecretString,
    /// True when the built-in development secret is in use.
    pub dev_secret: bool,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Tokens whose `exp` lies further ahead than this are refused.
    pub max_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// PEM or JWKS file of public keys for RS256/ES256 tokens (re-read on SIGHUP).
    pub public_keys_file: Option<std::path::PathBuf>,
}

/// Worker settings: the job consumer, the analyzer, the breaker, the demo.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub demo_user: String,
    pub demo_interval: Duration,
    /// Health endpoints of `ziraai-worker run`.
    pub listen: SocketAddr,
    /// Where jobs are POSTed for analysis.
    pub analyzer_url: String,
    pub analyzer_timeout: Duration,
    /// Jobs processed at once.
    pub max_in_flight: usize,
    /// Calls to the analyzer per job before it fails with `analyzer_unavailable`.
    pub max_attempts: u64,
    /// Redelivery delay after the first transient failure; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Consecutive transient failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one trial call.
    pub breaker_cooldown: Duration,
    pub shutdown_grace: Duration,
    /// Overrides the consumer's `ack_wait` from `nats/consumers/` (redelivery after a
    /// crash; progress acks run at a third of it).
    pub ack_wait: Option<Duration>,
    /// `ziraai-worker dev-analyzer` listen address (development only).
    pub dev_analyzer_listen: SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// What every service reads: the deployment, the broker, logs and `/metrics` access.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    pub env: Environment,
    pub nats: NatsConfig,
    pub log_format: LogFormat,
    /// Addresses allowed to read `/metrics`.
    pub metrics_allow: Vec<crate::metrics::IpRange>,
    /// Things worth a line at start-up that do not stop it (unknown variables).
    pub warnings: Vec<String>,
}

/// The validated configuration of `ziraai-gateway` (the server and its CLI
/// subcommands): the shared section, the gateway's own, and token verification.
/// It holds no worker setting.
#[derive(Debug, Clone)]
pub struct GatewayServiceConfig {
    pub env: Environment,
    pub nats: NatsConfig,
    pub log_format: LogFormat,
    pub metrics_allow: Vec<crate::metrics::IpRange>,
    pub warnings: Vec<String>,
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
}

/// The validated configuration of `ziraai-worker`: the shared section and the
/// worker's own. It holds no gateway setting and no JWT secret.
#[derive(Debug, Clone)]
pub struct WorkerServiceConfig {
    pub env: Environment,
    pub nats: NatsConfig,
    pub log_format: LogFormat,
    pub metrics_allow: Vec<crate::metrics::IpRange>,
    pub warnings: Vec<String>,
    pub worker: WorkerConfig,
}

/// Every problem found while loading, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl GatewayServiceConfig {
    /// Loads the shared and the gateway's sections from `vars` (the `ZIRAAI_*`
    /// variables) and the environment's file.
    ///
    /// The file is `$ZIRAAI_CONFIG_DIR/<env>.toml`; without `ZIRAAI_CONFIG_DIR`,
    /// `infra/config/<env>.toml` relative to the working directory if it exists.
    pub fn load(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        validate::load_gateway(vars)
    }

    /// Loads from the process environment (the only place that reads it).
    pub fn from_process_env() -> Result<Self, ConfigErrors> {
        Self::load(&process_vars())
    }

    /// For `main`: loads from the process environment, or prints every problem (one
    /// line each, prefixed by `program`) and returns the exit code 2.
    pub fn for_main(program: &str) -> Result<Self, std::process::ExitCode> {
        report(program, Self::from_process_env())
    }

    /// A development configuration with defaults, for tests and tools.
    pub fn development() -> Self {
        development(Self::load)
    }
}

impl SharedConfig {
    /// Loads the shared section only (environment, NATS, logs): what a tool that only
    /// talks to NATS needs, e.g. `ziraai-gateway admin`, in every environment (no JWT
    /// secret is required); see [`GatewayServiceConfig::load`].
    pub fn load(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        validate::load_shared(vars)
    }

    /// For `main`: like [`GatewayServiceConfig::for_main`].
    pub fn for_main(program: &str) -> Result<Self, std::process::ExitCode> {
        report(program, Self::load(&process_vars()))
    }
}

impl WorkerServiceConfig {
    /// Loads the shared and the worker's sections; see [`GatewayServiceConfig::load`].
    pub fn load(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        validate::load_worker(vars)
    }

    /// Loads from the process environment (the only place that reads it).
    pub fn from_process_env() -> Result<Self, ConfigErrors> {
        Self::load(&process_vars())
    }

    /// For `main`: like [`GatewayServiceConfig::for_main`].
    pub fn for_main(program: &str) -> Result<Self, std::process::ExitCode> {
        report(program, Self::from_process_env())
    }

    /// A development configuration with defaults, for tests and tools.
    pub fn development() -> Self {
        development(Self::load)
    }
}

fn process_vars() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// Prints every problem, one line each, and maps them to exit code 2.
fn report<T>(program: &str, loaded: Result<T, ConfigErrors>) -> Result<T, std::process::ExitCode> {
    loaded.map_err(|e| {
        eprintln!("{program}: {e}");
        std::process::ExitCode::from(2)
    })
}

fn development<T>(load: fn(&HashMap<String, String>) -> Result<T, ConfigErrors>) -> T {
    match load(&HashMap::from([(
        "ZIRAAI_CONFIG_DIR".to_owned(),
        String::new(),
    )])) {
        Ok(c) => c,
        // The built-in defaults are valid for development; the unit tests prove it.
        Err(e) => panic!("built-in development defaults are invalid: {e}"),
    }
}
