//! The worker against a real nats-server and a real HTTP analyzer: exactly one event
//! per job through analyzer failures, crashes, broker restarts, poison jobs and stops.
//! Events are counted twice: in the stream (which de-duplicates by `Nats-Msg-Id`), and
//! by the worker itself (`published`/`duplicates` in its `/health`), so a worker that
//! publishes a job twice shows even though the stream stored it once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use ziraai_e2e::*;

/// A job for `user`; analysis ids starting with `bad-` are refused by the analyzer.
fn job(id: &str, analysis: &str, user: &str) -> Value {
    json!({"jobId": id, "analysisId": analysis, "userId": user, "imageUrl": "http://127.0.0.1/p.jpg", "crop": "wheat"})
}

/// Waits until every id in `ids` has an event, then returns them all.
async fn until_events(
    nats: &NatsServer,
    ids: &[String],
    limit: Duration,
) -> HashMap<String, Vec<String>> {
    within_for(limit, "an event for every job", async {
        loop {
            let events = job_events(nats).await;
            if ids
                .iter()
                .all(|id| events.contains_key(&format!("job-{id}")))
            {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Exactly one event per job, of the kind the analyzer's answers decided, and none else.
fn assert_exactly_one(
    events: &HashMap<String, Vec<String>>,
    ids: &[String],
    analyzer: &TestAnalyzer,
) {
    for id in ids {
        let kinds = &events[&format!("job-{id}")];
        let want = analyzer
            .expected_kind(id)
            .unwrap_or_else(|| panic!("job {id} never reached the analyzer"));
        assert_eq!(kinds, &vec![want.to_owned()], "job {id}");
    }
    assert_eq!(events.len(), ids.len(), "no event for anything else");
}

async fn jobs_left(nats: &NatsServer) -> u64 {
    let js = async_nats::jetstream::new(nats.client().await);
    let s = within("JOBS", js.get_stream("JOBS")).await.expect("stream");
    s.cached_info().state.messages
}

/// Waits until every job is acknowledged (JOBS empty) and `worker` runs none, so its
/// counters are final; returns its own count of publishes.
async fn settled(nats: &NatsServer, worker: &TestWorker) -> PublishCounts {
    within_for(
        Duration::from_secs(20),
        "queue drained, worker idle",
        async {
            while jobs_left(nats).await > 0 || worker.health().await["inFlight"] != 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    PublishCounts::from_health(&worker.health().await)
}

/// Without a crash or a broker restart, the worker stores each job's event once and
/// never publishes one a second time.
fn assert_published_once_each(counts: PublishCounts, jobs: usize) {
    assert_eq!(
        counts,
        PublishCounts {
            published: jobs as u64,
            duplicates: 0
        },
        "the worker's own count of its publishes"
    );
}

#[tokio::test]
async fn hundreds_of_jobs_through_a_flaky_analyzer_end_with_exactly_one_event_each() {
    const N: usize = 300;
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour {
        fail_every: 3,
        ..Behaviour::default()
    })
    .await;
    let worker = TestWorker::start(worker_config(&nats, &analyzer, &[])).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("farm");
    let ids: Vec<String> = (0..N).map(|i| format!("j{i}-{}", nuid::next())).collect();
    for (i, id) in ids.iter().enumerate() {
        let analysis = if i % 10 == 0 {
            format!("bad-{i}")
        } else {
            format!("a-{i}")
        };
        submit_job(&js, job(id, &analysis, u.as_str())).await;
    }
    let events = until_events(&nats, &ids, Duration::from_secs(60)).await;
    assert_exactly_one(&events, &ids, &analyzer);
    let refused = ids
        .iter()
        .filter(|id| analyzer.expected_kind(id) == Some("analysis.failed"))
        .count();
    assert_eq!(refused, N / 10, "the analyzer refused every tenth job");
    let h = worker.health().await;
    println!(
        "worker: {N} jobs, {} analyzer calls, {} retried, {} completed, {} failed",
        analyzer.calls.load(Ordering::SeqCst),
        h["retried"],
        h["completed"],
        h["failed"]
    );
    assert!(
        h["retried"].as_u64().unwrap_or(0) > 0,
        "a third of the calls failed: {h}"
    );
    assert_published_once_each(settled(&nats, &worker).await, N);
}

#[tokio::test]
async fn a_worker_killed_mid_flight_and_restarted_publishes_one_event_per_job() {
    const N: usize = 60;
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour {
        delay_ms: 50.into(),
        ..Behaviour::default()
    })
    .await;
    let cfg = || worker_config(&nats, &analyzer, &[("ZIRAAI_WORKER_ACK_WAIT", "1s")]);
    let first = TestWorker::start(cfg()).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("crash");
    let ids: Vec<String> = (0..N).map(|i| format!("k{i}-{}", nuid::next())).collect();
    for (i, id) in ids.iter().enumerate() {
        submit_job(&js, job(id, &format!("a-{i}"), u.as_str())).await;
    }
    let counters = first.probe.counters.clone();
    wait_until("some jobs done and some in flight", || {
        counters.completed.load(Ordering::Relaxed) >= 10
            && counters.in_flight.load(Ordering::Relaxed) > 0
    })
    .await;
    first.kill();
    // The killed worker's counters stay readable in-process: the events it stored
    // (PubAcks that were not duplicates).
    let done_first = counters.published.load(Ordering::Relaxed);
    let second = TestWorker::start(cfg()).await;
    let events = until_events(&nats, &ids, Duration::from_secs(60)).await;
    assert_exactly_one(&events, &ids, &analyzer);
    let c = settled(&nats, &second).await;
    println!("worker crash: {done_first} events stored before, then {c:?}");
    assert!(
        done_first + c.published <= N as u64,
        "at most one stored event per job over both workers: {done_first} + {c:?}"
    );
    // Only a job in flight at the crash can have had its event stored already.
    let max_in_flight = ziraai_common::config::DEFAULT_MAX_IN_FLIGHT as u64;
    assert!(c.duplicates <= max_in_flight, "{c:?}");
}

#[tokio::test]
async fn jobs_wait_while_the_analyzer_is_down_and_the_breaker_opens_and_closes() {
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    analyzer.behaviour.down.store(true, Ordering::SeqCst);
    let worker = TestWorker::start(worker_config(
        &nats,
        &analyzer,
        &[
            ("ZIRAAI_BREAKER_THRESHOLD", "3"),
            ("ZIRAAI_BREAKER_COOLDOWN", "300ms"),
            ("ZIRAAI_WORKER_MAX_ATTEMPTS", "1000"),
        ],
    ))
    .await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("down");
    let ids: Vec<String> = (0..10).map(|i| format!("d{i}-{}", nuid::next())).collect();
    for (i, id) in ids.iter().enumerate() {
        submit_job(&js, job(id, &format!("a-{i}"), u.as_str())).await;
    }
    let breaker = worker.probe.breaker.clone();
    wait_until("breaker open", || breaker.times_opened() >= 1).await;
    let h = worker.health().await;
    assert_ne!(h["breaker"]["state"], "closed", "{h}");
    assert!(
        h["missing"].to_string().contains("circuit breaker"),
        "not ready while open: {h}"
    );
    assert!(
        job_events(&nats).await.is_empty(),
        "no job failed because of the outage"
    );

    analyzer.behaviour.down.store(false, Ordering::SeqCst);
    let events = until_events(&nats, &ids, Duration::from_secs(30)).await;
    assert_exactly_one(&events, &ids, &analyzer);
    wait_until("breaker closed", || {
        breaker.state() == ziraai_worker::breaker::State::Closed
    })
    .await;
    assert_eq!(worker.health().await["breaker"]["state"], "closed");
    assert_published_once_each(settled(&nats, &worker).await, ids.len());
}

#[tokio::test]
async fn a_broker_restart_mid_run_loses_no_job_and_doubles_no_event() {
    const N: usize = 100;
    let mut nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour {
        delay_ms: 20.into(),
        ..Behaviour::default()
    })
    .await;
    let worker = TestWorker::start(worker_config(
        &nats,
        &analyzer,
        &[("ZIRAAI_WORKER_ACK_WAIT", "2s")],
    ))
    .await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("restart");
    let ids: Vec<String> = (0..N).map(|i| format!("r{i}-{}", nuid::next())).collect();
    for (i, id) in ids.iter().enumerate() {
        submit_job(&js, job(id, &format!("a-{i}"), u.as_str())).await;
    }
    let counters = worker.probe.counters.clone();
    wait_until("a third done", || {
        counters.completed.load(Ordering::Relaxed) >= (N / 3) as u64
    })
    .await;
    nats.restart().await;
    let events = until_events(&nats, &ids, Duration::from_secs(60)).await;
    assert_exactly_one(&events, &ids, &analyzer);
    let c = settled(&nats, &worker).await;
    println!("worker across a broker restart: {c:?}");
    assert!(
        c.published <= N as u64,
        "at most one stored event per job: {c:?}"
    );
    assert!(
        c.published + c.duplicates >= N as u64,
        "every job's publish acknowledged: {c:?}"
    );
    // A PubAck or job ack lost in the restart repeats that job's publish (de-duplicated):
    // at most twice for each job in flight then.
    let max_in_flight = ziraai_common::config::DEFAULT_MAX_IN_FLIGHT as u64;
    assert!(c.duplicates <= 2 * max_in_flight, "{c:?}");
}

#[tokio::test]
async fn poison_jobs_are_terminated_reported_and_do_not_stall_the_others() {
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker = TestWorker::start(worker_config(&nats, &analyzer, &[])).await;
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let u = user("poison");
    for body in [
        &b"not json"[..],
        br#"{"jobId":"p1","analysisId":1}"#,
        br#"{"jobId":"p2","analysisId":1,"userId":"a.>"}"#,
    ] {
        within("poison", async {
            js.publish("jobs.analysis", bytes::Bytes::from_static(body))
                .await
                .expect("sent")
                .await
                .expect("stored")
        })
        .await;
    }
    let ids: Vec<String> = (0..5).map(|i| format!("g{i}-{}", nuid::next())).collect();
    for id in &ids {
        submit_job(&js, job(id, "a", u.as_str())).await;
    }
    let events = until_events(&nats, &ids, Duration::from_secs(30)).await;
    assert_exactly_one(&events, &ids, &analyzer);
    let counters = worker.probe.counters.clone();
    wait_until("poison counted", || {
        counters.poison.load(Ordering::Relaxed) == 3
    })
    .await;
    let advisories = within("ADVISORIES", js.get_stream("ADVISORIES"))
        .await
        .expect("stream");
    assert_eq!(
        advisories.cached_info().state.messages,
        3,
        "one advisory per poison job"
    );
    let mut reasons = Vec::new();
    for seq in 1..=3 {
        let m = within(
            "advisory",
            advisories.direct_get_next_for_subject("advisories.jobs.poison", Some(seq)),
        )
        .await
        .expect("stored");
        let v: Value = serde_json::from_slice(&m.payload).expect("JSON");
        reasons.push(v["reason"].as_str().unwrap_or_default().to_owned());
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "job has no userId",
            "job is not a JSON object",
            "job's userId contains '.'; only A-Z, a-z, 0-9, '_' and '-' are allowed",
        ]
    );
    within_for(Duration::from_secs(10), "queue drained", async {
        while jobs_left(&nats).await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_graceful_stop_hands_back_in_flight_jobs() {
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour {
        delay_ms: 3000.into(),
        ..Behaviour::default()
    })
    .await;
    let cfg = |grace: &'static str| {
        worker_config(
            &nats,
            &analyzer,
            &[
                ("ZIRAAI_WORKER_SHUTDOWN_GRACE", grace),
                ("ZIRAAI_WORKER_MAX_IN_FLIGHT", "4"),
            ],
        )
    };
    let first = TestWorker::start(cfg("200ms")).await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("stop");
    let ids: Vec<String> = (0..4).map(|i| format!("s{i}-{}", nuid::next())).collect();
    for id in &ids {
        submit_job(&js, job(id, "a", u.as_str())).await;
    }
    let counters = first.probe.counters.clone();
    wait_until("four in flight", || {
        counters.in_flight.load(Ordering::Relaxed) == 4
    })
    .await;
    assert_eq!(
        PublishCounts::from_health(&first.health().await),
        PublishCounts {
            published: 0,
            duplicates: 0
        },
        "nothing published while the analysis runs"
    );
    let started = std::time::Instant::now();
    first.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped within the grace period, not after the analysis"
    );
    assert_eq!(counters.handed_back.load(Ordering::Relaxed), 4);
    assert!(job_events(&nats).await.is_empty());

    analyzer.behaviour.delay_ms.store(0, Ordering::SeqCst);
    let second = TestWorker::start(cfg("5s")).await;
    let events = until_events(&nats, &ids, Duration::from_secs(20)).await;
    assert_exactly_one(&events, &ids, &analyzer);
    assert_published_once_each(settled(&nats, &second).await, ids.len());
}
