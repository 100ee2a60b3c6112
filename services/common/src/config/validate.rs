//! Assembles the layers and applies the rules of each environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::file::FileConfig;
use super::loader::{
    Loader, addr, parse_addr, parse_nonzero_duration, parse_positive, parse_positive_u32,
};
use super::parse::{parse_bool, parse_duration, split_list};
use super::*;

/// Every variable the services read. Others starting with `ZIRAAI_` get a warning.
const KNOWN_VARS: &[&str] = &[
    "ZIRAAI_ENV",
    "ZIRAAI_CONFIG_DIR",
    "ZIRAAI_NATS_URL",
    "ZIRAAI_NATS_CREDS_FILE",
    "ZIRAAI_NATS_TOKEN",
    "ZIRAAI_NATS_TOKEN_FILE",
    "ZIRAAI_NATS_USER",
    "ZIRAAI_NATS_PASSWORD",
    "ZIRAAI_NATS_PASSWORD_FILE",
    "ZIRAAI_NATS_CONNECT_TIMEOUT",
    "ZIRAAI_JWT_SECRET",
    "ZIRAAI_JWT_SECRET_FILE",
    "ZIRAAI_GATEWAY_LISTEN",
    "ZIRAAI_GATEWAY_ALLOWED_ORIGINS",
    "ZIRAAI_GATEWAY_OUTBOUND_QUEUE",
    "ZIRAAI_GATEWAY_MAX_CLIENT_FRAME",
    "ZIRAAI_GATEWAY_WRITE_TIMEOUT",
    "ZIRAAI_GATEWAY_PING_INTERVAL",
    "ZIRAAI_GATEWAY_SHUTDOWN_GRACE",
    "ZIRAAI_GATEWAY_SUBSCRIBE_TIMEOUT",
    "ZIRAAI_GATEWAY_DEMO_PAGE",
    "ZIRAAI_REALTIME_ENABLED",
    "ZIRAAI_GATEWAY_CURSOR_FLUSH_INTERVAL",
    "ZIRAAI_DELIVERY_TRACKING",
    "ZIRAAI_GATEWAY_HANDSHAKE_BURST",
    "ZIRAAI_GATEWAY_HANDSHAKE_INTERVAL",
    "ZIRAAI_SIGNALR_KEEPALIVE",
    "ZIRAAI_SIGNALR_CLIENT_TIMEOUT",
    "ZIRAAI_SIGNALR_MAX_MESSAGE",
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
    "ZIRAAI_LOG_FORMAT",
    "ZIRAAI_METRICS_ALLOW",
];

