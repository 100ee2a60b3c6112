//! Applying the definitions under `nats/` with the configured replicas.
//!
//! Every stream (and bucket stream) gets `num_replicas` from the configuration
//! (`ZIRAAI_NATS_REPLICAS`), whatever its file says; the worker's consumer follows its
//! stream (replicas unset, which JetStream requires for a work queue anyway). A stream
//! with more replicas on the server than configured keeps them, with a warning: only
//! [`provision`] with `lower_replicas` lowers them.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::replicas::{is_error_code, is_placement_error, kept_warning};
use super::*;

/// What applying one stream did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The server had this definition.
    Unchanged,
    Created,
    Updated,
    /// The server has more replicas than configured and keeps them (warned about).
    KeptReplicas {
        server: usize,
    },
    /// Lowered from `from` replicas, as asked (`provision --lower-replicas`).
    Lowered {
        from: usize,
    },
}

/// Creates the stream, or updates it when the definition changed, with `replicas`
/// (never fewer than the server has). Idempotent, and only a `STREAM.INFO` request when
/// the server already has this definition.
pub async fn apply_stream(
    js: &jetstream::Context,
    config: stream::Config,
    replicas: usize,
) -> Result<Applied, NatsSetupError> {
    apply_stream_as(js, config, replicas, false).await
}

/// Bound of one read or create of a stream; attempts before giving up.
const ATTEMPT: Duration = Duration::from_secs(2);
const ATTEMPTS: u32 = 5;
/// Bound of an update of an existing stream (a credential that may not manage streams
/// gets no answer at all: the server only reports a permissions violation).
const UPDATE_WAIT: Duration = Duration::from_secs(5);

/// Why one attempt did not apply the stream.
enum Attempt {
    /// No answer to a read or a create: a cluster answers no request about a
    /// replicated stream while it is being created or elects its leader (a service
    /// starting next to another one on a new cluster), and the request is lost.
    Unanswered,
    Failed(NatsSetupError),
}

/// [`apply_once`], again while JetStream leaves a read or a create unanswered.
async fn apply_stream_as(
    js: &jetstream::Context,
    config: stream::Config,
    replicas: usize,
    lower: bool,
) -> Result<Applied, NatsSetupError> {
    for attempt in 1..=ATTEMPTS {
        match apply_once(js, config.clone(), replicas, lower).await {
            Ok(applied) => return Ok(applied),
            Err(Attempt::Failed(e)) => return Err(e),
            Err(Attempt::Unanswered) => tracing::info!(
                stream = %config.name,
                attempt,
                "no answer from JetStream within {ATTEMPT:?} (the stream may be electing its leader); retrying"
            ),
        }
    }
    Err(NatsSetupError::Stream {
        name: config.name,
        source: jetstream::context::CreateStreamError::new(
            jetstream::context::CreateStreamErrorKind::TimedOut,
        ),
    })
}

async fn apply_once(
    js: &jetstream::Context,
    mut config: stream::Config,
    replicas: usize,
    lower: bool,
) -> Result<Applied, Attempt> {
    let name = config.name.clone();
    config.num_replicas = replicas;
    let mut outcome = Applied::Created;
    let mut raising_from = None;
    let current = tokio::time::timeout(ATTEMPT, js.get_stream(&name))
        .await
        .map_err(|_| Attempt::Unanswered)?;
    // Only "not found" means create: any other failure (no responders during an
    // election, a lost request) is read again, never taken for a missing stream, which
    // would overwrite a stream with more replicas than configured.
    let current = match current {
        Ok(current) => Some(current),
        Err(e) if is_not_found(&e) => None,
        Err(e) => {
            tracing::info!(stream = %name, error = %e, "reading the stream's definition failed");
            return Err(Attempt::Unanswered);
        }
    };
    if let Some(current) = current {
        let server_config = &current.cached_info().config;
        let server = server_config.num_replicas;
        outcome = Applied::Updated;
        if server > replicas && lower {
            outcome = Applied::Lowered { from: server };
        } else if server > replicas {
            tracing::warn!(stream = %name, server, configured = replicas, "{}", kept_warning(&name, server, replicas));
            config.num_replicas = server;
            outcome = Applied::KeptReplicas { server };
        } else if server < replicas {
            raising_from = Some(server);
        }
        if ensure::matches(&config, server_config) {
            return Ok(match outcome {
                Applied::KeptReplicas { .. } => outcome,
                _ => Applied::Unchanged,
            });
        }
    }
    let wanted = config.num_replicas;
    let sent = if outcome == Applied::Created {
        match tokio::time::timeout(ATTEMPT, js.create_stream(config)).await {
            Err(_) => return Err(Attempt::Unanswered),
            // Another process created it meanwhile: read it again and apply the rules
            // (never a blind update, which could lower its replicas).
            Ok(Err(e)) if is_error_code(&e, jetstream::ErrorCode::STREAM_NAME_EXIST) => {
                return Err(Attempt::Unanswered);
            }
            Ok(r) => r.map(|_| ()),
        }
    } else {
        tokio::time::timeout(UPDATE_WAIT, js.update_stream(config))
            .await
            .unwrap_or_else(|_| {
                Err(jetstream::context::CreateStreamError::new(
                    jetstream::context::CreateStreamErrorKind::TimedOut,
                ))
            })
            .map(|_| ())
    };
    let failed = match sent {
        Ok(()) => return Ok(outcome),
        Err(source) if is_placement_error(&source) => NatsSetupError::NoPlacement {
            cluster: js
                .client()
                .server_info()
                .cluster
                .unwrap_or_else(|| "(none: a single server)".into()),
            stream: name,
            replicas: wanted,
            reason: source.to_string(),
        },
        Err(source) => match raising_from {
            Some(have) => NatsSetupError::TooFewReplicas {
                stream: name,
                have,
                wanted,
                reason: match source.kind() {
                    jetstream::context::CreateStreamErrorKind::TimedOut => format!(
                        "no answer within {UPDATE_WAIT:?} (a credential that may not manage streams gets none)"
                    ),
                    _ => source.to_string(),
                },
            },
            None => NatsSetupError::Stream { name, source },
        },
    };
    Err(Attempt::Failed(failed))
}

