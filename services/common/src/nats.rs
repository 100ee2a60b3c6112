//! The NATS connection and the stream definitions both services apply at start-up.
//!
//! Stream definitions live as JSON under `nats/streams/` in the form the JetStream
//! API and `nats stream add --config FILE` take; they are compiled in from there, so
//! what operators read and what the services apply are one file.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions};
use secrecy::ExposeSecret;

use crate::config::NatsConfig;

/// `nats/streams/NOTIFY.json`: the per-user notification log.
pub const NOTIFY_STREAM_JSON: &str = include_str!("../../../nats/streams/NOTIFY.json");
/// Name of the notification stream.
pub const NOTIFY_STREAM: &str = "NOTIFY";
/// Oldest server version we run on (stream RePublish, direct get, KV as used).
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

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
        "NATS server {version} at {url} is older than {}.{}; this service needs JetStream RePublish and direct get (use the pinned server: make nats-server)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    TooOld { version: String, url: String },
    #[error("stream definition {name} is not valid JetStream JSON: {source}")]
    BadDefinition {
        name: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        name: String,
        source: jetstream::context::CreateStreamError,
    },
}

/// Connects with the configured credentials and checks the server version.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<Client, NatsSetupError> {
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
    let opts = opts
        .name(name)
        .connection_timeout(cfg.connect_timeout)
        // Keep retrying forever once connected: the services report not-ready meanwhile.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * 2u64.saturating_pow(attempts.min(6) as u32)).min(2_000))
        });
    let urls = cfg.urls.join(",");
    let client =
        opts.connect(cfg.urls.as_slice())
            .await
            .map_err(|source| NatsSetupError::Connect {
                urls: urls.clone(),
                source,
            })?;
    check_version(&client, &urls)?;
    Ok(client)
}

fn check_version(client: &Client, url: &str) -> Result<(), NatsSetupError> {
    let version = client.server_info().version;
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_SERVER_VERSION {
        return Err(NatsSetupError::TooOld {
            version,
            url: url.to_owned(),
        });
    }
    Ok(())
}

/// The `NOTIFY` stream definition from `nats/streams/NOTIFY.json`.
pub fn notify_stream_config() -> Result<stream::Config, NatsSetupError> {
    serde_json::from_str(NOTIFY_STREAM_JSON).map_err(|source| NatsSetupError::BadDefinition {
        name: NOTIFY_STREAM,
        source,
    })
}

/// Creates the stream, or updates it when the definition changed. Idempotent.
pub async fn apply_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), NatsSetupError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map(|_| ())
        .map_err(|source| NatsSetupError::Stream { name, source })
}

/// Applies every stream the notification path needs.
pub async fn apply_notify_streams(js: &jetstream::Context) -> Result<(), NatsSetupError> {
    apply_stream(js, notify_stream_config()?).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ziraai_proto::ids::{LIVE_PREFIX, NOTIFY_PREFIX};

    #[test]
    fn notify_definition_matches_the_subject_rules() {
        let c = notify_stream_config().expect("valid definition");
        assert_eq!(c.name, NOTIFY_STREAM);
        assert_eq!(c.subjects, vec![format!("{NOTIFY_PREFIX}.>")]);
        assert!(c.allow_direct, "direct get is how gateways fill gaps");
        assert_eq!(c.storage, stream::StorageType::File);
        assert_eq!(c.max_age, Duration::from_secs(7 * 24 * 3600));
        assert!(c.max_messages_per_subject > 0);
        assert!(c.duplicate_window >= Duration::from_secs(120));
        let rp = c.republish.expect("republish to the live subjects");
        assert_eq!(rp.source, format!("{NOTIFY_PREFIX}.>"));
        assert_eq!(rp.destination, format!("{LIVE_PREFIX}.>"));
        assert!(!rp.headers_only);
    }
}
