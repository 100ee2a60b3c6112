//! The gateway's own sections: its listener and socket limits (`[gateway]`,
//! `ZIRAAI_GATEWAY_*`, `ZIRAAI_SIGNALR_*`, …) and token verification
//! (`ZIRAAI_JWT_SECRET`), with the rules staging and production add to them.

use secrecy::{ExposeSecret, SecretString};

use super::file::GatewayFile;
use super::loader::{
    Loader, addr, parse_addr, parse_nonzero_duration, parse_positive, parse_positive_u32,
};
use super::parse::{parse_bool, parse_duration, split_list};
use super::*;

/// Variables of the gateway's sections.
pub(super) const VARS: &[&str] = &[
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
    "ZIRAAI_GATEWAY_RESYNC_CONCURRENCY",
    "ZIRAAI_GATEWAY_RESYNC_JITTER",
    "ZIRAAI_SIGNALR_KEEPALIVE",
    "ZIRAAI_SIGNALR_CLIENT_TIMEOUT",
    "ZIRAAI_SIGNALR_MAX_MESSAGE",
    "ZIRAAI_DEMO_USER",
    // Read by `ziraai-gateway watch` (its `--token`), not by the server.
    "ZIRAAI_TOKEN",
    "ZIRAAI_JWT_ISSUER",
    "ZIRAAI_JWT_AUDIENCE",
    "ZIRAAI_JWT_MAX_TTL",
    "ZIRAAI_JWT_LEEWAY",
    "ZIRAAI_JWT_PUBLIC_KEYS_FILE",
    "ZIRAAI_MAX_CONNECTIONS_PER_USER",
    "ZIRAAI_CONNECTION_LIMIT_POLICY",
    "ZIRAAI_CONNECTION_HEARTBEAT",
    "ZIRAAI_GATEWAY_HEADER_TIMEOUT",
    "ZIRAAI_GATEWAY_MAX_CONNECTIONS",
    "ZIRAAI_GATEWAY_CLIENT_FRAME_RATE",
    "ZIRAAI_GATEWAY_CLIENT_FRAME_BURST",
    "ZIRAAI_GATEWAY_HTTP_BURST",
    "ZIRAAI_GATEWAY_HTTP_INTERVAL",
    "ZIRAAI_TRUSTED_PROXIES",
    "ZIRAAI_TRUSTED_PROXY_HEADER",
];

/// A user id as the demo settings take it (gateway page and worker producer alike).
pub(super) fn parse_demo_user(s: &str) -> Result<String, String> {
    ziraai_proto::UserId::parse(s)
        .map(|u| u.to_string())
        .map_err(|e| format!("{s:?} {e}"))
}

/// A heartbeat interval: whole seconds (the TTL's unit), 1 s up to
/// [`MAX_CONNECTION_HEARTBEAT`].
fn parse_heartbeat(raw: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(raw)?;
    if d < std::time::Duration::from_secs(1)
        || d > MAX_CONNECTION_HEARTBEAT
        || d.subsec_nanos() != 0
    {
        return Err(format!(
            "{raw:?} must be whole seconds from 1s to {}s",
            MAX_CONNECTION_HEARTBEAT.as_secs()
        ));
    }
    Ok(d)
}

