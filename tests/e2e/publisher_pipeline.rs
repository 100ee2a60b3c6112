//! Pipelined publishing (`Publisher::send`, `Pipeline`) against the pinned nats-server:
//! every event stored once and in the order sent, a resend recognised by its
//! `Nats-Msg-Id`, and the events in flight across a server restart retried until
//! stored, none twice.

use std::time::Duration;

use serde_json::json;
use ziraai_e2e::*;
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};
use ziraai_proto::{PayloadEncoding, UserId};
use ziraai_worker::{CheckedEvent, Pipeline, Published, Publisher};

/// `n` checked events round-robin over `users`, with ids unique to this test.
fn events(users: &[UserId], n: usize) -> Vec<(UserId, CheckedEvent)> {
    let run = nuid::next();
    (0..n)
        .map(|i| {
            let user = users[i % users.len()].clone();
            let outcome = AnalysisOutcome::completed(
                AnalysisId::Text(format!("{run}-{i}")),
                user.clone(),
                json!({"n": i}),
            );
            let event = CheckedEvent::new(
                &outcome.to_envelope(),
                &outcome.event_id(),
                PayloadEncoding::Json,
            )
            .expect("a valid event");
            (user, event)
        })
        .collect()
}

/// Pushes every event through a pipeline of `window`; the outcomes in push order.
async fn pipelined(
    publisher: &Publisher,
    window: usize,
    events: &[(UserId, CheckedEvent)],
) -> Vec<Published> {
    let mut pipeline = Pipeline::new(publisher.clone(), window);
    let mut outcomes = Vec::with_capacity(events.len());
    for (user, event) in events {
        if let Some(outcome) = pipeline.push(user, event).await {
            outcomes.push(outcome.expect("published"));
        }
        assert!(
            pipeline.in_flight() <= window,
            "the window bounds the pipeline"
        );
    }
    for outcome in pipeline.finish().await {
        outcomes.push(outcome.expect("published"));
    }
    assert_eq!(outcomes.len(), events.len(), "one outcome per event");
    outcomes
}

#[tokio::test]
async fn a_pipeline_stores_every_event_once_in_order_and_knows_a_resend() {
    const N: usize = 3_000;
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let users: Vec<UserId> = (0..7).map(|_| user("pipe")).collect();
    let events = events(&users, N);

    let first = within_for(
        Duration::from_secs(60),
        "pipelined publishes",
        pipelined(&publisher, 64, &events),
    )
    .await;
    assert!(first.iter().all(|p| !p.duplicate), "all new");
    assert!(
        first.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
        "stored in the order sent, one after another"
    );
    let (ids, messages) = stream_msg_ids(nats.client().await, "NOTIFY").await;
    assert_eq!(messages as usize, N);
    assert!(ids.values().all(|&n| n == 1), "each event stored once");

    // The same events again (a producer re-run): recognised by their ids.
    let again = within_for(
        Duration::from_secs(60),
        "resent",
        pipelined(&publisher, 256, &events),
    )
    .await;
    assert!(
        again.iter().all(|p| p.duplicate),
        "every resend a duplicate"
    );
    let first_seqs: Vec<u64> = first.iter().map(|p| p.seq).collect();
    let again_seqs: Vec<u64> = again.iter().map(|p| p.seq).collect();
    assert_eq!(again_seqs, first_seqs, "each at the sequence stored first");
    let (_, messages) = stream_msg_ids(nats.client().await, "NOTIFY").await;
    assert_eq!(messages as usize, N, "nothing added");
}

#[tokio::test]
async fn a_pending_publish_is_awaited_later_with_the_same_outcome_as_publish() {
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let u = user("pending");
    let outcome = AnalysisOutcome::completed(AnalysisId::Text("p-1".into()), u.clone(), json!(1));
    let envelope = outcome.to_envelope();
    let a = within("send", publisher.send(&u, &envelope, &outcome.event_id()))
        .await
        .expect("valid");
    let b = within("send", publisher.send(&u, &envelope, &outcome.event_id()))
        .await
        .expect("valid");
    let (b, a) = (
        within("ack b", b.acked()).await.expect("stored"),
        within("ack a", a.acked()).await.expect("stored"),
    );
    assert!(!a.duplicate && b.duplicate, "sent first, stored once");
    assert_eq!(a.seq, b.seq);
    // The same checks as `publish`, before anything is sent.
    let mut bad = envelope.clone();
    bad.kind = "Analysis.Done".into();
    assert!(matches!(
        publisher.send(&u, &bad, "e-bad").await,
        Err(ziraai_worker::PublishError::Invalid(_))
    ));
}

#[tokio::test]
async fn events_in_flight_across_a_server_restart_are_retried_and_stored_once() {
    const N: usize = 600;
    let mut nats = NatsServer::start().await;
    // A short PubAck wait, so acks lost with the server are retried within the test.
    let client = nats.client().await;
    within(
        "apply streams",
        ziraai_common::nats::apply_notify_streams(&async_nats::jetstream::new(client.clone()), 1),
    )
    .await
    .expect("streams applied");
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client);
    let publisher = Publisher::new(js);
    let users: Vec<UserId> = (0..5).map(|_| user("restart")).collect();
    let events = events(&users, N);
    // The publisher stops at a third and lets the server go down before going on.
    let (down_tx, mut down_rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(1);

    let publish = async move {
        let mut pipeline = Pipeline::new(publisher, 32);
        let mut outcomes = Vec::with_capacity(N);
        for (i, (user, event)) in events.iter().enumerate() {
            if i == N / 3 {
                let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
                down_tx.send(stopped_tx).await.expect("restarter waits");
                stopped.await.expect("server stopped");
            }
            if let Some(outcome) = pipeline.push(user, event).await {
                outcomes.push(outcome);
            }
        }
        outcomes.extend(pipeline.finish().await);
        outcomes
    };
    let restart = async {
        let stopped = down_rx.recv().await.expect("a third pushed");
        nats.stop().await;
        let _ = stopped.send(());
        // An outage longer than the PubAck wait: the acks in flight time out.
        tokio::time::sleep(Duration::from_secs(2)).await;
        nats.restart().await;
    };
    let (outcomes, ()) = within_for(
        Duration::from_secs(60),
        "publishing across a restart",
        async { tokio::join!(publish, restart) },
    )
    .await;
    let published: Vec<Published> = outcomes
        .into_iter()
        .map(|o| o.expect("every event published"))
        .collect();
    assert_eq!(published.len(), N);
    let resent = published.iter().filter(|p| p.duplicate).count();
    println!("{N} events across a restart: {resent} acked as duplicates of a lost ack");
    let (ids, messages) = stream_msg_ids(nats.client().await, "NOTIFY").await;
    assert_eq!(ids.len(), N, "every event stored");
    assert!(ids.values().all(|&n| n == 1), "none twice");
    assert_eq!(messages as usize, N);
    let mut seqs: Vec<u64> = published.iter().map(|p| p.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N, "each acked at its own sequence");
}
