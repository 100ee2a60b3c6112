//! `ziraai-worker dev-analyzer`: a stand-in analyzer for `make run` (development only).
//! Answers `POST /analyze` after a short delay with a sample result clearly marked as
//! not a real analysis.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

/// How long the stand-in "analyses".
const DELAY: Duration = Duration::from_millis(700);

async fn analyze(Json(job): Json<Value>) -> Json<Value> {
    tokio::time::sleep(DELAY).await;
    let n = job["jobId"]
        .as_str()
        .map_or(0, |s| s.bytes().map(u32::from).sum::<u32>());
    Json(json!({
        "developmentOnly": true,
        "note": "sample result from ziraai-worker dev-analyzer, not a real analysis",
        "plant": "tomato",
        "disease": if n % 2 == 0 { "early blight" } else { "healthy" },
        "confidence": 0.9,
        "imageUrl": job["imageUrl"],
    }))
}

/// Serves until `stop` resolves.
pub async fn serve(
    addr: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "development analyzer listening (sample results only)");
    let app = Router::new().route("/analyze", post(analyze));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}
