//! The NATS connection and the stream definitions both services apply at start-up.
//!
//! Stream definitions live as JSON under `nats/streams/` in the form the JetStream
//! API and `nats stream add --config FILE` take; they are compiled in from there, so
//! what operators read and what the services apply are one file.
//!
//! Credentials in a URL are taken out before the client sees it ([`credentials`]), and
//! a definition is only sent to the server when it differs from what the server has
//! ([`ensure`]), so services run with credentials that may not manage streams.

mod apply;
mod credentials;
mod ensure;
mod replicas;

pub use apply::{
    Applied, apply_job_streams, apply_notify_streams, apply_producer_streams, apply_stream,
    provision,
};
pub use replicas::LOWER_REPLICAS_COMMAND;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions};
use secrecy::ExposeSecret;

use crate::config::NatsConfig;

/// `nats/streams/NOTIFY.json`: the per-user notification log.
pub const NOTIFY_STREAM_JSON: &str = include_str!("../../../nats/streams/NOTIFY.json");
/// Name of the notification stream.
pub const NOTIFY_STREAM: &str = "NOTIFY";
/// `max_msg_size` of `NOTIFY` (body and headers): producers check events against it
/// before publishing (a test keeps it equal to the definition).
pub const NOTIFY_MAX_MESSAGE: usize = 64 * 1024;
/// `nats/streams/KV_CURSORS.json`: the backing stream of the KV bucket `CURSORS`.
pub const CURSORS_STREAM_JSON: &str = include_str!("../../../nats/streams/KV_CURSORS.json");
/// KV bucket of device cursors (`<userId>.<deviceId>` → last acknowledged sequence).
pub const CURSORS_BUCKET: &str = "CURSORS";
/// `nats/streams/KV_SIGNALR.json`: the stream behind the KV bucket `SIGNALR`.
pub const SIGNALR_STREAM_JSON: &str = include_str!("../../../nats/streams/KV_SIGNALR.json");
/// KV bucket of SignalR stateful-reconnect state (`<connectionId>` → JSON).
pub const SIGNALR_BUCKET: &str = "SIGNALR";
/// `nats/streams/KV_CONNS.json`: the stream behind the KV bucket `CONNS`.
pub const CONNS_STREAM_JSON: &str = include_str!("../../../nats/streams/KV_CONNS.json");
/// KV bucket of open sockets per user and gateway heartbeats (the per-user limit).
pub const CONNS_BUCKET: &str = "CONNS";
/// `nats/streams/DELIVERY.json`: delivery tracking records.
pub const DELIVERY_STREAM_JSON: &str = include_str!("../../../nats/streams/DELIVERY.json");
/// Name of the delivery tracking stream.
pub const DELIVERY_STREAM: &str = "DELIVERY";
/// `nats/streams/JOBS.json`: the analysis work queue.
pub const JOBS_STREAM_JSON: &str = include_str!("../../../nats/streams/JOBS.json");
pub const JOBS_STREAM: &str = "JOBS";
/// Subject of analysis jobs.
pub const JOBS_SUBJECT: &str = "jobs.analysis";
/// `nats/consumers/JOBS-analysis-worker.json`: the worker's durable pull consumer.
pub const JOBS_CONSUMER_JSON: &str =
    include_str!("../../../nats/consumers/JOBS-analysis-worker.json");
/// `nats/streams/ADVISORIES.json`: operator advisories.
pub const ADVISORIES_STREAM_JSON: &str = include_str!("../../../nats/streams/ADVISORIES.json");
/// Subject of poison-job advisories.
pub const POISON_ADVISORY_SUBJECT: &str = "advisories.jobs.poison";
/// Where `make run` starts its pinned nats-server (what the version error points to).
pub const DEV_NATS_URL: &str = "nats://127.0.0.1:4333";
/// Oldest server version we run on (stream RePublish, direct get, KV as used, and the
/// per-message TTL that makes the connection limit heal after a gateway dies).
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 11);

/// Added to a failed create/update: service credentials may not manage streams.
const PROVISION_HINT: &str = "when this credential may not manage streams, apply the definitions first with `ziraai-worker provision` and the operator credential";

