//! The worker's spans, exported in-process to an in-memory exporter: a job is a `job`
//! span with `analyzer.call` and `notify.publish` children, the published event carries
//! the job's trace in `traceparent`, a job message's own `traceparent` is continued,
//! and failures (rejected, retried, poison) show in `job.outcome` and the span status.
//!
//! The subscriber is this test's thread default (tests share one process), so the
//! worker runs on the test's current-thread runtime: every task it spawns is polled on
//! this thread and sees the subscriber.

use std::future::IntoFuture as _;
use std::sync::atomic::Ordering;

use async_nats::HeaderMap;
use opentelemetry::global;
use opentelemetry::trace::{SpanId, Status, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing_subscriber::layer::SubscriberExt as _;
use ziraai_e2e::*;
use ziraai_proto::UserId;
use ziraai_worker::{WorkerApp, WorkerProbe};

/// Spans recorded while it lives (on this thread).
struct Recorder {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Recorder {
    fn install() -> Self {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("worker-spans"));
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        Self {
            exporter,
            _provider: provider,
            _guard: guard,
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().expect("finished spans")
    }

    /// The ended `job` spans of job `id`, in the order they ended.
    fn jobs(&self, id: &str) -> Vec<SpanData> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == "job" && attr(s, "job.id").as_deref() == Some(id))
            .collect()
    }

    /// Waits until job `id` has `n` ended `job` spans; returns them.
    async fn wait_jobs(&self, id: &str, n: usize) -> Vec<SpanData> {
        wait_until("job spans ended", || self.jobs(id).len() >= n).await;
        self.jobs(id)
    }

    /// The one span named `name` whose parent is `parent`.
    fn child(&self, parent: &SpanData, name: &str) -> SpanData {
        let found: Vec<_> = self
            .spans()
            .into_iter()
            .filter(|s| s.name == name && s.parent_span_id == parent.span_context.span_id())
            .collect();
        assert_eq!(found.len(), 1, "one {name} under the job: {found:#?}");
        let child = found.into_iter().next().expect("one");
        assert_eq!(
            child.span_context.trace_id(),
            parent.span_context.trace_id()
        );
        child
    }
}

/// Attribute `key` of `span`, as text.
fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn attrs(span: &SpanData, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(
            attr(span, key).as_deref(),
            Some(*value),
            "{key} of {}: {:?}",
            span.name,
            span.attributes
        );
    }
}

/// The worker on this thread's runtime; stops when dropped.
struct Worker {
    probe: WorkerProbe,
    _stop: oneshot::Sender<()>,
}

async fn worker(nats: &NatsServer, analyzer: &TestAnalyzer) -> Worker {
    let app = within(
        "worker build",
        WorkerApp::build(worker_config(nats, analyzer, &[])),
    )
    .await
    .expect("worker builds");
    let probe = app.probe();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Worker { probe, _stop: stop }
}

fn job(id: &str, analysis: &str, user: &UserId) -> Value {
    json!({"jobId": id, "analysisId": analysis, "userId": user, "imageUrl": "http://127.0.0.1/p.jpg"})
}

/// Stores `job` in JOBS with exactly `headers` (the platform's own producer).
async fn submit_with(js: &async_nats::jetstream::Context, job: &Value, mut headers: HeaderMap) {
    headers.insert("Nats-Msg-Id", job["jobId"].as_str().unwrap_or_default());
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(job.to_string().into())
        .headers(headers);
    let ack = within(
        "submit",
        js.send_publish(ziraai_common::nats::JOBS_SUBJECT, msg),
    )
    .await
    .expect("sent");
    within("stored", ack.into_future()).await.expect("stored");
}

/// The stored event of `user`: its sequence and `traceparent`.
async fn event_of(nats: &NatsServer, user: &UserId) -> (u64, Option<String>) {
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = within("NOTIFY", js.get_stream_no_info("NOTIFY"))
        .await
        .expect("stream");
    let m = within(
        "event",
        stream.direct_get_last_for_subject(user.notify_subject()),
    )
    .await
    .expect("one event");
    let parent = m.headers.get("traceparent").map(|v| v.as_str().to_owned());
    (m.sequence, parent)
}