/// The `[gateway]` section and its variables.
pub(super) fn gateway(l: &mut Loader<'_>, g: GatewayFile, env: Environment) -> GatewayConfig {
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
        demo_user: l.pick(
            "ZIRAAI_DEMO_USER",
            g.demo_user,
            DEFAULT_DEMO_USER.into(),
            parse_demo_user,
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
        resync_concurrency: l.pick(
            "ZIRAAI_GATEWAY_RESYNC_CONCURRENCY",
            g.resync_concurrency.map(|n| n.to_string()),
            DEFAULT_RESYNC_CONCURRENCY,
            parse_positive,
        ),
        resync_jitter: l.pick(
            "ZIRAAI_GATEWAY_RESYNC_JITTER",
            g.resync_jitter,
            DEFAULT_RESYNC_JITTER,
            parse_duration,
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
        max_connections_per_user: l.pick(
            "ZIRAAI_MAX_CONNECTIONS_PER_USER",
            g.max_connections_per_user.map(|n| n.to_string()),
            DEFAULT_MAX_CONNECTIONS_PER_USER,
            parse_positive,
        ),
        connection_limit_policy: l.pick(
            "ZIRAAI_CONNECTION_LIMIT_POLICY",
            g.connection_limit_policy,
            ConnectionLimitPolicy::EvictOldest,
            ConnectionLimitPolicy::parse,
        ),
        connection_heartbeat: l.pick(
            "ZIRAAI_CONNECTION_HEARTBEAT",
            g.connection_heartbeat,
            DEFAULT_CONNECTION_HEARTBEAT,
            parse_heartbeat,
        ),
        header_timeout: l.pick(
            "ZIRAAI_GATEWAY_HEADER_TIMEOUT",
            g.header_timeout,
            DEFAULT_HEADER_TIMEOUT,
            parse_nonzero_duration,
        ),
        max_connections: l.pick(
            "ZIRAAI_GATEWAY_MAX_CONNECTIONS",
            g.max_connections.map(|n| n.to_string()),
            super::limits::default_max_connections(DEFAULT_MAX_CONNECTIONS_PERCENT),
            parse_positive,
        ),
        client_frame_rate: l.pick(
            "ZIRAAI_GATEWAY_CLIENT_FRAME_RATE",
            g.client_frame_rate,
            DEFAULT_CLIENT_FRAME_RATE,
            super::limits::parse_rate,
        ),
        client_frame_burst: l.pick(
            "ZIRAAI_GATEWAY_CLIENT_FRAME_BURST",
            g.client_frame_burst.map(|n| n.to_string()),
            DEFAULT_CLIENT_FRAME_BURST,
            parse_positive_u32,
        ),
        http_burst: l.pick(
            "ZIRAAI_GATEWAY_HTTP_BURST",
            g.http_burst.map(|n| n.to_string()),
            DEFAULT_HTTP_BURST,
            parse_positive_u32,
        ),
        http_interval: l.pick(
            "ZIRAAI_GATEWAY_HTTP_INTERVAL",
            g.http_interval,
            DEFAULT_HTTP_INTERVAL,
            parse_nonzero_duration,
        ),
        trusted_proxies: TrustedProxies {
            ranges: l.pick(
                "ZIRAAI_TRUSTED_PROXIES",
                g.trusted_proxies.map(|v| v.join(",")),
                Vec::new(),
                |s| {
                    split_list(s)
                        .iter()
                        .map(|r| crate::metrics::IpRange::parse(r))
                        .collect()
                },
            ),
            header: l.pick(
                "ZIRAAI_TRUSTED_PROXY_HEADER",
                g.trusted_proxy_header,
                ForwardedHeader::XForwardedFor,
                ForwardedHeader::parse,
            ),
        },
    };
    origins(l, &gateway.allowed_origins, env);
    if env == Environment::Production && gateway.allowed_origins.iter().any(|o| o == "*") {
        l.errors.push(
            "ZIRAAI_GATEWAY_ALLOWED_ORIGINS: the wildcard \"*\" is refused in production; list the real origins"
                .into(),
        );
    }
    if env != Environment::Development && gateway.demo_page {
        l.errors
            .push("ZIRAAI_GATEWAY_DEMO_PAGE: the demo page is development-only".into());
    }
    gateway
}

/// Every origin pattern parses (one line per bad one); `null` is refused in production.
fn origins(l: &mut Loader<'_>, origins: &[String], env: Environment) {
    for o in origins {
        if let Err(e) = crate::origin::OriginPattern::parse(o) {
            l.errors
                .push(format!("ZIRAAI_GATEWAY_ALLOWED_ORIGINS: {e}"));
        } else if env == Environment::Production && o == "null" {
            l.errors.push(
                "ZIRAAI_GATEWAY_ALLOWED_ORIGINS: \"null\" (sandboxed and file: pages) is refused in production"
                    .into(),
            );
        }
    }
}

/// Token verification: the JWT secret (required outside development) and the claim
/// rules (issuer, audience, longest lifetime, leeway, public keys).
pub(super) fn auth(l: &mut Loader<'_>, env: Environment) -> AuthConfig {
    let (jwt_secret, dev_secret) = jwt_secret(l, env);
    let text = |s: &str| Ok(Some(s.trim().to_owned()));
    AuthConfig {
        jwt_secret,
        dev_secret,
        issuer: l.pick("ZIRAAI_JWT_ISSUER", None, None, text),
        audience: l.pick("ZIRAAI_JWT_AUDIENCE", None, None, text),
        max_ttl: l.pick(
            "ZIRAAI_JWT_MAX_TTL",
            None,
            DEFAULT_JWT_MAX_TTL,
            parse_nonzero_duration,
        ),
        leeway: l.pick(
            "ZIRAAI_JWT_LEEWAY",
            None,
            DEFAULT_JWT_LEEWAY,
            parse_duration,
        ),
        // Read (and checked) by the gateway at start-up and on SIGHUP.
        public_keys_file: l.pick("ZIRAAI_JWT_PUBLIC_KEYS_FILE", None, None, |s| {
            Ok(Some(std::path::PathBuf::from(s)))
        }),
    }
}

/// The HS256 secret and whether it is the built-in development one.
fn jwt_secret(l: &mut Loader<'_>, env: Environment) -> (SecretString, bool) {
    match (l.secret("ZIRAAI_JWT_SECRET"), env) {
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
            let dev = s == DEV_JWT_SECRET;
            (secret, dev)
        }
        // The gateway warns at start-up that the built-in secret is in use.
        (None, Environment::Development) => (SecretString::from(DEV_JWT_SECRET), true),
        (None, env) => {
            l.errors.push(format!(
                "ZIRAAI_JWT_SECRET (or ZIRAAI_JWT_SECRET_FILE) must be set in {}: at least {MIN_SECRET_BYTES} random bytes",
                env.as_str()
            ));
            (SecretString::from(""), false)
        }
    }
}
