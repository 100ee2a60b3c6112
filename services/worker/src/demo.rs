//! The demo producer behind `ziraai-worker demo` (used by `make run`): publishes a
//! sample analysis outcome for the demo user every interval until stopped.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use ziraai_proto::UserId;
use ziraai_proto::analysis::{AnalysisError, AnalysisId, AnalysisOutcome};

use crate::Publisher;

/// Sample outcome number `n`: mostly completed, every fifth one failed.
pub fn sample(user: &UserId, run: &str, n: u64) -> AnalysisOutcome {
    let id = AnalysisId::Text(format!("demo-{run}-{n}"));
    if n.is_multiple_of(5) {
        AnalysisOutcome::failed(
            id,
            user.clone(),
            AnalysisError {
                code: "image_unreadable".into(),
                message: "the photo is too blurry to analyse (demo)".into(),
            },
        )
    } else {
        AnalysisOutcome::completed(
            id,
            user.clone(),
            json!({
                "plant": "tomato",
                "disease": if n.is_multiple_of(2) { "early blight" } else { "healthy" },
                "confidence": 0.9,
                "demo": true
            }),
        )
    }
}

/// Publishes one sample every `interval` until `stop` is cancelled.
pub async fn run(publisher: Publisher, user: UserId, interval: Duration, stop: CancellationToken) {
    let run_id = nuid::next().to_string();
    let mut ticker = tokio::time::interval(interval);
    for n in 1u64.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let outcome = sample(&user, &run_id, n);
        match publisher.publish_outcome(&outcome).await {
            Ok(p) => {
                tracing::info!(user = %user, kind = outcome.kind(), seq = p.seq, "demo event published")
            }
            Err(e) => tracing::warn!(user = %user, error = %e, "demo publish failed"),
        }
    }
}
