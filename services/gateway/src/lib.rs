//! ZiraAI Realtime gateway: stateless WebSocket edge of the notification pipeline.
//!
//! [`App::build`] connects to NATS, applies the stream definitions and binds the
//! listener; [`App::run_until_stopped`] serves until the shutdown future resolves,
//! then closes every socket with 1012 and waits for them within the grace period.
//! `main.rs` and the end-to-end tests drive this same code.

mod api;
pub mod auth;
mod backend;
pub mod cli;
mod client_ip;
mod conn_limit;
pub mod cursors;
mod demo;
mod error;
pub mod event;
mod http;
pub mod hub;
mod live;
pub mod metrics;
mod request_auth;
pub mod resync;
mod serve;
pub mod session;
pub mod signalr;
#[cfg(test)]
mod sizes_tests;
mod socket;
pub mod store;
pub mod trace;
pub mod tracking;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Context as _;
use async_nats::jetstream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ziraai_common::config::{Environment, GatewayConfig, GatewayServiceConfig};
use ziraai_common::nats;

use crate::auth::Authenticator;
use crate::cursors::Cursors;
use crate::event::Stats;
use crate::hub::Hub;
use crate::store::EventStore;
use crate::tracking::Tracking;

/// Longest wait, after the sockets, for queued delivery-tracking records to go out.
const FINAL_TRACKING_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait for the NATS connection to drain at the end of a shutdown.
const FINAL_NATS_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// State shared by every request handler.
pub(crate) struct AppState {
    pub(crate) env: Environment,
    pub(crate) cfg: GatewayConfig,
    pub(crate) auth: Arc<Authenticator>,
    /// Signs SignalR connection tokens.
    pub(crate) auth_secret: secrecy::SecretString,
    pub(crate) hub: Arc<Hub>,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) stats: Arc<Stats>,
    pub(crate) store: EventStore,
    pub(crate) cursors: Cursors,
    /// SignalR stateful-reconnect state.
    pub(crate) resumes: signalr::Resumes,
    pub(crate) tracking: Tracking,
    /// Cancelled when shutdown starts: readiness turns 503, sockets close.
    pub(crate) shutdown: CancellationToken,
    /// Every socket session and user channel task.
    pub(crate) tracker: TaskTracker,
    pub(crate) connections: AtomicUsize,
    /// Places taken in the process cap: open sockets and handshakes about to be.
    pub(crate) slots: AtomicUsize,
    pub(crate) gateway_id: String,
    /// Who may read `/metrics`.
    pub(crate) metrics_allow: Vec<ziraai_common::metrics::IpRange>,
    /// Present in development with the demo page on: the secret to mint demo tokens.
    pub(crate) demo: Option<demo::Demo>,
    /// The cluster-wide per-user connection limit.
    pub(crate) conn_limit: Arc<conn_limit::ConnLimit>,
}

/// A new unique gateway id (`gw-…`): in logs, `/health`, connection ids and the
/// traces' `service.instance.id`.
pub fn new_gateway_id() -> String {
    format!("gw-{}", nuid::next())
}

/// A bound, connected gateway, not yet serving.
pub struct App {
    listener: TcpListener,
    state: Arc<AppState>,
    tracking_stop: CancellationToken,
    tracking_task: tokio::task::JoinHandle<()>,
    limit_tasks: conn_limit::tasks::Tasks,
}

impl App {
    /// Connects to NATS, applies the stream definitions, binds the listener.
    pub async fn build(config: GatewayServiceConfig) -> anyhow::Result<Self> {
        Self::build_as(config, new_gateway_id()).await
    }

