//! Traces: the gateway's (and the worker's) spans reach a real OTLP receiver over gRPC
//! and HTTP/protobuf, in the publisher's trace; sampling, a stalled or unreachable
//! collector and `RUST_LOG` never change deliveries. Gateway processes, because the
//! `OTEL_*` variables are process environment. Needs `cargo build --workspace --bins`.

mod full_trace;
mod no_endpoint;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use serde_json::json;
use ziraai_e2e::*;
use ziraai_proto::{Envelope, PayloadEncoding, UserId};

/// Bound of waiting for spans at the receiver (exports every 100 ms in these tests).
const SPANS: Duration = Duration::from_secs(10);

/// A random sampled `traceparent`: (header, trace id, span id).
pub(crate) fn producer_traceparent() -> (String, String, String) {
    use std::hash::BuildHasher;
    let random = || std::collections::hash_map::RandomState::new().hash_one(nuid::next().as_str());
    let trace = format!("{:016x}{:016x}", random(), random());
    let span = format!("{:016x}", random() | 1);
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// A producer's own publish to `notify.<user>` (as nats-py or `nats pub -H` would),
/// with its `traceparent` when given; returns the stream sequence.
pub(crate) async fn publish_traced(
    js: &jetstream::Context,
    user: &UserId,
    traceparent: Option<&str>,
) -> u64 {
    let mut h = HeaderMap::new();
    h.insert("Content-Type", "application/json");
    h.insert("Nats-Msg-Id", nuid::next().as_str());
    if let Some(tp) = traceparent {
        h.insert("traceparent", tp);
    }
    let body = Envelope::now(
        "analysis.completed",
        serde_json::Map::from_iter([("x".to_string(), json!(1))]),
    )
    .encode(PayloadEncoding::Json);
    let msg = PublishMessage::build().payload(body.into()).headers(h);
    within("traced publish", async {
        js.send_publish(user.notify_subject(), msg)
            .await
            .expect("sent")
            .await
            .expect("stored")
    })
    .await
    .sequence
}

/// One event through `client`: once it arrived, the socket's start-up replay is over
/// and the next event reaches it live (through the hub's `notify.deliver`), not read
/// back from the stream by its own replay.
pub(crate) async fn warm_up(js: &jetstream::Context, user: &UserId, client: &mut WsClient) -> u64 {
    let seq = publish_traced(js, user, None).await;
    assert_eq!(client.seqs(1).await, vec![seq], "warm-up event");
    seq
}

/// The official SignalR JS client (JSON) of `user` on `gw`, connected.
pub(crate) async fn signalr_client(gw: &ServiceProcess, user: &UserId) -> JsClient {
    let mut c = JsClient::start(JsOptions {
        url: format!("http://{}{}", gw.addr(), ziraai_gateway::signalr::HUB_PATH),
        token: token(user),
        protocol: "json",
        ..JsOptions::default()
    })
    .await;
    c.expect("connected").await;
    c
}

/// The gateway's `OTEL_*` variables for `receiver` plus `extra`.
fn otel_vars<'a>(
    receiver: &'a OtlpReceiver,
    extra: &[(&'a str, &'a str)],
) -> Vec<(String, String)> {
    let mut vars = receiver.env();
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    vars
}

async fn gateway_with(nats: &NatsServer, vars: &[(String, String)]) -> ServiceProcess {
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ServiceProcess::gateway(nats, &extra).await
}

