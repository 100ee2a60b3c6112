//! The demo producer behind `ziraai-worker demo` (used by `make run`): submits a sample
//! analysis job for the demo user every interval until stopped; `ziraai-worker run`
//! analyses it and the user is notified.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use ziraai_proto::UserId;

/// Submits one analysis job to `jobs.analysis` and waits for the stream to store it.
pub async fn submit_job(
    js: &async_nats::jetstream::Context,
    job: &serde_json::Value,
) -> anyhow::Result<u64> {
    let id = job["jobId"].as_str().unwrap_or_default().to_owned();
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(bytes::Bytes::from(job.to_string()))
        .message_id(&id);
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
