//! The demo producer behind `ziraai-worker demo` (used by `make run`): submits a sample
//! analysis job for the demo user every interval until stopped; `ziraai-worker run`
//! analyses it and the user is notified.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use ziraai_proto::UserId;

/// Submits one analysis job to `jobs.analysis` and waits for the stream to store it,
/// in a `job.submit` span whose `traceparent` the job carries: the worker's `job` span
/// continues that trace.
pub async fn submit_job(
    js: &async_nats::jetstream::Context,
    job: &serde_json::Value,
) -> anyhow::Result<u64> {
    let id = job["jobId"].as_str().unwrap_or_default().to_owned();
    let span = tracing::info_span!(
        "job.submit",
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.destination.name = ziraai_common::nats::JOBS_SUBJECT,
        messaging.operation.type = "publish",
        messaging.message.id = id.as_str(),
        messaging.nats.stream.sequence = tracing::field::Empty,
    );
    let mut headers = async_nats::HeaderMap::new();
    ziraai_common::telemetry::inject(&span, &mut headers);
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(bytes::Bytes::from(job.to_string()))
        .headers(headers)
        .message_id(&id);
    let ack = store(js, msg).instrument(span.clone()).await?;
    span.record("messaging.nats.stream.sequence", ack);
    Ok(ack)
}

async fn store(
    js: &async_nats::jetstream::Context,
    msg: async_nats::jetstream::message::PublishMessage,
) -> anyhow::Result<u64> {
    let ack = js
        .send_publish(ziraai_common::nats::JOBS_SUBJECT, msg)
        .await?
        .await
        .map_err(|e| match e.kind() {
            // Submitters may not create streams (least privilege): say who does.
            async_nats::jetstream::context::PublishErrorKind::StreamNotFound => anyhow::anyhow!(
                "no JOBS stream on this server: start `ziraai-worker run` or run `ziraai-worker provision` first"
            ),
            _ => anyhow::Error::new(e),
        })?;
    Ok(ack.sequence)
}

/// Submits a sample job every `interval` until `stop` is cancelled.
pub async fn run(
    js: async_nats::jetstream::Context,
    user: UserId,
    interval: Duration,
    stop: CancellationToken,
) {
    let run_id = nuid::next().to_string();
    let mut ticker = tokio::time::interval(interval);
    for n in 1u64.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let job = json!({
            "jobId": format!("demo-{run_id}-{n}"),
            "analysisId": format!("demo-{n}"),
            "userId": user,
            "imageUrl": format!("https://example.invalid/demo/{n}.jpg"),
        });
        match submit_job(&js, &job).await {
            Ok(seq) => tracing::info!(user = %user, job = %job["jobId"], seq, "demo job submitted"),
            Err(e) => tracing::warn!(user = %user, error = %e, "demo job not submitted"),
        }
    }
}
