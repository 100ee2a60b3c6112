//! One bench run: a fresh nats-server and release gateway process (tracing off, or
//! exporting to an in-process OTLP receiver), `--sockets` WebSockets, `--events`
//! events at `--rate` per second, then the figures ([`Figures`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use ziraai_e2e::{NatsServer, STEP, http_get, token, user};
use ziraai_e2e::{OtlpProtocol, OtlpReceiver};
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};
use ziraai_proto::{ENVELOPE_VERSION, PayloadEncoding, UserId, headers};

use crate::Args;
use crate::report::{Figures, cpu_ms, load_average, rss_kib};

/// How often the traced gateway exports a batch (`OTEL_BSP_SCHEDULE_DELAY`, ms).
const EXPORT_DELAY_MS: u64 = 1000;

/// Runs the load once; `traced` points the gateway at an OTLP receiver.
pub(crate) async fn run(args: &Args, traced: bool) -> anyhow::Result<Figures> {
    let load_before = load_average();
    let nats = NatsServer::start().await;
    let collector = if traced {
        Some(OtlpReceiver::start(OtlpProtocol::Grpc).await?)
    } else {
        None
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    // The release gateway sits next to this binary (`make bench` builds both).
    let bin = std::env::current_exe()?.with_file_name("ziraai-gateway");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build --release --bins` (make bench does)",
        bin.display()
    );
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.env_remove("ZIRAAI_TEST_NATS_SERVER")
        .env("ZIRAAI_CONFIG_DIR", "")
        .env("ZIRAAI_NATS_URL", nats.url())
        .env("ZIRAAI_GATEWAY_LISTEN", &listen)
        .env("ZIRAAI_LOG_FORMAT", "json")
        .env("ZIRAAI_GATEWAY_HANDSHAKE_BURST", "1000000")
        .env("RUST_LOG", "warn")
        .env(
            "ZIRAAI_DELIVERY_TRACKING",
            if args.tracking { "true" } else { "false" },
        )
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    if let Some(c) = &collector {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", c.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("OTEL_TRACES_SAMPLER", "always_on")
            .env("OTEL_BSP_SCHEDULE_DELAY", EXPORT_DELAY_MS.to_string());
    }
    let mut gateway = cmd.spawn()?;
    let pid = gateway.id().unwrap_or(0);
    let addr: std::net::SocketAddr = listen.parse()?;
    let ready_by = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err()
        || http_get(addr, "/health/ready").await.0 != 200
    {
        anyhow::ensure!(Instant::now() < ready_by, "gateway not ready in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = rss_kib(pid);

    // Open the sockets: two per user, 100 handshakes in flight at a time.
    let users: Vec<_> = (0..args.sockets.div_ceil(2))
        .map(|_| user("bench"))
        .collect();
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<Duration>();
    let epoch = Arc::new(Instant::now());
    let url = format!("ws://{listen}/ws");
    let opened = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let mut readers = Vec::new();
    for i in 0..args.sockets {
        let u = users[i / 2].clone();
        let (url, sem, lat_tx, epoch) = (url.clone(), sem.clone(), lat_tx.clone(), epoch.clone());
        let permit = sem.acquire_owned().await?;
        let connect = tokio_tungstenite::connect_async(format!("{url}?access_token={}", token(&u)));
        let (mut ws, _) = tokio::time::timeout(STEP, connect).await??;
        let _welcome = tokio::time::timeout(STEP, ws.next()).await?;
        drop(permit);
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    if let Some(sent) = v["data"]["result"]["sentAtNanos"].as_u64() {
                        let now = epoch.elapsed().as_nanos() as u64;
                        let _ = lat_tx.send(Duration::from_nanos(now.saturating_sub(sent)));
                        // Acknowledge like a real client (tracked as "acked").
                        let ack = format!(r#"{{"type":"ack","seq":{}}}"#, v["seq"]);
                        let _ =
                            futures_util::SinkExt::send(&mut ws, Message::Text(ack.into())).await;
                    }
                }
            }
        }));
    }
    drop(lat_tx);
    let open_time = opened.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await; // let allocations settle before sampling RSS
    let with_sockets = rss_kib(pid);

    // Publish events to random users at the target rate, as the worker does.
    drop(nats.publisher().await); // applies the streams
    let js = jetstream::new(nats.client().await);
    let cpu_before = cpu_ms(pid);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut expected = 0usize;
    let mut publishes = Vec::new();
    for n in 0..args.events {
        let due = start + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let u = users[fastrand(n) % users.len()].clone();
        expected += 2;
        let sent = epoch.elapsed().as_nanos() as u64;
        let msg = event(n, &u, sent, traced);
        let js = js.clone();
        publishes.push(tokio::spawn(async move {
            js.send_publish(u.notify_subject(), msg).await?.await
        }));
    }
    for p in publishes {
        tokio::time::timeout(STEP, p).await???;
    }
    let publish_time = start.elapsed();
    let mut latencies = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latencies.len() < expected {
        match tokio::time::timeout_at(deadline, lat_rx.recv()).await {
            Ok(Some(d)) => latencies.push(d),
            _ => break,
        }
    }
    latencies.sort();
    // Both runs wait the same for the last batch of spans, so CPU counts the export.
    let (spans_exported, spans_dropped) = settle_spans(addr, collector.as_ref()).await;
    let cpu = cpu_ms(pid).saturating_sub(cpu_before);
    for r in readers {
        r.abort();
    }
    let _ = gateway.start_kill();
    let _ = tokio::time::timeout(STEP, gateway.wait()).await;
    let spans = collector.as_ref().map(OtlpReceiver::spans);
    Ok(Figures {
        label: if traced { "tracing on" } else { "tracing off" },
        open_time,
        rss_per_socket_kib: with_sockets.saturating_sub(base) as f64 / args.sockets.max(1) as f64,
        publish_time,
        expected,
        latencies,
        cpu_ms: cpu,
        spans_received: spans.as_ref().map(Vec::len),
        deliver_spans: spans.as_deref().map_or((0, 0), |s| {
            let deliver = s.iter().filter(|s| s.name == "notify.deliver");
            let parented = deliver.clone().filter(|s| !s.parent_span_id.is_empty());
            (deliver.count(), parented.count())
        }),
        spans_exported,
        spans_dropped,
        load_before,
        load_after: load_average(),
    })
}

/// One `analysis.completed` event for `user` as the worker publishes it, with a
/// sampled W3C `traceparent` when `traced` (so `notify.deliver` has a parent).
fn event(n: usize, user: &UserId, sent_at_nanos: u64, traced: bool) -> PublishMessage {
    let outcome = AnalysisOutcome::completed(
        AnalysisId::Text(format!("b{n}")),
        user.clone(),
        serde_json::json!({"sentAtNanos": sent_at_nanos}),
    );
    let envelope = outcome.to_envelope();
    let encoding = PayloadEncoding::Json;
    let mut h = HeaderMap::new();
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        outcome.event_id().as_str(),
    );
    h.insert(headers::KIND, envelope.kind.as_str());
    h.insert(headers::ENVELOPE, ENVELOPE_VERSION);
    h.insert(headers::CONTENT_TYPE, encoding.content_type());
    if traced {
        let trace = format!("{:016x}{:016x}", random(), random());
        let span = format!("{:016x}", random() | 1);
        h.insert("traceparent", format!("00-{trace}-{span}-01").as_str());
    }
    PublishMessage::build()
        .payload(envelope.encode(encoding).into())
        .headers(h)
}

fn random() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(nuid::next().as_str())
}

/// Waits (at most 10 s) until the gateway's span counters stop moving for longer than
/// an export interval and the collector holds what was exported; then
/// (`traces.exported`, `traces.dropped`) of `/health`.
async fn settle_spans(addr: std::net::SocketAddr, collector: Option<&OtlpReceiver>) -> (u64, u64) {
    let read = || async {
        let (_, body) = http_get(addr, "/health").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let n = |k: &str| v["traces"][k].as_u64().unwrap_or(0);
        (n("exported"), n("dropped"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let quiet = Duration::from_millis(EXPORT_DELAY_MS + 500);
    let mut last = read().await;
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = read().await;
        if now != last {
            (last, since) = (now, Instant::now());
            continue;
        }
        let received = collector.map_or(0, |c| c.spans().len() as u64);
        if since.elapsed() >= quiet && (collector.is_none() || received >= last.0) {
            break;
        }
    }
    last
}

/// Deterministic spread of events over users (no extra dependency for randomness).
fn fastrand(n: usize) -> usize {
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x as usize
}
