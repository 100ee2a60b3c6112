//! A service running on a tokio runtime of its own, so a test can stop it gracefully or
//! kill it like a crash (every task dropped, every socket cut, nothing flushed).

use std::future::Future;

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::sync::oneshot;
use ziraai_common::{GatewayServiceConfig, WorkerServiceConfig};

use crate::within;

/// A service the tests run: built from a configuration, observed through its bound
/// address and a probe, run until a stop future resolves.
pub(crate) trait Service: Sized + Send + 'static {
    /// The service's own configuration type.
    type Config: Send + 'static;
    type Probe: Send + 'static;
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send;
    fn observe(&self) -> std::io::Result<(SocketAddr, Self::Probe)>;
    fn run(self, stop: oneshot::Receiver<()>) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Service for ziraai_gateway::App {
    type Config = GatewayServiceConfig;
    type Probe = ziraai_gateway::Probe;
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
        Self::build(config)
    }
    fn observe(&self) -> std::io::Result<(SocketAddr, Self::Probe)> {
        Ok((self.local_addr()?, self.probe()))
    }
    fn run(self, stop: oneshot::Receiver<()>) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.run_until_stopped(async {
            let _ = stop.await;
        })
    }
}

impl Service for ziraai_worker::WorkerApp {
    type Config = WorkerServiceConfig;
    type Probe = ziraai_worker::WorkerProbe;
    fn build(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>> + Send {
        Self::build(config)
    }
    fn observe(&self) -> std::io::Result<(SocketAddr, Self::Probe)> {
        Ok((self.local_addr()?, self.probe()))
    }
    fn run(self, stop: oneshot::Receiver<()>) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.run_until_stopped(async {
            let _ = stop.await;
        })
    }
}

/// The runtime and the handles to stop and await the service on it.
pub(crate) struct Isolated {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<anyhow::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Isolated {
    /// Builds and runs service `S` with `config` on its own runtime; returns its address
    /// and probe.
    pub(crate) async fn start<S: Service>(
        name: &str,
        config: S::Config,
    ) -> (Self, (SocketAddr, S::Probe)) {
        Self::spawn(name, |ready, stop| async move {
            let service = match S::build(config).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return Ok(());
                }
            };
            let _ = ready.send(service.observe().map_err(anyhow::Error::from));
            service.run(stop).await
        })
        .await
    }

    /// Runs `body(ready, stop)` on a new one-thread runtime. `body` builds the service,
    /// sends what the test observes through `ready`, then serves until `stop` resolves.
    pub(crate) async fn spawn<P, F, Fut>(name: &str, body: F) -> (Self, P)
    where
        P: Send + 'static,
        F: FnOnce(oneshot::Sender<anyhow::Result<P>>, oneshot::Receiver<()>) -> Fut
            + Send
            + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("service runtime");
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        runtime.spawn(async move {
            let _ = done_tx.send(body(ready_tx, stop_rx).await);
        });
        let observed = within("service build", ready_rx)
            .await
            .expect("service task alive")
            .unwrap_or_else(|e| panic!("{name} does not build: {e:#}"));
        let me = Self {
            stop: Some(stop_tx),
            done: Some(done_rx),
            runtime: Some(runtime),
        };
        (me, observed)
    }

    /// Asks for a graceful stop and waits for it.
    pub(crate) async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let done = self.done.take().context("already stopped")?;
        within("service stop", done)
            .await
            .context("service task died")?
    }

    /// Drops every task at once.
    pub(crate) fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.kill();
    }
}
