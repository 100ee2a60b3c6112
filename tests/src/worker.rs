//! Worker tests' parts: a real HTTP analyzer on a random loopback port whose behaviour
//! the test controls, the worker in-process on its own runtime (so it can be killed),
//! and readers of what ended up in the streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use ziraai_common::WorkerServiceConfig;
use ziraai_worker::{WorkerApp, WorkerProbe};

use crate::isolated::Isolated;
use crate::{NatsServer, within};

/// How the test analyzer behaves.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Answer 503 to every `n`-th call (0: never).
    pub fail_every: u64,
    /// Answer 503 to everything while set.
    pub down: AtomicBool,
    /// Time each answer takes, milliseconds.
    pub delay_ms: AtomicU64,
    /// While set, calls wait (counted in `held`) until it is cleared.
    pub hold: AtomicBool,
    /// Calls waiting because of `hold`.
    pub held: AtomicU64,
}

/// Every status the analyzer answered, by `jobId`, in order.
type Answers = Arc<Mutex<HashMap<String, Vec<u16>>>>;

/// A real HTTP analyzer: 400 for jobs whose `analysisId` starts with `bad-`, a 200
/// answer over the worker's limit for `huge-`, a result too large for one event (but
/// under the answer limit) for `big-`, 503 as the behaviour says, else 200 with a
/// result naming the job. It records its answers, so a test knows which outcome each
/// job must end with.
pub struct TestAnalyzer {
    pub url: String,
    pub calls: Arc<AtomicU64>,
    pub behaviour: Arc<Behaviour>,
    answers: Answers,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct Shared {
    calls: Arc<AtomicU64>,
    behaviour: Arc<Behaviour>,
    answers: Answers,
}

async fn analyze(State(s): State<Shared>, Json(job): Json<Value>) -> (StatusCode, Json<Value>) {
    let b = &s.behaviour;
    let n = s.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if b.hold.load(Ordering::SeqCst) {
        b.held.fetch_add(1, Ordering::SeqCst);
        while b.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        b.held.fetch_sub(1, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(b.delay_ms.load(Ordering::SeqCst))).await;
    let analysis = job["analysisId"].as_str().unwrap_or_default();
    let (status, body) =
        if b.down.load(Ordering::SeqCst) || (b.fail_every > 0 && n % b.fail_every == 0) {
            (StatusCode::SERVICE_UNAVAILABLE, json!({"message": "busy"}))
        } else if analysis.starts_with("bad-") {
            (
                StatusCode::BAD_REQUEST,
                json!({"message": "not a plant photo"}),
            )
        } else if analysis.starts_with("huge-") {
            // Over the worker's analyzer answer limit.
            let padding = "x".repeat(ziraai_worker::analyzer::MAX_BODY);
            (
                StatusCode::OK,
                json!({"jobId": job["jobId"], "padding": padding}),
            )
        } else if analysis.starts_with("big-") {
            // Under that limit, but too large for one event.
            let padding = "x".repeat(ziraai_common::nats::NOTIFY_MAX_MESSAGE);
            (
                StatusCode::OK,
                json!({"jobId": job["jobId"], "padding": padding}),
            )
        } else {
            (
                StatusCode::OK,
                json!({"jobId": job["jobId"], "disease": "none", "confidence": 0.99}),
            )
        };
    let id = job["jobId"].as_str().unwrap_or_default().to_owned();
    s.answers
        .lock()
        .expect("answers lock")
        .entry(id)
        .or_default()
        .push(status.as_u16());
    (status, Json(body))
}

impl TestAnalyzer {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Shared {
            calls: Arc::new(AtomicU64::new(0)),
            behaviour: Arc::new(behaviour),
            answers: Answers::default(),
        };
        let app = axum::Router::new()
            .route("/analyze", axum::routing::post(analyze))
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            url: format!("http://{addr}/analyze"),
            calls: shared.calls,
            behaviour: shared.behaviour,
            answers: shared.answers,
            _stop: tx,
        }
    }

    /// The event kind job `job_id` must end with, given what this analyzer answered:
    /// its last answer other than 503 decides (200 completed, 400 failed); a job that
    /// only ever got 503 fails as `analyzer_unavailable`. `None`: never called.
    pub fn expected_kind(&self, job_id: &str) -> Option<&'static str> {
        let answers = self.answers.lock().expect("answers lock");
        let statuses = answers.get(job_id)?;
        Some(match statuses.iter().rev().find(|s| **s != 503) {
            Some(200) => "analysis.completed",
            _ => "analysis.failed",
        })
    }
}