/// (b), (e), (f): a producer's `traceparent` gets `notify.deliver` and `notify.ack` in
/// its trace, with their attributes and the gateway's resource; `signalr`: a SignalR
/// socket of the same user shares the one delivery span.
async fn producer_trace_lands(protocol: OtlpProtocol, rust_log: &str, signalr: bool) {
    let nats = NatsServer::start().await;
    let receiver = OtlpReceiver::start(protocol).await.expect("receiver");
    let vars = otel_vars(&receiver, &[("RUST_LOG", rust_log)]);
    let gw = gateway_with(&nats, &vars).await;
    let js = jetstream::new(nats.client().await);
    let u = user("traced");
    let (mut phone, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=phone").await;
    let mut browser = match signalr {
        true => Some(signalr_client(&gw, &u).await),
        false => None,
    };
    warm_up(&js, &u, &mut phone).await;
    if let Some(b) = &mut browser {
        b.invocation("AnalysisCompleted").await;
    }
    let (tp, trace, producer_span) = producer_traceparent();
    let seq = publish_traced(&js, &u, Some(&tp)).await;
    assert_eq!(phone.seqs(1).await, vec![seq]);
    if let Some(b) = &mut browser {
        b.invocation("AnalysisCompleted").await;
    }
    phone.ack(seq).await;

    let spans = receiver
        .wait_for(SPANS, |s| {
            s.iter()
                .any(|s| s.name == "notify.deliver" && s.trace_id == trace)
                && s.iter()
                    .any(|s| s.name == "notify.ack" && s.trace_id == trace)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; gateway stderr:\n{}", gw.stderr()));
    let deliver = spans
        .iter()
        .find(|s| s.name == "notify.deliver" && s.trace_id == trace)
        .expect("deliver span");
    assert_eq!(
        deliver.parent_span_id, producer_span,
        "parented to the producer's span"
    );
    assert_eq!(deliver.attr("user.id"), Some(u.as_str()));
    assert_eq!(deliver.attr("event.seq"), Some(seq.to_string().as_str()));
    assert_eq!(deliver.attr("event.kind"), Some("analysis.completed"));
    let (sockets, protocols) = match signalr {
        true => ("2", "native-json,signalr-json"),
        false => ("1", "native-json"),
    };
    assert_eq!(deliver.attr("sockets"), Some(sockets));
    assert_eq!(deliver.attr("protocols"), Some(protocols));
    let one_deliver = spans
        .iter()
        .filter(|s| s.name == "notify.deliver" && s.trace_id == trace);
    assert_eq!(
        one_deliver.count(),
        1,
        "one delivery span per event, not per socket"
    );
    let delay: u64 = deliver
        .attr("delivery.delay_ms")
        .and_then(|d| d.parse().ok())
        .expect("delay");
    assert!(delay < 10_000, "publish → fan-out delay {delay} ms");
    assert_eq!(
        deliver.resource.get("service.name").map(String::as_str),
        Some("ziraai-gateway")
    );
    let instance = deliver
        .resource
        .get("service.instance.id")
        .expect("instance id");
    assert_eq!(
        gw.health().await["gatewayId"].as_str(),
        Some(instance.as_str())
    );
    assert!(deliver.resource.contains_key("service.version"));
    assert!(deliver.resource.contains_key("deployment.environment.name"));
    assert!(
        !deliver.attributes.values().any(|v| v.starts_with("eyJ")),
        "no token in attributes"
    );

    let ack = spans
        .iter()
        .find(|s| s.name == "notify.ack" && s.trace_id == trace)
        .expect("ack span");
    assert_eq!(ack.parent_span_id, deliver.span_id);
    assert!(
        ack.links
            .contains(&(trace.clone(), deliver.span_id.clone())),
        "{:?}",
        ack.links
    );
    assert_eq!(ack.attr("device.id"), Some("phone"));
    assert_eq!(ack.attr("event.seq"), Some(seq.to_string().as_str()));

    let stderr = gw.stderr();
    if rust_log == QUIET_LOGS {
        for hidden in ["socket open", "\"delivered\""] {
            assert!(
                !stderr.contains(hidden),
                "RUST_LOG hides {hidden}:\n{stderr}"
            );
        }
    } else {
        let open = stderr
            .lines()
            .find(|l| l.contains("\"socket open\""))
            .unwrap_or_else(|| panic!("an open line:\n{stderr}"));
        for field in ["connection_id", "\"user\"", "native-json"] {
            assert!(open.contains(field), "{field} in {open}");
        }
        // The development gateway logs each delivery inside `notify.deliver`.
        let delivered = stderr
            .lines()
            .find(|l| l.contains("\"delivered\"") && l.contains(&trace))
            .unwrap_or_else(|| panic!("a delivery line with the trace id:\n{stderr}"));
        assert!(
            delivered.contains(&format!("\"span_id\":\"{}\"", deliver.span_id)),
            "{delivered}"
        );
        // The close line: who, which connection, which protocol, code and reason.
        phone.close_with(4000, "going\naway").await;
        let deadline = Instant::now() + SPANS;
        let closed = loop {
            let stderr = gw.stderr();
            if let Some(line) = stderr.lines().find(|l| l.contains("\"socket closed\"")) {
                break line.to_owned();
            }
            assert!(Instant::now() < deadline, "no close line:\n{stderr}");
            // Polling the child's captured stderr, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for field in [
            format!("\"user\":\"{u}\""),
            "\"connection_id\":".into(),
            "\"protocol\":\"native-json\"".into(),
            "\"closed_by\":\"client\"".into(),
            "\"close_code\":4000".into(),
            // The client's reason, without its control characters.
            "\"close_reason\":\"goingaway\"".into(),
        ] {
            assert!(closed.contains(&field), "{field} in {closed}");
        }
    }
}

/// Everything at `warn`, the spans' own module and the delivery path included; only the
/// start-up line the harness reads stays at `info`.
const QUIET_LOGS: &str = "warn,ziraai_gateway=info,ziraai_gateway::trace=warn,ziraai_gateway::hub=warn,ziraai_gateway::socket=warn";

#[tokio::test]
async fn a_producers_traceparent_gets_the_gateways_spans_over_grpc_even_with_rust_log_warn() {
    producer_trace_lands(OtlpProtocol::Grpc, QUIET_LOGS, false).await;
}

#[tokio::test]
async fn a_producers_traceparent_gets_the_gateways_spans_over_http_protobuf_with_signalr_too() {
    producer_trace_lands(OtlpProtocol::HttpProtobuf, "info", true).await;
}

/// (c): at ratio 0 no root span is sampled; deliveries go on. The barrier: a later
/// event with a sampled producer parent is exported (parent-based), and nothing else was.
#[tokio::test]
async fn sampler_ratio_zero_exports_nothing_of_its_own_and_delivers() {
    let nats = NatsServer::start().await;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)
        .await
        .expect("receiver");
    let vars = otel_vars(
        &receiver,
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    );
    let gw = gateway_with(&nats, &vars).await;
    let js = jetstream::new(nats.client().await);
    let u = user("ratio0");
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=tab").await;
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(publish_traced(&js, &u, None).await);
    }
    assert_eq!(c.seqs(5).await, seqs, "deliveries unaffected");
    c.ack(seqs[4]).await;
    let (tp, trace, _) = producer_traceparent();
    let last = publish_traced(&js, &u, Some(&tp)).await;
    assert_eq!(c.seqs(1).await, vec![last]);
    let spans = receiver
        .wait_for(SPANS, |s| s.iter().any(|s| s.trace_id == trace))
        .await
        .expect("the sampled parent's delivery");
    let others: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id != trace)
        .map(|s| &s.name)
        .collect();
    assert!(others.is_empty(), "exported at ratio 0: {others:?}");
}