#[tokio::test]
async fn a_job_is_one_trace_of_job_analyzer_call_and_publish() {
    let rec = Recorder::install();
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let _worker = worker(&nats, &analyzer).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("spans");
    let id = format!("j-{}", nuid::next());
    submit_with(&js, &job(&id, "a-1", &u), HeaderMap::new()).await;

    let jobs = rec.wait_jobs(&id, 1).await;
    let job = &jobs[0];
    assert_eq!(
        job.parent_span_id,
        SpanId::INVALID,
        "a job without traceparent starts a trace"
    );
    attrs(
        job,
        &[
            ("job.id", id.as_str()),
            ("analysis.id", "a-1"),
            ("user.id", u.as_str()),
            ("job.attempt", "1"),
            ("job.outcome", "completed"),
        ],
    );
    assert_eq!(job.status, Status::Unset);

    let call = rec.child(job, "analyzer.call");
    let port = analyzer
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next());
    attrs(
        &call,
        &[
            ("http.request.method", "POST"),
            ("url.full", analyzer.url.as_str()),
            ("server.address", "127.0.0.1"),
            ("server.port", port.expect("port in the url")),
            ("http.response.status_code", "200"),
        ],
    );
    assert_eq!(call.status, Status::Unset);

    let (seq, traceparent) = event_of(&nats, &u).await;
    let publish = rec.child(job, "notify.publish");
    let subject = u.notify_subject();
    let seq_text = seq.to_string();
    attrs(
        &publish,
        &[
            ("messaging.system", "nats"),
            ("messaging.destination.name", subject.as_str()),
            ("messaging.operation.type", "publish"),
            ("messaging.message.id", &format!("job-{id}")),
            ("messaging.nats.stream.sequence", seq_text.as_str()),
            ("messaging.nats.duplicate", "false"),
        ],
    );
    // The event carries the publish span's context: the gateway's spans join the trace.
    let expected = format!(
        "00-{}-{}-01",
        job.span_context.trace_id(),
        publish.span_context.span_id()
    );
    assert_eq!(traceparent.as_deref(), Some(expected.as_str()));
    // No secret or token among the attributes of any span of this trace.
    for span in rec.spans() {
        for kv in &span.attributes {
            let v = kv.value.as_str();
            assert!(!v.contains("Bearer") && !v.contains('@'), "{kv:?}");
        }
    }
}

#[tokio::test]
async fn a_job_carrying_traceparent_continues_that_trace() {
    let rec = Recorder::install();
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let _worker = worker(&nats, &analyzer).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("spans");
    let id = format!("j-{}", nuid::next());
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", format!("00-{trace}-{parent}-01").as_str());
    submit_with(&js, &job(&id, "a-2", &u), headers).await;

    let jobs = rec.wait_jobs(&id, 1).await;
    let job = &jobs[0];
    assert_eq!(
        job.span_context.trace_id(),
        TraceId::from_hex(trace).expect("hex")
    );
    assert_eq!(job.parent_span_id, SpanId::from_hex(parent).expect("hex"));
    assert!(job.parent_span_is_remote);
    rec.child(job, "analyzer.call");
    let publish = rec.child(job, "notify.publish");
    let (_, traceparent) = event_of(&nats, &u).await;
    let expected = format!("00-{trace}-{}-01", publish.span_context.span_id());
    assert_eq!(traceparent.as_deref(), Some(expected.as_str()));
}

