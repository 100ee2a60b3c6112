//! Metrics by OTLP: a gateway and a worker process pointed at the harness's OTLP
//! receiver (gRPC and HTTP/protobuf, `OTEL_METRIC_EXPORT_INTERVAL=200`) push the same
//! series as their `/metrics`, under the same names (counters without `_total`). Needs
//! `cargo build --workspace --bins`.

use std::time::Duration;

use async_nats::jetstream;
use serde_json::json;
use ziraai_e2e::prom::Exposition;
use ziraai_e2e::*;

use crate::telemetry::{publish_traced, warm_up};

/// Bound of waiting for a metric at the receiver (exports every 200 ms here).
const METRICS: Duration = Duration::from_secs(10);

fn metric_vars(receiver: &OtlpReceiver) -> Vec<(String, String)> {
    let mut vars = receiver.env();
    vars.push(("OTEL_METRIC_EXPORT_INTERVAL".into(), "200".into()));
    vars
}

fn borrowed(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn scrape(addr: std::net::SocketAddr) -> Exposition {
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// N events to a native JSON socket: the pushed latency histogram of `native-json`
/// counts them, as `/metrics` does, with the delivery buckets, the counters and gauges
/// alongside, and the gateway's resource.
async fn gateway_pushes_the_delivery_histogram(protocol: OtlpProtocol) {
    const N: u64 = 5;
    let nats = NatsServer::start().await;
    let receiver = OtlpReceiver::start(protocol).await.expect("receiver");
    let vars = metric_vars(&receiver);
    let gw = ServiceProcess::gateway(&nats, &borrowed(&vars)).await;
    let js = jetstream::new(nats.client().await);
    let u = user("otlp-metrics");
    let mut phone = WsClient::open(&gw.ws_url(), &u).await;
    // One event first (see `warm_up`: it may be read by the socket's start-up replay,
    // which records no latency), then N live events.
    warm_up(&js, &u, &mut phone).await;
    let mut seqs = Vec::new();
    for _ in 0..N {
        seqs.push(publish_traced(&js, &u, None).await);
    }
    assert_eq!(phone.seqs(N as usize).await, seqs);

    // Pushed and scraped counts agree, and count every write but replayed ones.
    let native = [("protocol", "native-json")];
    let deadline = tokio::time::Instant::now() + METRICS;
    let (written, m) = loop {
        let m = scrape(gw.addr()).await;
        let replayed = m.value("ziraai_gateway_events_total", &[("path", "replay")]);
        let scraped = m.value("ziraai_delivery_latency_seconds_count", &native);
        let pushed = receiver
            .latest_point("ziraai_delivery_latency_seconds", &native)
            .map(|p| p.count as f64);
        if let (Some(r), Some(c)) = (replayed, scraped)
            && c == (N + 1) as f64 - r
            && pushed == Some(c)
        {
            break (c as u64, m);
        }
        let seen = receiver.points().len();
        let next = tokio::time::timeout_at(
            deadline,
            receiver.wait_for_points(METRICS, |p| p.len() > seen),
        )
        .await;
        if !matches!(next, Ok(Ok(_))) {
            panic!(
                "pushed {pushed:?}, scraped {scraped:?}, replayed {replayed:?}; gateway stderr:\n{}",
                gw.stderr()
            );
        }
    };
    assert!(written >= N, "{written}");
    let h = receiver
        .latest_point("ziraai_delivery_latency_seconds", &native)
        .expect("histogram");
    assert_eq!(h.kind, "histogram");
    assert_eq!(
        h.bounds,
        ziraai_common::metrics::DELIVERY_LATENCY_BUCKETS.to_vec()
    );
    assert!(
        h.value > 0.0 && h.value < 10.0 * written as f64,
        "sum {}",
        h.value
    );
    assert_eq!(
        h.resource.get("service.name").map(String::as_str),
        Some("ziraai-gateway")
    );
    assert!(h.resource.contains_key("service.instance.id"));

    // Counters: monotonic sums named as /metrics without `_total`; gauges as they are.
    let live = receiver
        .latest_point("ziraai_gateway_events", &[("path", "live")])
        .expect("events counter");
    assert_eq!((live.kind, live.monotonic), ("sum", true));
    assert_eq!(
        Some(live.value),
        m.value("ziraai_gateway_events_total", &[("path", "live")])
    );
    let open = receiver
        .latest_point("ziraai_gateway_connections", &native)
        .expect("connections gauge");
    assert_eq!((open.kind, open.value), ("gauge", 1.0));
    for name in [
        "ziraai_gateway_acks",
        "ziraai_gateway_events_dropped",
        "ziraai_gateway_slow_consumers",
        "ziraai_gateway_users",
        "ziraai_gateway_ready",
    ] {
        assert!(receiver.latest_point(name, &[]).is_some(), "{name} pushed");
    }
}

#[tokio::test]
async fn the_gateway_pushes_its_metrics_over_grpc() {
    gateway_pushes_the_delivery_histogram(OtlpProtocol::Grpc).await;
}

#[tokio::test]
async fn the_gateway_pushes_its_metrics_over_http_protobuf() {
    gateway_pushes_the_delivery_histogram(OtlpProtocol::HttpProtobuf).await;
}

/// A worker process pushes the analyzer histogram and the jobs counter.
#[tokio::test]
async fn the_worker_pushes_the_analyzer_histogram_and_job_counters() {
    let nats = NatsServer::start().await;
    let receiver = OtlpReceiver::start(OtlpProtocol::HttpProtobuf)
        .await
        .expect("receiver");
    let vars = metric_vars(&receiver);
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker = ServiceProcess::worker(&nats, &analyzer.url, &borrowed(&vars)).await;
    let js = jetstream::new(nats.client().await);
    let u = user("otlp-worker");
    for i in 0..2 {
        let job = json!({"jobId": format!("om{i}"), "analysisId": format!("a{i}"), "userId": u, "imageUrl": "http://127.0.0.1/p.jpg"});
        submit_job(&js, job).await;
    }
    let completed = [("outcome", "completed")];
    receiver
        .wait_for_points(METRICS, |_| {
            receiver
                .latest_point("ziraai_worker_jobs", &completed)
                .is_some_and(|p| p.value == 2.0)
                && receiver
                    .latest_point("ziraai_analyzer_latency_seconds", &[])
                    .is_some_and(|p| p.count == 2)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; worker stderr:\n{}", worker.stderr()));
    let jobs = receiver
        .latest_point("ziraai_worker_jobs", &completed)
        .expect("jobs");
    assert_eq!((jobs.kind, jobs.monotonic), ("sum", true));
    assert_eq!(
        jobs.resource.get("service.name").map(String::as_str),
        Some("ziraai-worker")
    );
    let m = scrape(worker.addr()).await;
    assert_eq!(
        m.value("ziraai_analyzer_latency_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(m.value("ziraai_worker_jobs_total", &completed), Some(2.0));
    for name in [
        "ziraai_worker_events_published",
        "ziraai_worker_breaker_open",
        "ziraai_worker_ready",
    ] {
        assert!(receiver.latest_point(name, &[]).is_some(), "{name} pushed");
    }
}
