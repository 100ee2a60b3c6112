//! The worker service (`ziraai-worker run`): health endpoints on
//! `ZIRAAI_WORKER_LISTEN` and the job runner, with a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use ziraai_common::WorkerServiceConfig;
use ziraai_common::health::{self, Readiness};
use ziraai_common::nats;

use crate::Publisher;
use crate::analyzer::Analyzer;
use crate::breaker::{Breaker, State as BreakerState};
use crate::runner::{Counters, Runner};

/// Longest wait, after the grace, for in-flight jobs to hand themselves back.
const HAND_BACK_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest wait for the final flush of the NATS connection at shutdown.
const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// A bound, connected worker, not yet running.
pub struct WorkerApp {
    listener: TcpListener,
    metrics_allow: Arc<Vec<ziraai_common::metrics::IpRange>>,
    runner: Arc<Runner>,
    consumer: consumer::Consumer<consumer::pull::Config>,
    client: async_nats::Client,
}

/// Read-only view of a running worker.
#[derive(Clone)]
pub struct WorkerProbe {
    pub counters: Arc<Counters>,
    pub breaker: Arc<Breaker>,
}

#[derive(Clone)]
struct HealthState {
    metrics_allow: Arc<Vec<ziraai_common::metrics::IpRange>>,
    client: async_nats::Client,
    consumer: consumer::Consumer<consumer::pull::Config>,
    probe: WorkerProbe,
    stopping: CancellationToken,
    queue: Arc<crate::metrics::QueueDepth>,
}

impl WorkerApp {
    /// Connects to NATS, applies the streams and the consumer, binds the health port.
    pub async fn build(config: WorkerServiceConfig) -> anyhow::Result<Self> {
        let client = nats::connect(&config.nats, "ziraai-worker").await?;
        let js = jetstream::new(client.clone());
        let replicas = config.nats.replicas;
        nats::apply_producer_streams(&js, replicas).await?;
        let consumer = nats::apply_job_streams(&js, config.worker.ack_wait, replicas).await?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        let listener = TcpListener::bind(config.worker.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.worker.listen))?;
        let metrics_allow = Arc::new(config.metrics_allow.clone());
        let cfg = config.worker;
        let runner = Arc::new(Runner {
            publisher: Publisher::new(js.clone()),
            analyzer: Analyzer::new(&cfg.analyzer_url, cfg.analyzer_timeout)
                .context("ZIRAAI_ANALYZER_URL")?,
            breaker: Arc::new(Breaker::new(cfg.breaker_threshold, cfg.breaker_cooldown)),
            counters: Arc::new(Counters::default()),
            progress_every: (ack_wait / 3).max(std::time::Duration::from_millis(100)),
            js,
            cfg,
        });
        Ok(Self {
            listener,
            metrics_allow,
            runner,
            consumer,
            client,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn probe(&self) -> WorkerProbe {
        WorkerProbe {
            counters: self.runner.counters.clone(),
            breaker: self.runner.breaker.clone(),
        }
    }

    /// Runs until `shutdown`; then stops pulling, lets in-flight jobs finish within the
    /// grace period, hands back (nak) the rest, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let hand_back = CancellationToken::new();
        let health = HealthState {
            metrics_allow: self.metrics_allow.clone(),
            client: self.client.clone(),
            consumer: self.consumer.clone(),
            probe: self.probe(),
            stopping: stop.clone(),
            queue: Arc::new(crate::metrics::QueueDepth::new(self.consumer.clone())),
        };
        let probe = self.probe();
        let h = health.clone();
        crate::metrics::otlp::register(probe.counters, probe.breaker, move || {
            readiness(&h).is_ready()
        });
        let router = Router::new()
            .route("/health/live", get(|| async { health::live() }))
            .route("/health/ready", get(ready))
            .route("/health", get(details))
            .route("/metrics", get(metrics))
            .with_state(health);
        let http_stop = stop.clone();
        let http = tokio::spawn(
            axum::serve(
                self.listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .into_future(),
        );
        let signal = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stopping: no more pulls; finishing in-flight jobs");
            signal.cancel();
        });
        let grace = self.runner.cfg.shutdown_grace;
        let tracker = self
            .runner
            .clone()
            .run(
                self.consumer,
                self.client.clone(),
                stop.clone(),
                hand_back.clone(),
            )
            .await;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                remaining = tracker.len(),
                "grace period over: handing back in-flight jobs"
            );
            hand_back.cancel();
            // Bounded too: a job stuck publishing to an unreachable broker is simply
            // not acknowledged, so the server redelivers it and the event's id
            // de-duplicates a publish that did land.
            if tokio::time::timeout(HAND_BACK_LIMIT, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    remaining = tracker.len(),
                    "jobs still publishing after the grace; leaving them to redelivery"
                );
            }
        }
        let _ = http.await;
        // Bounded: with the broker unreachable a flush waits for a reconnect that may
        // never come; what it would flush (acks, naks) is redelivered anyway.
        match tokio::time::timeout(FINAL_FLUSH, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "final flush failed"),
            Err(_) => tracing::warn!(
                limit = ?FINAL_FLUSH,
                "NATS unreachable at shutdown; exiting without a final flush"
            ),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn readiness(h: &HealthState) -> Readiness {
    let mut missing = Vec::new();
    if h.stopping.is_cancelled() {
        missing.push("stopping");
    }
    if h.client.connection_state() != async_nats::connection::State::Connected {
        missing.push("nats");
    }
    if h.probe.breaker.state() != BreakerState::Closed {
        missing.push("analyzer (circuit breaker open)");
    }
    Readiness::missing(missing)
}

