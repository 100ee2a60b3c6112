//! What the worker reports about its publishes: an oversized analyzer answer becomes a
//! rejection, PubAck duplicates are counted apart from new events (`/metrics`,
//! `/health`), and the `Publisher` and `ziraai-worker publish` refuse what a gateway
//! could not decode before anything is stored.

use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use serde_json::{Value, json};
use ziraai_common::nats::NOTIFY_MAX_MESSAGE;
use ziraai_e2e::*;
use ziraai_proto::{Envelope, UserId};
use ziraai_worker::{InvalidEvent, PublishError};

fn job(id: &str, analysis: &str, user: &UserId) -> Value {
    json!({"jobId": id, "analysisId": analysis, "userId": user, "imageUrl": "http://127.0.0.1/p.jpg"})
}

/// The last event stored for `user`, decoded, or `None`.
async fn last_event(nats: &NatsServer, user: &UserId) -> Option<(u64, Envelope)> {
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = within("NOTIFY", js.get_stream_no_info("NOTIFY"))
        .await
        .expect("stream");
    match within(
        "last event",
        stream.direct_get_last_for_subject(user.notify_subject()),
    )
    .await
    {
        Ok(m) => Some((
            m.sequence,
            serde_json::from_slice(&m.payload).expect("a JSON envelope"),
        )),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => None,
        Err(e) => panic!("reading NOTIFY: {e}"),
    }
}