fn read_file_layer(env: Environment, vars: &HashMap<String, String>) -> Result<FileConfig, String> {
    let path: PathBuf = match vars.get("ZIRAAI_CONFIG_DIR") {
        Some(dir) if dir.is_empty() => return Ok(FileConfig::default()),
        Some(dir) => {
            let p = Path::new(dir).join(format!("{}.toml", env.as_str()));
            if !p.exists() {
                return Err(format!("ZIRAAI_CONFIG_DIR: {} does not exist", p.display()));
            }
            p
        }
        None => {
            let p = Path::new("infra/config").join(format!("{}.toml", env.as_str()));
            if !p.exists() {
                return Ok(FileConfig::default());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub(super) fn load(vars: &HashMap<String, String>) -> Result<Config, ConfigErrors> {
    let mut l = Loader {
        vars,
        errors: Vec::new(),
    };
    let mut warnings = Vec::new();

    let env = match vars.get("ZIRAAI_ENV").filter(|v| !v.is_empty()) {
        None => Environment::Development,
        Some(raw) => Environment::parse(raw).unwrap_or_else(|| {
            l.errors.push(format!(
                "ZIRAAI_ENV: {raw:?} is not one of development, staging, production"
            ));
            Environment::Development
        }),
    };
    let file = read_file_layer(env, vars).unwrap_or_else(|e| {
        l.errors.push(e);
        FileConfig::default()
    });

    let nats = NatsConfig {
        urls: l.pick(
            "ZIRAAI_NATS_URL",
            file.nats.url,
            vec![DEFAULT_NATS_URL.into()],
            |s| {
                let urls = split_list(s);
                if urls.is_empty() {
                    Err("no URL given".into())
                } else {
                    Ok(urls)
                }
            },
        ),
        creds_file: l
            .var("ZIRAAI_NATS_CREDS_FILE")
            .map(str::to_owned)
            .or(file.nats.creds_file)
            .map(PathBuf::from),
        token: l.secret("ZIRAAI_NATS_TOKEN"),
        user: l
            .var("ZIRAAI_NATS_USER")
            .map(str::to_owned)
            .or(file.nats.user),
        password: l.secret("ZIRAAI_NATS_PASSWORD"),
        connect_timeout: l.pick(
            "ZIRAAI_NATS_CONNECT_TIMEOUT",
            file.nats.connect_timeout,
            DEFAULT_NATS_CONNECT_TIMEOUT,
            parse_nonzero_duration,
        ),
    };

    let g = file.gateway;
    let gateway = GatewayConfig {
        listen: l.pick(
            "ZIRAAI_GATEWAY_LISTEN",
            g.listen,
            addr(DEFAULT_GATEWAY_LISTEN),
            parse_addr,
        ),
        allowed_origins: l.pick(
            "ZIRAAI_GATEWAY_ALLOWED_ORIGINS",
            g.allowed_origins.map(|v| v.join(",")),
            match env {
                Environment::Development => vec!["*".into()],
                _ => Vec::new(),
            },
            |s| Ok(split_list(s)),
        ),
        outbound_queue: l.pick(
            "ZIRAAI_GATEWAY_OUTBOUND_QUEUE",
            g.outbound_queue.map(|n| n.to_string()),
            DEFAULT_OUTBOUND_QUEUE,
            parse_positive,
        ),
        max_client_frame: l.pick(
            "ZIRAAI_GATEWAY_MAX_CLIENT_FRAME",
            g.max_client_frame.map(|n| n.to_string()),
            DEFAULT_MAX_CLIENT_FRAME,
            parse_positive,
        ),
        write_timeout: l.pick(
            "ZIRAAI_GATEWAY_WRITE_TIMEOUT",
            g.write_timeout,
            DEFAULT_WRITE_TIMEOUT,
            parse_nonzero_duration,
        ),
        ping_interval: l.pick(
            "ZIRAAI_GATEWAY_PING_INTERVAL",
            g.ping_interval,
            DEFAULT_PING_INTERVAL,
            parse_nonzero_duration,
        ),
        shutdown_grace: l.pick(
            "ZIRAAI_GATEWAY_SHUTDOWN_GRACE",
            g.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
            parse_duration,
        ),
        subscribe_timeout: l.pick(
            "ZIRAAI_GATEWAY_SUBSCRIBE_TIMEOUT",
            g.subscribe_timeout,
            DEFAULT_SUBSCRIBE_TIMEOUT,
            parse_nonzero_duration,
        ),
        demo_page: l.pick(
            "ZIRAAI_GATEWAY_DEMO_PAGE",
            g.demo_page.map(|b| b.to_string()),
            env == Environment::Development,
            parse_bool,
        ),
        realtime_enabled: l.pick(
            "ZIRAAI_REALTIME_ENABLED",
            g.realtime_enabled.map(|b| b.to_string()),
            true,
            parse_bool,
        ),
        cursor_flush_interval: l.pick(
            "ZIRAAI_GATEWAY_CURSOR_FLUSH_INTERVAL",
            g.cursor_flush_interval,
            DEFAULT_CURSOR_FLUSH_INTERVAL,
            parse_nonzero_duration,
        ),
        delivery_tracking: l.pick(
            "ZIRAAI_DELIVERY_TRACKING",
            g.delivery_tracking.map(|b| b.to_string()),
            true,
            parse_bool,
        ),
        handshake_burst: l.pick(
            "ZIRAAI_GATEWAY_HANDSHAKE_BURST",
            g.handshake_burst.map(|n| n.to_string()),
            DEFAULT_HANDSHAKE_BURST,
            parse_positive_u32,
        ),
        handshake_interval: l.pick(
            "ZIRAAI_GATEWAY_HANDSHAKE_INTERVAL",
            g.handshake_interval,
            DEFAULT_HANDSHAKE_INTERVAL,
            parse_nonzero_duration,
        ),
        signalr_keepalive: l.pick(
            "ZIRAAI_SIGNALR_KEEPALIVE",
            g.signalr_keepalive,
            DEFAULT_SIGNALR_KEEPALIVE,
            parse_nonzero_duration,
        ),
        signalr_client_timeout: l.pick(
            "ZIRAAI_SIGNALR_CLIENT_TIMEOUT",
            g.signalr_client_timeout,
            DEFAULT_SIGNALR_CLIENT_TIMEOUT,
            parse_nonzero_duration,
        ),
        signalr_max_message: l.pick(
            "ZIRAAI_SIGNALR_MAX_MESSAGE",
            g.signalr_max_message.map(|n| n.to_string()),
            DEFAULT_SIGNALR_MAX_MESSAGE,
            parse_positive,
        ),
    };

    let w = file.worker;
    let worker = WorkerConfig {
        demo_user: l.pick(
            "ZIRAAI_DEMO_USER",
            w.demo_user,
            DEFAULT_DEMO_USER.into(),
            |s| {
                ziraai_proto::UserId::parse(s)
                    .map(|u| u.to_string())
                    .map_err(|e| format!("{s:?} {e}"))
            },
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
    };

    let metrics_allow = l.pick(
        "ZIRAAI_METRICS_ALLOW",
        file.metrics_allow.map(|v| v.join(",")),
        crate::metrics::IpRange::loopback(),
        |s| {
            split_list(s)
                .iter()
                .map(|r| crate::metrics::IpRange::parse(r))
                .collect()
        },
    );
    let log_format = l.pick(
        "ZIRAAI_LOG_FORMAT",
        file.log.format,
        match env {
            Environment::Development => LogFormat::Pretty,
            _ => LogFormat::Json,
        },
        |s| match s.trim() {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            _ => Err(format!("{s:?} is not json or pretty")),
        },
    );

    let auth = match (l.secret("ZIRAAI_JWT_SECRET"), env) {
        (Some(secret), _) => {
            let s = secret.expose_secret();
            if env != Environment::Development {
                if s == DEV_JWT_SECRET {
                    l.errors.push(format!(
                        "ZIRAAI_JWT_SECRET is the built-in development secret; {} needs its own",
                        env.as_str()
                    ));
                } else if s.len() < MIN_SECRET_BYTES {
                    l.errors.push(format!(
                        "ZIRAAI_JWT_SECRET is {} bytes; {} needs at least {MIN_SECRET_BYTES}",
                        s.len(),
                        env.as_str()
                    ));
                }
            }
            AuthConfig {
                dev_secret: s == DEV_JWT_SECRET,
                jwt_secret: secret,
            }
        }
        (None, Environment::Development) => {
            // The gateway (the one service that verifies tokens) warns at start-up.
            AuthConfig {
                jwt_secret: SecretString::from(DEV_JWT_SECRET),
                dev_secret: true,
            }
        }
        (None, env) => {
            l.errors.push(format!(
                "ZIRAAI_JWT_SECRET (or ZIRAAI_JWT_SECRET_FILE) must be set in {}: at least {MIN_SECRET_BYTES} random bytes",
                env.as_str()
            ));
            AuthConfig {
                jwt_secret: SecretString::from(""),
                dev_secret: false,
            }
        }
    };

    if env == Environment::Production {
        if gateway.allowed_origins.iter().any(|o| o == "*") {
            l.errors.push(
                "ZIRAAI_GATEWAY_ALLOWED_ORIGINS: the wildcard \"*\" is refused in production; list the real origins"
                    .into(),
            );
        }
        if !nats.has_auth() {
            l.errors.push(
                "NATS credentials are required in production: set ZIRAAI_NATS_CREDS_FILE, ZIRAAI_NATS_TOKEN, or ZIRAAI_NATS_USER with ZIRAAI_NATS_PASSWORD"
                    .into(),
            );
        }
    }
    if env != Environment::Development && gateway.demo_page {
        l.errors
            .push("ZIRAAI_GATEWAY_DEMO_PAGE: the demo page is development-only".into());
    }

    let mut unknown: Vec<&String> = vars
        .keys()
        .filter(|k| k.starts_with("ZIRAAI_") && !KNOWN_VARS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    warnings.extend(
        unknown
            .into_iter()
            .map(|k| format!("unknown variable {k} is ignored")),
    );

    if !l.errors.is_empty() {
        return Err(ConfigErrors(l.errors));
    }
    Ok(Config {
        env,
        nats,
        gateway,
        auth,
        worker,
        log_format,
        metrics_allow,
        warnings,
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