#[tokio::test]
async fn submit_job_starts_the_trace_the_worker_continues() {
    let rec = Recorder::install();
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let _worker = worker(&nats, &analyzer).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("spans");
    let id = format!("j-{}", nuid::next());
    // What `ziraai-worker submit` and the demo producer call.
    submit_job(&js, job(&id, "a-3", &u)).await;
    let jobs = rec.wait_jobs(&id, 1).await;
    let submit: Vec<_> = rec
        .spans()
        .into_iter()
        .filter(|s| {
            s.name == "job.submit"
                && attr(s, "messaging.message.id").as_deref() == Some(id.as_str())
        })
        .collect();
    assert_eq!(submit.len(), 1, "{submit:#?}");
    assert_eq!(jobs[0].parent_span_id, submit[0].span_context.span_id());
    assert_eq!(
        jobs[0].span_context.trace_id(),
        submit[0].span_context.trace_id()
    );
}

#[tokio::test]
async fn rejected_and_retried_jobs_show_outcome_and_error_status() {
    let rec = Recorder::install();
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker = worker(&nats, &analyzer).await;
    let js = async_nats::jetstream::new(nats.client().await);

    // The analyzer refuses `bad-` analyses (400): the job fails, once.
    let u = user("spans");
    let bad = format!("j-{}", nuid::next());
    submit_with(&js, &job(&bad, "bad-1", &u), HeaderMap::new()).await;
    let jobs = rec.wait_jobs(&bad, 1).await;
    attrs(&jobs[0], &[("job.outcome", "failed")]);
    assert!(
        matches!(&jobs[0].status, Status::Error { description } if description == "analysis_rejected"),
        "{:?}",
        jobs[0].status
    );
    let call = rec.child(&jobs[0], "analyzer.call");
    attrs(
        &call,
        &[("http.response.status_code", "400"), ("error.type", "400")],
    );
    assert!(
        matches!(call.status, Status::Error { .. }),
        "{:?}",
        call.status
    );
    // The failure is still published, in the job's trace.
    rec.child(&jobs[0], "notify.publish");

    // Down (503): the first attempt is retried, the second completes.
    analyzer.behaviour.down.store(true, Ordering::SeqCst);
    let flaky = format!("j-{}", nuid::next());
    submit_with(&js, &job(&flaky, "a-4", &user("spans")), HeaderMap::new()).await;
    let first = rec.wait_jobs(&flaky, 1).await;
    analyzer.behaviour.down.store(false, Ordering::SeqCst);
    attrs(
        &first[0],
        &[("job.outcome", "retried"), ("job.attempt", "1")],
    );
    assert!(
        matches!(first[0].status, Status::Error { .. }),
        "{:?}",
        first[0].status
    );
    let call = rec.child(&first[0], "analyzer.call");
    attrs(
        &call,
        &[("http.response.status_code", "503"), ("error.type", "503")],
    );
    assert!(
        rec.spans().iter().all(|s| !(s.name == "notify.publish"
            && s.parent_span_id == first[0].span_context.span_id())),
        "nothing published on a retried attempt"
    );
    let both = rec.wait_jobs(&flaky, 2).await;
    let last = both.last().expect("two");
    attrs(last, &[("job.outcome", "completed"), ("job.attempt", "2")]);
    assert_ne!(
        last.span_context.trace_id(),
        first[0].span_context.trace_id(),
        "each delivery its own trace"
    );
    assert_eq!(worker.probe.counters.retried.load(Ordering::Relaxed), 1);

    // Poison (not JSON): terminated, and the span says so.
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload("not json".into())
        .message_id(nuid::next().to_string());
    let ack = within(
        "submit",
        js.send_publish(ziraai_common::nats::JOBS_SUBJECT, msg),
    )
    .await
    .expect("sent");
    within("stored", ack.into_future()).await.expect("stored");
    let poison =
        |s: &SpanData| s.name == "job" && attr(s, "job.outcome").as_deref() == Some("poison");
    wait_until("poison job span", || rec.spans().iter().any(poison)).await;
    let spans = rec.spans();
    let span = spans.iter().find(|s| poison(s)).expect("found");
    assert!(
        matches!(&span.status, Status::Error { description } if description.contains("not a JSON object")),
        "{:?}",
        span.status
    );
    assert_eq!(attr(span, "job.id"), None, "a poison job has no id to show");
}