/// A worker configuration for tests: fast retries, quick breaker, short grace.
pub fn worker_config(
    nats: &impl crate::NatsUrls,
    analyzer: &TestAnalyzer,
    extra: &[(&str, &str)],
) -> WorkerServiceConfig {
    WorkerServiceConfig::load(&worker_vars(nats, &analyzer.url, extra))
        .expect("test worker configuration is valid")
}

/// The variables of a test worker (in-process or as a process) on `nats`, calling the
/// analyzer at `analyzer_url`.
pub fn worker_vars(
    nats: &impl crate::NatsUrls,
    analyzer_url: &str,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("ZIRAAI_CONFIG_DIR".into(), String::new()),
        ("ZIRAAI_NATS_URL".into(), nats.nats_url()),
        ("ZIRAAI_WORKER_LISTEN".into(), "127.0.0.1:0".into()),
        ("ZIRAAI_ANALYZER_URL".into(), analyzer_url.to_owned()),
        ("ZIRAAI_ANALYZER_TIMEOUT".into(), "5s".into()),
        ("ZIRAAI_WORKER_RETRY_BASE".into(), "50ms".into()),
        ("ZIRAAI_WORKER_RETRY_MAX".into(), "400ms".into()),
        ("ZIRAAI_WORKER_MAX_ATTEMPTS".into(), "20".into()),
        ("ZIRAAI_BREAKER_THRESHOLD".into(), "50".into()),
        ("ZIRAAI_BREAKER_COOLDOWN".into(), "500ms".into()),
        ("ZIRAAI_WORKER_SHUTDOWN_GRACE".into(), "5s".into()),
    ]);
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    vars
}

/// A worker on its own runtime.
pub struct TestWorker {
    pub health: SocketAddr,
    pub probe: WorkerProbe,
    service: Isolated,
}

impl TestWorker {
    pub async fn start(config: WorkerServiceConfig) -> Self {
        let (service, (health, probe)) = Isolated::start::<WorkerApp>("test-worker", config).await;
        Self {
            health,
            probe,
            service,
        }
    }

    /// Graceful stop; waits for it.
    pub async fn shutdown(mut self) {
        self.service.shutdown().await.expect("clean stop");
    }

    /// Crash: every task dropped, nothing acknowledged or handed back.
    pub fn kill(mut self) {
        self.service.kill();
    }

    /// `/health` as JSON.
    pub async fn health(&self) -> Value {
        let (_, body) = crate::http_get(self.health, "/health").await;
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

/// Submits a job to `jobs.analysis` (as the platform does).
pub async fn submit_job(js: &async_nats::jetstream::Context, job: Value) {
    within("submit job", ziraai_worker::demo::submit_job(js, &job))
        .await
        .expect("job stored");
}

/// Every event in `NOTIFY` by job: `job-<jobId>` → the kinds published for it.
pub async fn job_events(nats: &NatsServer) -> HashMap<String, Vec<String>> {
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = within("NOTIFY", js.get_stream_no_info("NOTIFY"))
        .await
        .expect("stream");
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut next = 1;
    loop {
        match within(
            "read NOTIFY",
            stream.direct_get_next_for_subject("notify.*", Some(next)),
        )
        .await
        {
            Ok(m) => {
                next = m.sequence + 1;
                let id = m
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                let kind = m
                    .headers
                    .get("Ziraai-Kind")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                out.entry(id).or_default().push(kind);
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return out,
            Err(e) => panic!("reading NOTIFY: {e}"),
        }
    }
}

/// A worker's own count of its event publishes (from its `/health`): PubAcks that
/// stored a new event, and PubAcks that said `duplicate` (the event was already stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishCounts {
    pub published: u64,
    pub duplicates: u64,
}

impl PublishCounts {
    /// Reads `published` and `duplicates` from a worker's `/health` JSON.
    pub fn from_health(health: &Value) -> Self {
        let get = |key: &str| {
            health[key]
                .as_u64()
                .unwrap_or_else(|| panic!("the worker's /health has no {key:?} counter: {health}"))
        };
        Self {
            published: get("published"),
            duplicates: get("duplicates"),
        }
    }
}
