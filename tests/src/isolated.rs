//! A service running on a tokio runtime of its own, so a test can stop it gracefully or
//! kill it like a crash (every task dropped, every socket cut, nothing flushed).

use std::future::Future;

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::within;

/// The runtime and the handles to stop and await the service on it.
pub(crate) struct Isolated {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<anyhow::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Isolated {
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
