//! SIGKILL of a `ziraai-worker run` process with jobs in flight: a new process finishes
//! them, and every job ends with exactly one event of the kind its analysis decided.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use ziraai_e2e::*;

const JOBS: usize = 30;
const MAX_IN_FLIGHT: u64 = 4;

/// Jobs finished (published and acknowledged) according to a worker's `/health`.
fn done(health: &Value) -> u64 {
    health["completed"].as_u64().unwrap_or(0) + health["failed"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn sigkill_of_the_worker_process_mid_job_ends_with_one_event_per_job() {
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour {
        delay_ms: 20.into(),
        ..Behaviour::default()
    })
    .await;
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let vars = [
        ("ZIRAAI_WORKER_ACK_WAIT", "3s"),
        ("ZIRAAI_WORKER_MAX_IN_FLIGHT", max_in_flight.as_str()),
    ];
    let mut first = ServiceProcess::worker(&nats, &analyzer.url, &vars).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("sigkill");
    let ids: Vec<String> = (0..JOBS)
        .map(|i| format!("p{i}-{}", nuid::next()))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        // Every fifth job is one the analyzer refuses: it must end as analysis.failed.
        let analysis = if i % 5 == 0 {
            format!("bad-{i}")
        } else {
            format!("a-{i}")
        };
        submit_job(
            &js,
            json!({"jobId": id, "analysisId": analysis, "userId": u.as_str(), "imageUrl": "http://127.0.0.1/p.jpg"}),
        )
        .await;
    }
    within("some jobs done", async {
        while done(&first.health().await) < 8 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Hold every further analysis: once all slots wait in the analyzer, nothing is
    // between analysis and acknowledgement, so the counters read now are final.
    let b = analyzer.behaviour.clone();
    b.hold.store(true, Ordering::SeqCst);
    wait_until("every slot held in the analyzer", || {
        b.held.load(Ordering::SeqCst) == MAX_IN_FLIGHT
    })
    .await;
    let before = first.health().await;
    assert_eq!(before["inFlight"], MAX_IN_FLIGHT, "{before}");
    let done_first = done(&before);
    assert!(done_first < JOBS as u64 - MAX_IN_FLIGHT, "{before}");
    first.sigkill();
    let status = first.wait_exit(STEP).await;
    assert!(!status.success(), "killed: {status}");
    b.hold.store(false, Ordering::SeqCst);

    let second = ServiceProcess::worker(&nats, &analyzer.url, &vars).await;
    let want = JOBS as u64 - done_first;
    within_for(
        Duration::from_secs(20),
        "the new worker finishes the rest",
        async {
            while done(&second.health().await) < want {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let after = second.health().await;
    assert_eq!(
        done(&after),
        want,
        "each job the first did not finish, once: {after}"
    );

    // The workers' own counts: each job's event stored once over both processes, and
    // none published twice (the held jobs had not been published before the kill).
    let (c1, c2) = (
        PublishCounts::from_health(&before),
        PublishCounts::from_health(&after),
    );
    assert_eq!(c1.published + c2.published, JOBS as u64, "{c1:?} {c2:?}");
    assert_eq!(c1.duplicates + c2.duplicates, 0, "{c1:?} {c2:?}");

    let events = job_events(&nats).await;
    for id in &ids {
        let kinds = events.get(&format!("job-{id}"));
        let want = analyzer.expected_kind(id).expect("analyzed");
        assert_eq!(kinds, Some(&vec![want.to_owned()]), "job {id}");
    }
    assert_eq!(events.len(), JOBS, "no event for anything else");
    println!(
        "worker sigkill: {done_first} jobs done before the kill, {MAX_IN_FLIGHT} in flight, {want} by the new process"
    );
}
