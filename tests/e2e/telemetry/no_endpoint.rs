//! Without any `OTEL_*` endpoint nothing is exported, but trace context still passes
//! through: a worker process continues a job's `traceparent` and injects its own
//! publish's context into the event it stores, so a gateway (or anything else) that
//! does export puts its spans in the platform's trace.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use serde_json::json;
use ziraai_e2e::*;

use super::producer_traceparent;

#[tokio::test]
async fn a_worker_without_an_endpoint_still_carries_the_jobs_trace_into_the_event() {
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let _worker = ServiceProcess::worker(&nats, &analyzer.url, &[]).await;
    let js = jetstream::new(nats.client().await);
    let u = user("untraced");
    let (traceparent, trace_id, _) = producer_traceparent();
    let job_id = format!("t-{}", nuid::next());
    let job = json!({"jobId": job_id, "analysisId": "a-1", "userId": u.as_str(), "imageUrl": "http://127.0.0.1/p.jpg"});
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", job_id.as_str());
    h.insert("traceparent", traceparent.as_str());
    let msg = PublishMessage::build()
        .payload(serde_json::to_vec(&job).expect("JSON").into())
        .headers(h);
    within("job stored", async {
        js.send_publish("jobs.analysis", msg)
            .await
            .expect("sent")
            .await
            .expect("stored")
    })
    .await;

    let notify = within("NOTIFY", js.get_stream_no_info("NOTIFY"))
        .await
        .expect("stream");
    let stored = within("the job's event", async {
        loop {
            if let Ok(m) = notify
                .direct_get_next_for_subject(u.notify_subject(), None)
                .await
            {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let carried = stored
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .expect("the event carries a traceparent although nothing is exported");
    let parts: Vec<&str> = carried.split('-').collect();
    assert_eq!(parts.len(), 4, "{carried}");
    assert_eq!(
        parts[1], trace_id,
        "the job's trace continues into the event"
    );
    assert_ne!(
        carried, traceparent,
        "the worker's own publish span is the parent"
    );
}