/// Why start-up could not get a usable broker connection.
#[derive(Debug, thiserror::Error)]
pub enum NatsSetupError {
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        urls: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot read NATS credentials file {path}: {source}")]
    Creds {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "NATS server {version} at {url} is older than {}.{}; this service needs JetStream RePublish, direct get and per-message TTLs. `make run` starts a pinned server on {DEV_NATS_URL}: set ZIRAAI_NATS_URL={DEV_NATS_URL} (or the URL of another NATS {}.{}+ server)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    TooOld { version: String, url: String },
    #[error("stream definition {name} is not valid JetStream JSON: {source}")]
    BadDefinition {
        name: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot create or update the worker's consumer on JOBS: {0} ({PROVISION_HINT})")]
    Consumer(String),
    #[error("cannot create or update stream {name}: {source} ({PROVISION_HINT})")]
    Stream {
        name: String,
        source: jetstream::context::CreateStreamError,
    },
    #[error(
        "NATS at {urls} has {servers} JetStream server(s); ZIRAAI_NATS_REPLICAS={replicas} needs at least {replicas} (set ZIRAAI_NATS_REPLICAS=1 for a single server)"
    )]
    TooFewServers {
        urls: String,
        servers: usize,
        replicas: usize,
    },
    #[error(
        "NATS cluster {cluster} cannot place stream {stream} on {replicas} JetStream servers ({reason}); ZIRAAI_NATS_REPLICAS={replicas} needs at least {replicas} JetStream servers in the cluster"
    )]
    NoPlacement {
        cluster: String,
        stream: String,
        replicas: usize,
        reason: String,
    },
    #[error(
        "stream {stream} has {have} replica(s) on the server and ZIRAAI_NATS_REPLICAS={wanted}; raising it failed: {source} (raise it with `ziraai-worker provision` and the operator credential)"
    )]
    TooFewReplicas {
        stream: String,
        have: usize,
        wanted: usize,
        source: jetstream::context::CreateStreamError,
    },
}

impl NatsSetupError {
    /// A deployment that does not fit the configuration (too few JetStream servers for
    /// the replicas): `main` exits with 2, as for a configuration error.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::TooFewServers { .. } | Self::NoPlacement { .. })
    }
}

/// Connects with the configured credentials and checks the server version.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<Client, NatsSetupError> {
    connect_observed(cfg, name).await.map(|(client, _)| client)
}

