//! A batch span processor whose queue is bounded and whose drops are counted: ended
//! spans go into a channel with `try_send` (a full queue drops the span and bumps
//! [`dropped_spans`]: delivery never waits for the collector); one dedicated thread with
//! its own small Tokio runtime builds the OTLP exporter and sends batches. A stalled or
//! unreachable collector only fills the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped since the process started because the export queue was full (the
/// collector is slow, stalled or unreachable) or the exporter could not be built.
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Spans handed to the collector successfully since the process started.
pub fn exported_spans() -> u64 {
    EXPORTED.load(Ordering::Relaxed)
}

enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// Bounded batch processor (see the module header).
#[derive(Debug)]
pub(crate) struct BoundedBatch {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
}

/// Queue and batch limits.
pub(crate) struct Limits {
    pub(crate) queue: usize,
    pub(crate) batch: usize,
    pub(crate) delay: Duration,
    pub(crate) export_timeout: Duration,
}

impl BoundedBatch {
    /// Starts the export thread; `build` runs on it inside its runtime (tonic and hyper
    /// clients need one).
    pub(crate) fn start<E, B>(limits: Limits, build: B) -> std::io::Result<Self>
    where
        E: SpanExporter + 'static,
        B: FnOnce() -> Result<E, String> + Send + 'static,
    {
        let (spans, rx) = mpsc::channel(limits.queue);
        let (control, control_rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match build() {
                        Ok(exporter) => export_loop(exporter, rx, control_rx, limits).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot build the OTLP exporter; spans are dropped");
                            drain_dropping(rx, control_rx).await;
                        }
                    }
                })
            })?;
        Ok(Self { spans, control })
    }

    fn ask(&self, make: fn(oneshot::Sender<()>) -> Control, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = oneshot::channel();
        if self.control.send(make(tx)).is_err() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        // Called from `main`'s shutdown (off the async workers) or a test: wait with a
        // deadline on a plain thread.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(rx.blocking_recv().is_ok());
        });
        match done_rx.recv_timeout(timeout) {
            Ok(true) => Ok(()),
            Ok(false) => Err(OTelSdkError::AlreadyShutdown),
            Err(_) => Err(OTelSdkError::Timeout(timeout)),
        }
    }
}

impl SpanProcessor for BoundedBatch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout)
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
    limits: Limits,
) {
    let mut batch = Vec::with_capacity(limits.batch);
    let mut tick = tokio::time::interval(limits.delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= limits.batch {
                        send(&exporter, &mut batch, limits.export_timeout).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => send(&exporter, &mut batch, limits.export_timeout).await,
            c = control.recv() => match c {
                Some(Control::Flush(done)) => {
                    while let Ok(span) = rx.try_recv() {
                        batch.push(span);
                        if batch.len() >= limits.batch {
                            send(&exporter, &mut batch, limits.export_timeout).await;
                        }
                    }
                    send(&exporter, &mut batch, limits.export_timeout).await;
                    let _ = done.send(());
                }
                Some(Control::Shutdown(done)) => {
                    rx.close();
                    while let Some(span) = rx.recv().await {
                        batch.push(span);
                    }
                    for chunk in std::mem::take(&mut batch).chunks(limits.batch.max(1)) {
                        let mut chunk = chunk.to_vec();
                        send(&exporter, &mut chunk, limits.export_timeout).await;
                    }
                    let _ = exporter.shutdown();
                    let _ = done.send(());
                    return;
                }
                None => break,
            },
        }
    }
    let _ = exporter.shutdown();
}

async fn send<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>, timeout: Duration) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len() as u64;
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => {
            EXPORTED.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            DROPPED.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(target: "otel_export", error = %e, spans = n, "span export failed");
        }
        Err(_) => {
            DROPPED.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(target: "otel_export", spans = n, "span export timed out");
        }
    }
}

async fn drain_dropping(
    mut rx: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(_) => { DROPPED.fetch_add(1, Ordering::Relaxed); }
                None => return,
            },
            c = control.recv() => match c {
                Some(Control::Flush(done)) => { let _ = done.send(()); }
                Some(Control::Shutdown(done)) => { let _ = done.send(()); return; }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[derive(Debug, Clone, Default)]
    struct Memory(Arc<Mutex<Vec<String>>>);

    impl SpanExporter for Memory {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let mut got = self.0.lock().unwrap_or_else(|p| p.into_inner());
            got.extend(batch.into_iter().map(|s| s.name.into_owned()));
            Ok(())
        }
    }

    /// A collector that never answers.
    #[derive(Debug)]
    struct Stuck;

    impl SpanExporter for Stuck {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            std::future::pending().await
        }
    }

    fn limits(queue: usize, batch: usize) -> Limits {
        Limits {
            queue,
            batch,
            delay: Duration::from_secs(60),
            export_timeout: Duration::from_secs(60),
        }
    }

    fn provider(p: BoundedBatch) -> SdkTracerProvider {
        SdkTracerProvider::builder().with_span_processor(p).build()
    }

    // One test touches the process-wide counters (they are global by design: `/health`
    // reads them), so the two cases run in sequence.
    #[test]
    fn exports_on_flush_and_drops_beyond_the_bound_without_blocking() {
        let memory = Memory::default();
        let exporter = memory.clone();
        let p = provider(BoundedBatch::start(limits(16, 4), move || Ok(exporter)).expect("thread"));
        let tracer = p.tracer("t");
        for i in 0..10 {
            tracer.start(format!("s{i}")).end();
        }
        p.force_flush().expect("flushed");
        assert_eq!(memory.0.lock().expect("lock").len(), 10);
        assert_eq!(dropped_spans(), 0);
        assert_eq!(exported_spans(), 10);
        p.shutdown().expect("shut down");

        // Stuck exporter, queue 4, batch 2: the first batch hangs in export, 4 wait,
        // the rest are dropped at once (this loop would hang if `on_end` waited).
        let p = provider(BoundedBatch::start(limits(4, 2), || Ok(Stuck)).expect("thread"));
        let tracer = p.tracer("t");
        let started = std::time::Instant::now();
        for i in 0..100 {
            tracer.start(format!("s{i}")).end();
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let dropped = dropped_spans();
        assert!((94..=96).contains(&dropped), "dropped {dropped}");
        let shut = std::time::Instant::now();
        let _ = p.shutdown_with_timeout(Duration::from_millis(200));
        assert!(
            shut.elapsed() < Duration::from_secs(1),
            "shutdown is bounded"
        );
    }
}
