//! `/metrics` of both services through `prometheus-client`: strict Prometheus text
//! (parsed by `ziraai_e2e::prom`), a delivery latency histogram whose count per
//! protocol is exactly the deliveries made, and an analyzer latency histogram whose
//! count is exactly the analyzer's calls.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use ziraai_e2e::prom::Exposition;
use ziraai_e2e::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `/metrics`, checked to be valid Prometheus text.
async fn scrape(addr: std::net::SocketAddr) -> Exposition {
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A SignalR JSON hub socket, handshake done.
async fn hub_json(gw: &TestGateway, user: &ziraai_proto::UserId) -> Ws {
    let url = format!(
        "ws://{}/hubs/plantanalysis?access_token={}",
        gw.addr,
        token(user)
    );
    let mut ws = within("hub websocket", tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade")
        .0;
    let hello = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
    within("handshake", ws.send(Message::Text(hello.into())))
        .await
        .expect("sent");
    assert_eq!(hub_record(&mut ws).await, json!({}));
    ws
}

/// The next hub record that is not a ping.
async fn hub_record(ws: &mut Ws) -> Value {
    loop {
        match within("hub frame", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.trim_end_matches('\u{1e}')).expect("JSON");
                if v["type"] != 6 {
                    return v;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a hub record, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_latency_histogram_counts_every_delivery_per_protocol() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let (a, b) = (user("m-native"), user("m-hub"));
    let mut native = WsClient::open(&gw.ws_url(), &a).await;
    let mut hub = hub_json(&gw, &b).await;
    let before = scrape(gw.addr).await;
    for p in [
        "native-json",
        "native-msgpack",
        "signalr-json",
        "signalr-msgpack",
    ] {
        let count = before.value("ziraai_delivery_latency_seconds_count", &[("protocol", p)]);
        assert_eq!(count, Some(0.0), "{p} exported before any delivery");
    }
    let seqs = publish_many(&publisher, &a, 3).await;
    assert_eq!(native.seqs(3).await, seqs);
    publish_many(&publisher, &b, 2).await;
    for _ in 0..2 {
        let record = hub_record(&mut hub).await;
        assert_eq!(record["target"], "AnalysisCompleted", "{record}");
    }
    // Recorded at the write, before the client could read the frame.
    let m = scrape(gw.addr).await;
    let count = |p: &str| m.value("ziraai_delivery_latency_seconds_count", &[("protocol", p)]);
    assert_eq!(count("native-json"), Some(3.0));
    assert_eq!(count("signalr-json"), Some(2.0));
    assert_eq!(count("native-msgpack"), Some(0.0));
    assert_eq!(count("signalr-msgpack"), Some(0.0));
    let sum = m.value(
        "ziraai_delivery_latency_seconds_sum",
        &[("protocol", "native-json")],
    );
    assert!(
        sum.is_some_and(|s| s > 0.0 && s < 30.0),
        "three real delays: {sum:?}"
    );
    let events = |p: &str| m.value("ziraai_gateway_events_total", &[("path", p)]);
    let written = events("live").zip(events("gap_fill")).map(|(l, g)| l + g);
    assert_eq!(written, Some(5.0), "live or gap-filled, each once");
    assert_eq!(events("replay"), Some(0.0));
    let open = |p: &str| m.value("ziraai_gateway_connections", &[("protocol", p)]);
    assert_eq!(
        (open("native-json"), open("signalr-json")),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(open("native-msgpack"), Some(0.0));
    for (name, value) in [
        ("ziraai_gateway_users", 2.0),
        ("ziraai_gateway_ready", 1.0),
        ("ziraai_gateway_nats_connected", 1.0),
        ("ziraai_gateway_acks_total", 0.0),
        ("ziraai_gateway_slow_consumers_total", 0.0),
    ] {
        assert_eq!(m.value(name, &[]), Some(value), "{name}");
    }
    let dropped = |r: &str| m.value("ziraai_gateway_events_dropped_total", &[("reason", r)]);
    assert_eq!(
        (dropped("malformed"), dropped("forged")),
        (Some(0.0), Some(0.0))
    );

    native.ack(seqs[2]).await;
    within("the ack counted", async {
        while scrape(gw.addr)
            .await
            .value("ziraai_gateway_acks_total", &[])
            != Some(1.0)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_resume_backlog_is_counted_as_replay_not_as_latency() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("m-resume");
    let seqs = publish_many(&publisher, &u, 2).await;
    let since = format!("since={}", seqs[0] - 1);
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, &since).await;
    assert_eq!(c.seqs(2).await, seqs);
    let m = scrape(gw.addr).await;
    assert_eq!(
        m.value("ziraai_gateway_events_total", &[("path", "replay")]),
        Some(2.0)
    );
    assert_eq!(
        m.value(
            "ziraai_delivery_latency_seconds_count",
            &[("protocol", "native-json")]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_analyzer_histogram_counts_every_call() {
    let nats = NatsServer::start().await;
    // Every second call fails: jobs are retried, and every call is observed.
    let analyzer = TestAnalyzer::start(Behaviour {
        fail_every: 2,
        ..Behaviour::default()
    })
    .await;
    let worker = TestWorker::start(worker_config(&nats, &analyzer, &[])).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("m-worker");
    for i in 0..3 {
        let job = json!({"jobId": format!("j{i}"), "analysisId": format!("a{i}"), "userId": u, "imageUrl": "http://127.0.0.1/p.jpg"});
        submit_job(&js, job).await;
    }
    let counters = worker.probe.counters.clone();
    wait_until("three jobs completed", || {
        counters
            .completed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 3
    })
    .await;
    let calls = analyzer.calls.load(std::sync::atomic::Ordering::SeqCst) as f64;
    assert!(calls > 3.0, "some calls failed and were retried: {calls}");
    let m = scrape(worker.health).await;
    assert_eq!(
        m.value("ziraai_analyzer_latency_seconds_count", &[]),
        Some(calls)
    );
    let jobs = |o: &str| m.value("ziraai_worker_jobs_total", &[("outcome", o)]);
    assert_eq!(jobs("completed"), Some(3.0));
    assert_eq!(jobs("retried"), Some(calls - 3.0));
    assert_eq!((jobs("failed"), jobs("poison")), (Some(0.0), Some(0.0)));
    assert_eq!(
        m.value("ziraai_worker_events_published_total", &[]),
        Some(3.0)
    );
    assert_eq!(m.value("ziraai_worker_queue_pending", &[]), Some(0.0));
    assert!(m.value("ziraai_worker_in_flight", &[]).is_some());
    assert_eq!(m.value("ziraai_worker_breaker_open", &[]), Some(0.0));
    assert_eq!(m.value("ziraai_worker_ready", &[]), Some(1.0));
}

#[tokio::test]
async fn every_metric_and_label_value_of_the_infra_rules_is_served() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker = TestWorker::start(worker_config(&nats, &analyzer, &[])).await;
    let (g, w) = (scrape(gw.addr).await, scrape(worker.health).await);
    for name in crate::infra_configs::EXPORTED {
        assert!(
            g.families().chain(w.families()).any(|f| f == *name),
            "{name} is named by infra/telemetry but not served"
        );
    }
    let samples = || g.samples.keys().chain(w.samples.keys());
    for (key, values) in crate::infra_configs::LABEL_VALUES {
        for value in *values {
            assert!(
                samples().any(|(_, labels)| labels.get(*key).map(String::as_str) == Some(value)),
                "{key}=\"{value}\" is not served"
            );
        }
    }
}