/// Like [`connect`], and also returns a counter bumped each time the connection is
/// re-established after a loss, so callers can re-sync what they may have missed.
pub async fn connect_observed(
    cfg: &NatsConfig,
    name: &str,
) -> Result<(Client, tokio::sync::watch::Receiver<u64>), NatsSetupError> {
    let (reconnects_tx, reconnects) = tokio::sync::watch::channel(0u64);
    let reconnects_tx = std::sync::Arc::new(reconnects_tx);
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut opts = match &cfg.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsSetupError::Creds {
                path: path.display().to_string(),
                source,
            })?,
        None => ConnectOptions::new(),
    };
    if let Some(token) = &cfg.token {
        opts = opts.token(token.expose_secret().to_owned());
    }
    if let (Some(user), Some(pw)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), pw.expose_secret().to_owned());
    }
    // The client logs its server URLs at debug level: give it none with a secret.
    let target = credentials::Target::new(cfg);
    opts = credentials::apply(opts, cfg, target.url_auth);
    let opts = opts
        .name(name)
        .connection_timeout(cfg.connect_timeout)
        // Keep retrying forever once connected: the services report not-ready meanwhile.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * 2u64.saturating_pow(attempts.min(6) as u32)).min(2_000))
        })
        .event_callback(move |event| {
            let (reconnects_tx, lost) = (reconnects_tx.clone(), lost.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                match event {
                    async_nats::Event::Connected if lost.swap(false, SeqCst) => {
                        tracing::info!("NATS connection re-established");
                        reconnects_tx.send_modify(|n| *n += 1);
                    }
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => {
                        lost.store(true, SeqCst);
                        tracing::warn!("NATS connection lost; reconnecting");
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            }
        });
    // Error messages name the URLs, never a password or token in them.
    let urls = target
        .urls
        .iter()
        .map(|u| without_credentials(u))
        .collect::<Vec<_>>()
        .join(",");
    let client = opts
        .connect(target.urls.as_slice())
        .await
        .map_err(|source| NatsSetupError::Connect {
            urls: urls.clone(),
            source,
        })?;
    check_version(&client, &urls)?;
    replicas::check_servers(&client, cfg.replicas, &urls)?;
    Ok((client, reconnects))
}

fn check_version(client: &Client, url: &str) -> Result<(), NatsSetupError> {
    version_supported(client.server_info().version, url.to_owned())
}

/// `nats://user:pw@host:4222` → `nats://***@host:4222`: a URL fit to print.
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Refuses a server older than [`MIN_SERVER_VERSION`].
fn version_supported(version: String, url: String) -> Result<(), NatsSetupError> {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_SERVER_VERSION {
        return Err(NatsSetupError::TooOld { version, url });
    }
    Ok(())
}

/// The `NOTIFY` stream definition from `nats/streams/NOTIFY.json`.
pub fn notify_stream_config() -> Result<stream::Config, NatsSetupError> {
    definition(NOTIFY_STREAM, NOTIFY_STREAM_JSON)
}

fn definition(name: &'static str, json: &str) -> Result<stream::Config, NatsSetupError> {
    serde_json::from_str(json).map_err(|source| NatsSetupError::BadDefinition { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ziraai_proto::ids::{LIVE_PREFIX, NOTIFY_PREFIX};

    #[test]
    fn an_old_server_is_refused_with_the_fix() {
        let url = "nats://127.0.0.1:4222".to_owned();
        let e = version_supported("2.9.10".into(), url.clone()).expect_err("too old");
        assert_eq!(
            e.to_string(),
            "NATS server 2.9.10 at nats://127.0.0.1:4222 is older than 2.11; this service needs \
             JetStream RePublish, direct get and per-message TTLs. `make run` starts a pinned server on \
             nats://127.0.0.1:4333: set ZIRAAI_NATS_URL=nats://127.0.0.1:4333 (or the URL of \
             another NATS 2.11+ server)"
        );
        for ok in ["2.11.0", "v2.15.1", "2.12.0-beta.1", "3.0.0"] {
            assert!(version_supported(ok.into(), url.clone()).is_ok(), "{ok}");
        }
        // 2.10 lacks per-message TTLs: the connection limit's self-healing needs them.
        assert!(version_supported("2.10.22".into(), url.clone()).is_err());
        assert!(version_supported("1.99.0".into(), url).is_err());
    }

    #[test]
    fn urls_in_errors_carry_no_credentials() {
        assert_eq!(
            without_credentials("nats://svc:pw@nats-1:4222"),
            "nats://***@nats-1:4222"
        );
        assert_eq!(without_credentials("tok@nats-1:4222"), "***@nats-1:4222");
        assert_eq!(
            without_credentials("nats://127.0.0.1:4333"),
            "nats://127.0.0.1:4333"
        );
    }

    #[test]
    fn notify_definition_matches_the_subject_rules() {
        let c = notify_stream_config().expect("valid definition");
        assert_eq!(c.name, NOTIFY_STREAM);
        // One token per user: NATS itself refuses `notify.a.b`.
        assert_eq!(c.subjects, vec![format!("{NOTIFY_PREFIX}.*")]);
        assert!(c.allow_direct, "direct get is how gateways fill gaps");
        assert_eq!(c.storage, stream::StorageType::File);
        assert_eq!(c.max_age, Duration::from_secs(7 * 24 * 3600));
        assert!(c.max_messages_per_subject > 0);
        assert!(c.duplicate_window >= Duration::from_secs(120));
        assert_eq!(i64::from(c.max_message_size), NOTIFY_MAX_MESSAGE as i64);
        let rp = c.republish.expect("republish to the live subjects");
        assert_eq!(rp.source, format!("{NOTIFY_PREFIX}.*"));
        assert_eq!(rp.destination, format!("{LIVE_PREFIX}.{{{{wildcard(1)}}}}"));
        assert!(!rp.headers_only);
    }

    #[test]
    fn cursor_bucket_and_tracking_definitions_parse() {
        let kv = definition("KV_CURSORS", CURSORS_STREAM_JSON).expect("valid");
        assert_eq!(kv.subjects, vec![format!("$KV.{CURSORS_BUCKET}.>")]);
        assert_eq!(kv.max_messages_per_subject, 1, "a KV bucket with history 1");
        assert!(kv.allow_rollup && kv.deny_delete && kv.allow_direct);
        let sr = definition("KV_SIGNALR", SIGNALR_STREAM_JSON).expect("valid");
        assert_eq!(sr.subjects, vec![format!("$KV.{SIGNALR_BUCKET}.>")]);
        let conns = definition("KV_CONNS", CONNS_STREAM_JSON).expect("valid");
        assert_eq!(conns.subjects, vec![format!("$KV.{CONNS_BUCKET}.>")]);
        assert!(conns.allow_message_ttl, "gateway heartbeats expire by TTL");
        assert!(!conns.deny_delete, "a closed socket's entry is deleted");
        assert_eq!(
            conns.max_age,
            Duration::ZERO,
            "entries live as long as sockets"
        );
        let jobs = definition(JOBS_STREAM, JOBS_STREAM_JSON).expect("valid");
        assert_eq!(jobs.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(jobs.subjects, vec![JOBS_SUBJECT.to_owned()]);
        let c: jetstream::consumer::pull::Config =
            serde_json::from_str(JOBS_CONSUMER_JSON).expect("valid");
        assert_eq!(c.ack_policy, jetstream::consumer::AckPolicy::Explicit);
        assert_eq!(c.durable_name.as_deref(), Some("analysis-worker"));
        // The NOTIFY duplicate window must outlast a job's ack wait plus the longest
        // redelivery delay, so a re-published event after a crash is de-duplicated.
        let notify = notify_stream_config().expect("valid");
        assert!(notify.duplicate_window >= c.ack_wait * 2 + Duration::from_secs(60));
        definition("ADVISORIES", ADVISORIES_STREAM_JSON).expect("valid");
        let d = definition(DELIVERY_STREAM, DELIVERY_STREAM_JSON).expect("valid");
        assert_eq!(d.subjects, vec!["delivery.>".to_owned()]);
        assert!(
            d.discard_new_per_subject,
            "the first record of each kind is kept"
        );
        assert_eq!(d.max_messages_per_subject, 1);
    }
}