/// (d): a collector that never answers or refuses connections: deliveries go on at
/// their pace, spans beyond the bounded queue are dropped and counted on `/health`.
async fn deliveries_continue_without_a_collector(receiver: OtlpReceiver) {
    let nats = NatsServer::start().await;
    let vars = otel_vars(
        &receiver,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ],
    );
    let gw = gateway_with(&nats, &vars).await;
    let js = jetstream::new(nats.client().await);
    let u = user("nocollector");
    let mut c = WsClient::open(&gw.ws_url(), &u).await;
    const N: usize = 30;
    let mut slowest = Duration::ZERO;
    for _ in 0..N {
        let (tp, _, _) = producer_traceparent();
        let started = Instant::now();
        let seq = publish_traced(&js, &u, Some(&tp)).await;
        assert_eq!(c.seqs(1).await, vec![seq]);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest publish → delivery {slowest:?}"
    );
    // N sampled spans into a queue of 4 with the exporter stuck or failing.
    let deadline = Instant::now() + SPANS;
    loop {
        let traces = gw.health().await["traces"].clone();
        let dropped = traces["dropped"].as_u64().unwrap_or(0);
        if dropped >= (N as u64) - 8 {
            assert_eq!(traces["exported"].as_u64(), Some(0), "{traces}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dropped spans not counted: {traces}"
        );
        // Polling the counter: the export thread reports on its own schedule.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stalled_collector_never_slows_deliveries_and_drops_are_counted() {
    deliveries_continue_without_a_collector(OtlpReceiver::stalled().await.expect("stalled")).await;
}

#[tokio::test]
async fn an_unreachable_collector_never_slows_deliveries_and_drops_are_counted() {
    deliveries_continue_without_a_collector(OtlpReceiver::unreachable().await.expect("closed"))
        .await;
}

/// A resume's backlog is one `notify.replay` (from where, how many, why), linked to
/// each replayed event's producer span.
#[tokio::test]
async fn a_resume_replays_under_one_notify_replay_linked_to_the_publishers() {
    let nats = NatsServer::start().await;
    let receiver = OtlpReceiver::start(OtlpProtocol::HttpProtobuf)
        .await
        .expect("receiver");
    let gw = gateway_with(&nats, &otel_vars(&receiver, &[])).await;
    let js = jetstream::new(nats.client().await);
    let u = user("replayed");
    let mut producers = Vec::new();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let (tp, trace, span) = producer_traceparent();
        seqs.push(publish_traced(&js, &u, Some(&tp)).await);
        producers.push((trace, span));
    }
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "since=0").await;
    assert_eq!(c.seqs(3).await, seqs);
    let spans = receiver
        .wait_for(SPANS, |s| {
            s.iter()
                .any(|s| s.name == "notify.replay" && s.attr("count") == Some("3"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; gateway stderr:\n{}", gw.stderr()));
    let replay = spans
        .iter()
        .find(|s| s.name == "notify.replay")
        .expect("replay span");
    assert_eq!(replay.attr("from_seq"), Some(seqs[0].to_string().as_str()));
    assert_eq!(replay.attr("replay.reason"), Some("resume"));
    assert_eq!(replay.links, producers, "linked to each event's publisher");
    assert!(
        replay.parent_span_id.is_empty(),
        "a resume starts its own trace"
    );
}
