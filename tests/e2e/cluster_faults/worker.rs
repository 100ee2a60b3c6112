//! The worker through a kill of the JOBS stream's leader: jobs keep being submitted
//! (each with its job id as `Nats-Msg-Id`, retried like the platform would) and every
//! job ends as exactly one event in NOTIFY.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use ziraai_e2e::*;

use super::*;

/// Jobs submitted in all.
const JOBS: usize = 60;

/// Submits `job` until the stream stores it (the same job id each time).
async fn submit_retrying(js: &async_nats::jetstream::Context, job: &serde_json::Value) {
    within_for(Duration::from_secs(40), "job stored", async {
        while ziraai_worker::demo::submit_job(js, job).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_worker_publishes_exactly_one_event_per_job_through_a_node_kill() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start_with_auth(3).await;
    provision(&cluster).await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let mut vars = service_vars(&cluster, &cluster.urls(), "worker");
    vars.extend(
        [
            ("ZIRAAI_WORKER_LISTEN", "127.0.0.1:0"),
            ("ZIRAAI_ANALYZER_URL", analyzer.url.as_str()),
            ("ZIRAAI_ANALYZER_TIMEOUT", "5s"),
            ("ZIRAAI_WORKER_RETRY_BASE", "50ms"),
            ("ZIRAAI_WORKER_RETRY_MAX", "400ms"),
            ("ZIRAAI_WORKER_ACK_WAIT", "4s"),
            ("ZIRAAI_WORKER_SHUTDOWN_GRACE", "5s"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let worker = ServiceProcess::worker_with_vars(vars).await;
    let submitter = async_nats::jetstream::new(cluster.client_as("platform").await);
    let u = user("jobs");
    let submitted = Arc::new(AtomicUsize::new(0));
    let (js, count, who) = (submitter.clone(), submitted.clone(), u.clone());
    let submitting = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        for n in 0..JOBS {
            pace.tick().await;
            let job = json!({
                "jobId": format!("job-{n}-{}", nuid::next()),
                "analysisId": format!("a-{n}"),
                "userId": who,
                "imageUrl": format!("https://example.invalid/{n}.jpg"),
            });
            submit_retrying(&js, &job).await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    wait_until("a third of the jobs submitted", || {
        submitted.load(Ordering::SeqCst) >= JOBS / 3
    })
    .await;
    let leader = cluster.stream_leader("JOBS").await;
    let killed_at = Instant::now();
    cluster.kill(leader).await;
    within_for(Duration::from_secs(60), "every job submitted", submitting)
        .await
        .expect("submitter ran");
    let submit_recovery = killed_at.elapsed();
    cluster.restart(leader).await;

    let ops = cluster.client().await;
    let (ids, messages) = within_for(Duration::from_secs(40), "an event per job", async {
        loop {
            let (ids, messages) = stream_msg_ids(ops.clone(), "NOTIFY").await;
            if ids.len() >= JOBS {
                return (ids, messages);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(ids.len(), JOBS, "one event id per job: {ids:?}");
    assert!(ids.values().all(|n| *n == 1), "each stored once: {ids:?}");
    assert_eq!(messages as usize, JOBS, "nothing else in NOTIFY");
    let health = worker.health().await;
    let counts = PublishCounts::from_health(&health);
    // A job whose ack was lost in the election is done again: its event is not.
    assert_eq!(counts.published, JOBS as u64, "{health}");
    assert_eq!(
        health["completed"].as_u64(),
        Some(counts.published + counts.duplicates),
        "{health}"
    );
    eprintln!(
        "FIGURES worker: jobs={JOBS} kills=1 (n{} = JOBS leader) events={} lost=0 \
         duplicates_in_stream=0 stored_acks={} deduplicated_acks={} \
         all_submitted_after_kill={submit_recovery:?} wall={:?}",
        leader + 1,
        ids.len(),
        counts.published,
        counts.duplicates,
        started.elapsed(),
    );
}