async fn ready(State(h): State<HealthState>) -> Response {
    readiness(&h).into_response()
}

/// `GET /health`: readiness with the worker's counters, for allow-listed addresses
/// only (`ZIRAAI_METRICS_ALLOW`, like `/metrics`).
async fn details(
    State(h): State<HealthState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(refused) = health::details_allowed(&h.metrics_allow, peer.ip()) {
        return refused.into_response();
    }
    let readiness = readiness(&h);
    let pending = match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        h.consumer.get_info(),
    )
    .await
    {
        Ok(Ok(info)) => {
            json!({"waiting": info.num_pending, "unacknowledged": info.num_ack_pending, "redelivered": info.num_redelivered})
        }
        _ => serde_json::Value::Null,
    };
    let c = &h.probe.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "breaker": {"state": h.probe.breaker.state().as_str(), "timesOpened": h.probe.breaker.times_opened()},
        "jobs": pending,
        "inFlight": c.in_flight.load(Ordering::Relaxed),
        "completed": get(&c.completed),
        "failed": get(&c.failed),
        "retried": get(&c.retried),
        "poison": get(&c.poison),
        "handedBack": get(&c.handed_back),
        "published": get(&c.published),
        "duplicates": get(&c.duplicates),
        "traces": {
            "exported": ziraai_common::telemetry::exported_spans(),
            "dropped": ziraai_common::telemetry::dropped_spans(),
        },
    });
    readiness.with_details(body)
}

/// `GET /metrics`: Prometheus text (`prometheus-client`), for addresses in
/// `ZIRAAI_METRICS_ALLOW` only.
async fn metrics(
    State(h): State<HealthState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
) -> Response {
    if let Err(refused) = health::metrics_allowed(&h.metrics_allow, peer.ip()) {
        return refused.into_response();
    }
    let queue = h.queue.get().await;
    let text = crate::metrics::render(crate::metrics::Scrape {
        counters: &h.probe.counters,
        breaker_open: h.probe.breaker.state() != BreakerState::Closed,
        breaker_opened: h.probe.breaker.times_opened(),
        ready: readiness(&h).is_ready(),
        queue,
    });
    health::metrics_text(text)
}
