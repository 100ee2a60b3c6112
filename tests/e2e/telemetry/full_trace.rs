//! (a): one job, one trace, from the worker's `job` to the device's `notify.ack`:
//! `job` → `analyzer.call`, `notify.publish` → `notify.deliver` (native and SignalR
//! sockets of the user) → `notify.ack`, across two processes and NATS.

use async_nats::jetstream;
use serde_json::json;
use ziraai_e2e::*;

use super::{SPANS, gateway_with, otel_vars, signalr_client, warm_up};

#[tokio::test]
async fn a_job_delivered_to_native_and_signalr_sockets_is_one_trace_up_to_the_ack() {
    let nats = NatsServer::start().await;
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc)
        .await
        .expect("receiver");
    let vars = otel_vars(&receiver, &[]);
    let gw = gateway_with(&nats, &vars).await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _worker = ServiceProcess::worker(&nats, &analyzer.url, &extra).await;
    let u = user("onetrace");
    let (mut phone, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=phone").await;
    let mut browser = signalr_client(&gw, &u).await;
    let js = jetstream::new(nats.client().await);
    // Both sockets live (see `warm_up`): the job's event reaches them through the hub.
    warm_up(&js, &u, &mut phone).await;
    browser.invocation("AnalysisCompleted").await;

    let job_id = format!("trace-{}", nuid::next());
    submit_job(
        &js,
        json!({"jobId": job_id, "analysisId": 4242, "userId": u.as_str(), "imageUrl": "http://127.0.0.1/p.jpg", "crop": "wheat"}),
    )
    .await;
    let event = phone.event().await;
    browser.invocation("AnalysisCompleted").await;
    phone.ack(event.seq).await;

    let user_id = u.as_str().to_owned();
    let seq = event.seq.to_string();
    let spans = receiver
        .wait_for(SPANS, |s| {
            let Some(d) = s.iter().find(|d| {
                d.name == "notify.deliver"
                    && d.attr("user.id") == Some(user_id.as_str())
                    && d.attr("event.seq") == Some(seq.as_str())
            }) else {
                return false;
            };
            ["job", "analyzer.call", "notify.publish", "notify.ack"]
                .iter()
                .all(|n| s.iter().any(|x| x.name == *n && x.trace_id == d.trace_id))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; gateway stderr:\n{}", gw.stderr()));
    let one = |name: &str| {
        let found: Vec<_> = spans
            .iter()
            .filter(|s| {
                s.name == name
                    && (name != "notify.deliver" || s.attr("event.seq") == Some(seq.as_str()))
            })
            .collect();
        assert_eq!(found.len(), 1, "exactly one {name}: {found:?}");
        found[0].clone()
    };
    let (job, call, publish, deliver, ack) = (
        one("job"),
        one("analyzer.call"),
        one("notify.publish"),
        one("notify.deliver"),
        one("notify.ack"),
    );
    for s in [&call, &publish, &deliver, &ack] {
        assert_eq!(s.trace_id, job.trace_id, "{} in the job's trace", s.name);
    }
    assert_eq!(call.parent_span_id, job.span_id);
    assert_eq!(publish.parent_span_id, job.span_id);
    assert_eq!(deliver.parent_span_id, publish.span_id, "across NATS");
    assert_eq!(ack.parent_span_id, deliver.span_id);
    assert_eq!(job.attr("job.id"), Some(job_id.as_str()));
    assert_eq!(job.attr("user.id"), Some(user_id.as_str()));
    assert_eq!(publish.attr("messaging.system"), Some("nats"));
    assert_eq!(deliver.attr("event.seq"), Some(seq.as_str()));
    assert_eq!(deliver.attr("sockets"), Some("2"));
    let protocols = deliver.attr("protocols").unwrap_or_default();
    assert!(
        protocols.contains("native-json") && protocols.contains("signalr-json"),
        "{protocols}"
    );
    assert_eq!(
        job.resource.get("service.name").map(String::as_str),
        Some("ziraai-worker")
    );
    assert_eq!(
        deliver.resource.get("service.name").map(String::as_str),
        Some("ziraai-gateway")
    );
    assert_eq!(ack.attr("device.id"), Some("phone"));
}