/// Whether reading a stream failed because the server has no such stream.
fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Applies the job queue (`JOBS` and its consumer, with `ack_wait` overridden if given)
/// and `ADVISORIES`, with `replicas`; returns the worker's consumer.
pub async fn apply_job_streams(
    js: &jetstream::Context,
    ack_wait: Option<Duration>,
    replicas: usize,
) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, NatsSetupError> {
    apply_jobs(js, ack_wait, replicas, false, &mut Vec::new()).await
}

async fn apply_jobs(
    js: &jetstream::Context,
    ack_wait: Option<Duration>,
    replicas: usize,
    lower: bool,
    report: &mut Vec<(String, Applied)>,
) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, NatsSetupError> {
    for (name, json) in [
        ("ADVISORIES", ADVISORIES_STREAM_JSON),
        (JOBS_STREAM, JOBS_STREAM_JSON),
    ] {
        let applied = apply_stream_as(js, definition(name, json)?, replicas, lower).await?;
        report.push((name.to_owned(), applied));
    }
    let mut config: jetstream::consumer::pull::Config = serde_json::from_str(JOBS_CONSUMER_JSON)
        .map_err(|source| NatsSetupError::BadDefinition {
            name: "JOBS-analysis-worker",
            source,
        })?;
    if let Some(wait) = ack_wait {
        config.ack_wait = wait;
    }
    // Unset: the consumer has its stream's replicas and follows it when the stream is
    // raised or lowered (a work queue's consumer must match its stream).
    config.num_replicas = 0;
    // Read and created right after JOBS, which may still be electing its leader (a
    // 2.15.1 cluster then leaves requests unanswered): each attempt bounded, retried.
    let mut failure = String::new();
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT, apply_consumer(js, config.clone())).await {
            Ok(Ok(consumer)) => return Ok(consumer),
            Ok(Err(e)) => failure = e,
            Err(_) => failure = format!("no answer within {ATTEMPT:?}"),
        }
        tracing::info!(attempt, error = %failure, "applying the worker's consumer on JOBS failed; retrying");
    }
    Err(NatsSetupError::Consumer(failure))
}

/// One attempt: the consumer as it is when it matches the definition, else created or
/// updated.
async fn apply_consumer(
    js: &jetstream::Context,
    config: jetstream::consumer::pull::Config,
) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, String> {
    let stream = js
        .get_stream(JOBS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(name) = config.durable_name.as_deref() {
        let current = stream.get_consumer::<jetstream::consumer::pull::Config>(name);
        if let Ok(current) = current.await
            && ensure::matches(&config, &current.cached_info().config)
        {
            return Ok(current);
        }
    }
    stream
        .create_consumer(config)
        .await
        .map_err(|e| e.to_string())
}

/// Applies what a producer (`ziraai-worker run`, `publish`) writes to: `NOTIFY`.
pub async fn apply_producer_streams(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<(), NatsSetupError> {
    apply_stream(js, notify_stream_config()?, replicas)
        .await
        .map(|_| ())
}

/// Applies every definition under `nats/` (the operator's provisioning step): the
/// gateway's streams and buckets, `JOBS` with the worker's consumer, `ADVISORIES`, all
/// with `replicas`. Streams with more replicas keep them unless `lower_replicas`.
/// Returns what was done to each stream.
pub async fn provision(
    js: &jetstream::Context,
    ack_wait: Option<Duration>,
    replicas: usize,
    lower_replicas: bool,
) -> Result<Vec<(String, Applied)>, NatsSetupError> {
    let mut report = Vec::new();
    apply_notify(js, replicas, lower_replicas, &mut report).await?;
    apply_jobs(js, ack_wait, replicas, lower_replicas, &mut report).await?;
    Ok(report)
}

/// Applies every stream the notification path needs, with `replicas`: `NOTIFY`, the
/// streams of the `CURSORS`, `SIGNALR` and `CONNS` buckets, and `DELIVERY`.
pub async fn apply_notify_streams(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<(), NatsSetupError> {
    apply_notify(js, replicas, false, &mut Vec::new()).await
}

async fn apply_notify(
    js: &jetstream::Context,
    replicas: usize,
    lower: bool,
    report: &mut Vec<(String, Applied)>,
) -> Result<(), NatsSetupError> {
    for (name, json) in NOTIFY_PATH_STREAMS {
        let applied = apply_stream_as(js, definition(name, json)?, replicas, lower).await?;
        report.push((name.to_owned(), applied));
    }
    Ok(())
}

/// The streams of the notification path, in the order they are applied.
const NOTIFY_PATH_STREAMS: [(&str, &str); 5] = [
    (NOTIFY_STREAM, NOTIFY_STREAM_JSON),
    ("KV_CURSORS", CURSORS_STREAM_JSON),
    ("KV_SIGNALR", SIGNALR_STREAM_JSON),
    ("KV_CONNS", CONNS_STREAM_JSON),
    (DELIVERY_STREAM, DELIVERY_STREAM_JSON),
];