/// The value of metric `name` in a Prometheus text body.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn metrics(worker: &TestWorker) -> String {
    let (status, body) = http_get(worker.health, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn oversized_answers_and_results_become_one_rejection_each() {
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker = TestWorker::start(worker_config(&nats, &analyzer, &[])).await;
    let js = async_nats::jetstream::new(nats.client().await);
    // Over the analyzer answer limit (4 MiB), and under it but over one event (64 KiB).
    let (huge, big) = (user("huge"), user("big"));
    submit_job(&js, job("j-huge", "huge-1", &huge)).await;
    submit_job(&js, job("j-big", "big-1", &big)).await;
    let counters = worker.probe.counters.clone();
    wait_until("both jobs failed", || {
        counters.failed.load(std::sync::atomic::Ordering::Relaxed) == 2
    })
    .await;
    for (u, says) in [(&huge, "answer was too large"), (&big, "65536")] {
        let (_, env) = last_event(&nats, u).await.expect("one event");
        assert_eq!(env.kind, "analysis.failed");
        assert_eq!(env.data["error"]["code"], "analysis_rejected");
        let message = env.data["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(
        analyzer.calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "neither retried"
    );
    let events = job_events(&nats).await;
    assert_eq!(events.len(), 2, "one event per job: {events:?}");
    let health = worker.health().await;
    assert_eq!(
        (health["published"].as_u64(), health["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(health["retried"], 0);
}

#[tokio::test]
async fn a_job_whose_event_is_stored_already_counts_as_a_duplicate() {
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker = TestWorker::start(worker_config(&nats, &analyzer, &[])).await;
    let u = user("dup");
    // The event of job "j-old" as if an earlier worker published it, then lost its ack.
    let earlier = Envelope::now("analysis.completed", serde_json::Map::new());
    let stored = within("publish", publisher.publish(&u, &earlier, "job-j-old"))
        .await
        .expect("stored");
    assert!(!stored.duplicate);
    let js = async_nats::jetstream::new(nats.client().await);
    submit_job(&js, job("j-old", "a-old", &u)).await;
    submit_job(&js, job("j-new", "a-new", &u)).await;
    let counters = worker.probe.counters.clone();
    wait_until("both jobs done", || {
        counters
            .completed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 2
    })
    .await;
    let text = metrics(&worker).await;
    assert_eq!(
        metric(&text, "ziraai_worker_events_published_total"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        metric(&text, "ziraai_worker_events_duplicate_total"),
        Some(1),
        "{text}"
    );
    let health = worker.health().await;
    assert_eq!(
        (health["published"].as_u64(), health["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    let events = job_events(&nats).await;
    assert_eq!(events["job-j-old"].len(), 1, "stored once: {events:?}");
    assert_eq!(events["job-j-new"], vec!["analysis.completed".to_owned()]);
    // The duplicate did not replace the earlier event.
    let (seq, _) = last_event(&nats, &u).await.expect("events");
    assert_eq!(seq, stored.seq + 1, "only j-new was added");
}

#[tokio::test]
async fn the_publisher_stores_up_to_the_stream_limit_and_refuses_beyond_it() {
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let u = user("size");
    let sized = |pad: usize| {
        let mut data = serde_json::Map::new();
        data.insert("pad".into(), Value::String("x".repeat(pad)));
        Envelope {
            kind: "a.b".into(),
            data,
            occurred_at: None,
        }
    };
    let size = |pad| {
        ziraai_worker::CheckedEvent::new(&sized(pad), "size-1", publisher.encoding())
            .map(|e| e.size())
    };
    let fits = NOTIFY_MAX_MESSAGE - size(0).expect("small");
    assert_eq!(size(fits).ok(), Some(NOTIFY_MAX_MESSAGE));
    // The server counts body and headers as we do: exactly at the limit is stored.
    let stored = within("publish", publisher.publish(&u, &sized(fits), "size-1"))
        .await
        .expect("an event of exactly max_msg_size is stored");
    let refused = within("publish", publisher.publish(&u, &sized(fits + 1), "size-2")).await;
    assert!(
        matches!(
            refused,
            Err(PublishError::Invalid(InvalidEvent::TooLarge { .. }))
        ),
        "{refused:?}"
    );
    let bad_kind = Envelope::now("Not A Kind", serde_json::Map::new());
    let refused = within("publish", publisher.publish(&u, &bad_kind, "kind-1")).await;
    assert!(
        matches!(
            refused,
            Err(PublishError::Invalid(InvalidEvent::Envelope(_)))
        ),
        "{refused:?}"
    );
    let (last, _) = last_event(&nats, &u).await.expect("one event");
    assert_eq!(last, stored.seq, "nothing refused was stored");
    // The server's own accounting, which the check mirrors: headers count. Header block
    // "NATS/1.0\r\n" + "Nats-Msg-Id: raw-N\r\n" + "\r\n" is 32 bytes.
    let js = async_nats::jetstream::new(nats.client().await);
    let raw = |id: &str, body_len: usize| {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id);
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(vec![b'x'; body_len].into())
            .headers(h);
        let js = js.clone();
        let subject = u.notify_subject();
        async move {
            match js.send_publish(subject, msg).await {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
    };
    within("raw at the limit", raw("raw-1", NOTIFY_MAX_MESSAGE - 32))
        .await
        .expect("stored");
    let over = within("raw over the limit", raw("raw-2", NOTIFY_MAX_MESSAGE - 31)).await;
    assert!(over.is_err(), "the server refuses one byte more");
}

/// Runs `ziraai-worker publish ARGS` against `nats`: exit success, stdout, stderr.
async fn publish_cli(nats: &NatsServer, args: &[&str]) -> (bool, String, String) {
    let out = within_for(
        Duration::from_secs(30),
        "ziraai-worker publish",
        tokio::process::Command::new(bin_path("ziraai-worker"))
            .arg("publish")
            .args(args)
            // Only what a user's shell would give it (no test variables to warn about).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ZIRAAI_NATS_URL", nats.url())
            .env("ZIRAAI_CONFIG_DIR", "")
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[tokio::test]
async fn publish_prints_the_sequence_or_says_duplicate_and_refuses_bad_input() {
    let nats = NatsServer::start().await;
    let u = user("cli");
    let a = format!("cli-{}", nuid::next());
    let args = [
        "--user",
        u.as_str(),
        "--analysis",
        &a,
        "--result",
        r#"{"disease":"none"}"#,
    ];
    let (ok, first, err) = publish_cli(&nats, &args).await;
    assert!(ok, "{err}");
    assert_eq!(err, "", "nothing on stderr at the default log level");
    let seq: u64 = first
        .trim_end()
        .parse()
        .unwrap_or_else(|_| panic!("a sequence: {first:?}"));
    assert_eq!(first, format!("{seq}\n"), "exactly one line");
    let (ok, again, err) = publish_cli(&nats, &args).await;
    assert!(ok, "{err}");
    assert_eq!(again, format!("duplicate: stored earlier as {seq}\n"));
    for (result, says) in [("[1,2]", "must be a JSON object"), ("nope", "is not JSON")] {
        let args = [
            "--user",
            u.as_str(),
            "--analysis",
            "other",
            "--result",
            result,
        ];
        let (ok, out, err) = publish_cli(&nats, &args).await;
        assert!(!ok && out.is_empty(), "{result}: {out:?}");
        assert!(err.contains(says), "{result}: {err}");
    }
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(NOTIFY_MAX_MESSAGE));
    let args = ["--user", u.as_str(), "--analysis", "big", "--result", &big];
    let (ok, out, err) = publish_cli(&nats, &args).await;
    assert!(!ok && out.is_empty(), "{out:?}");
    assert!(err.contains("NOTIFY stream stores at most 65536"), "{err}");
    let (last, _) = last_event(&nats, &u).await.expect("the first event");
    assert_eq!(last, seq, "nothing else was stored");
}