    /// As [`App::build`] with the gateway id chosen by the caller (`main` gives the
    /// same id to telemetry as `service.instance.id`).
    pub async fn build_as(
        config: GatewayServiceConfig,
        gateway_id: String,
    ) -> anyhow::Result<Self> {
        // First: a bad public key file is a configuration error (exit 2), found fast.
        let auth = Arc::new(Authenticator::from_config(&config.auth)?);
        let (client, resync) =
            nats::connect_observed(&config.nats, &format!("ziraai-gateway {gateway_id}")).await?;
        let js = jetstream::new(client.clone());
        nats::apply_notify_streams(&js, config.nats.replicas).await?;
        let store = EventStore::new(&js).await?;
        let resync = store::after_learning_the_end(store.clone(), resync);
        let cursors = Cursors::new(&js).await?;
        let resumes = signalr::Resumes::new(&js)
            .await
            .map_err(anyhow::Error::msg)?;
        let tracker = TaskTracker::new();
        let conn_limit = conn_limit::ConnLimit::new(
            &js,
            client.clone(),
            &gateway_id,
            &config.gateway,
            tracker.clone(),
        )
        .await?;
        let limit_tasks = conn_limit.start().await?;
        let listener = serve::bind(config.gateway.listen)
            .with_context(|| format!("cannot listen on {}", config.gateway.listen))?;
        let stats = Arc::new(Stats::default());
        let tracking_stop = CancellationToken::new();
        let (tracking, tracking_task) = if config.gateway.delivery_tracking {
            tracking::spawn(
                client.clone(),
                gateway_id.as_str().into(),
                stats.clone(),
                tracking_stop.clone(),
            )
        } else {
            (Tracking::disabled(stats.clone()), tokio::spawn(async {}))
        };
        let demo = (config.env == Environment::Development && config.gateway.demo_page)
            .then(|| demo::Demo::new(&config));
        let state = Arc::new(AppState {
            env: config.env,
            auth,
            auth_secret: config.auth.jwt_secret.clone(),
            metrics_allow: config.metrics_allow.clone(),
            hub: Hub::new(
                client.clone(),
                (
                    store.clone(),
                    resync,
                    resync::ResyncPacer::new(
                        config.gateway.resync_concurrency,
                        config.gateway.resync_jitter,
                    ),
                ),
                &gateway_id,
                tracker.clone(),
                stats.clone(),
                config.env == Environment::Development,
            ),
            cfg: config.gateway,
            client,
            js,
            stats,
            store,
            cursors,
            resumes,
            tracking,
            shutdown: CancellationToken::new(),
            tracker,
            connections: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            gateway_id,
            demo,
            conn_limit,
        });
        metrics::register_otlp(&state);
        Ok(Self {
            listener,
            state,
            tracking_stop,
            tracking_task,
            limit_tasks,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// This gateway's id (in logs, `/health` and connection ids).
    pub fn gateway_id(&self) -> &str {
        &self.state.gateway_id
    }

    /// Handle that re-reads the public key file (`main` calls it on SIGHUP).
    pub fn key_reloader(&self) -> KeyReloader {
        KeyReloader {
            state: self.state.clone(),
        }
    }

    /// Handle to observe the running gateway from tests.
    pub fn probe(&self) -> Probe {
        Probe {
            state: self.state.clone(),
        }
    }

    /// Serves until `shutdown` resolves, then drains: refuse new upgrades, close every
    /// socket with 1012, wait for them up to the grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let router = http::router(state.clone());
        let stop = state.shutdown.clone();
        let limit = state.conn_limit.clone();
        let on_signal = async move {
            shutdown.await;
            tracing::info!("draining: refusing new sockets, closing open ones with 1012");
            limit.drain();
            stop.cancel();
        };
        let opts = serve::ServeOptions {
            header_timeout: state.cfg.header_timeout,
            trusted_proxies: Arc::new(state.cfg.trusted_proxies.clone()),
            grace: state.cfg.shutdown_grace,
        };
        // The loop stops when the signal has cancelled `shutdown`, so both end.
        tokio::join!(
            on_signal,
            serve::serve(self.listener, router, opts, state.shutdown.clone())
        );
        state.tracker.close();
        let grace = state.cfg.shutdown_grace;
        if tokio::time::timeout(grace, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                remaining = state.tracker.len(),
                "sockets still open after the grace period; exiting anyway"
            );
        }
        // Sessions have flushed their cursors and queued their last tracking records.
        self.tracking_stop.cancel();
        if tokio::time::timeout(FINAL_TRACKING_FLUSH, self.tracking_task)
            .await
            .is_err()
        {
            tracing::warn!("delivery-tracking records still queued at exit; dropped");
        }
        // Bounded like the drain: removing this gateway's connection entries needs the
        // broker (their heartbeat expires anyway when it cannot).
        if tokio::time::timeout(FINAL_NATS_DRAIN, self.limit_tasks.stop(&state.conn_limit))
            .await
            .is_err()
        {
            tracing::warn!(
                "connection-limit entries not removed at exit; they expire with the heartbeat"
            );
        }
        // Bounded: with the broker unreachable, a drain would wait for a reconnect
        // that may never come, and the process must still exit.
        match tokio::time::timeout(FINAL_NATS_DRAIN, state.client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "NATS drain failed"),
            Err(_) => tracing::warn!(
                limit = ?FINAL_NATS_DRAIN,
                "NATS unreachable at shutdown; exiting without draining the connection"
            ),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Re-reads `ZIRAAI_JWT_PUBLIC_KEYS_FILE` so keys rotate without a restart.
#[derive(Clone)]
pub struct KeyReloader {
    state: Arc<AppState>,
}

impl KeyReloader {
    /// Swaps in the file's keys; a bad file keeps the current ones (logged as an error).
    pub fn reload(&self) {
        match self.state.auth.reload_keys() {
            Ok(0) => tracing::info!("reload asked; no ZIRAAI_JWT_PUBLIC_KEYS_FILE is configured"),
            Ok(keys) => tracing::info!(keys, "public keys reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "public keys not reloaded; the previous keys stay in use")
            }
        }
    }
}

/// Read-only view of a running gateway, for tests and diagnostics.
#[derive(Clone)]
pub struct Probe {
    state: Arc<AppState>,
}

impl Probe {
    /// Users with a live subscription on this gateway.
    pub fn users(&self) -> usize {
        self.state.hub.users()
    }

    /// Whether this gateway holds a subscription for `user`.
    pub fn has_user(&self, user: &str) -> bool {
        ziraai_proto::UserId::parse(user).is_ok_and(|u| self.state.hub.has_user(&u))
    }

    /// Open sockets.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
