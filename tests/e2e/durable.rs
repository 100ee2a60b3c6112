//! Durable delivery: offline backlog, resume on another gateway after a crash, `since`
//! replay racing live publishing, broker restarts, gap filling, retention gaps.

use serde_json::json;
use ziraai_e2e::*;
use ziraai_proto::ServerFrame;

fn resumed_after(w: &ServerFrame) -> u64 {
    match w {
        ServerFrame::Welcome { resumed_after, .. } => *resumed_after,
        other => panic!("not a welcome: {other:?}"),
    }
}

#[tokio::test]
async fn an_offline_device_gets_its_backlog_in_order_from_its_cursor() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("offline");
    let (mut c, w) = WsClient::resume(&gw.ws_url(), &u, "deviceId=phone").await;
    assert_eq!(
        resumed_after(&w),
        0,
        "a device without a cursor starts live"
    );
    let first = publish_many(&publisher, &u, 2).await;
    assert_eq!(c.seqs(2).await, first);
    c.ack(first[1]).await;
    wait_for_cursor(&nats, &u, "phone", first[1]).await;
    c.close().await;

    let offline = publish_many(&publisher, &u, 5).await;
    let (mut c, w) = WsClient::resume(&gw.ws_url(), &u, "deviceId=phone").await;
    assert_eq!(resumed_after(&w), first[1]);
    assert_eq!(
        c.seqs(5).await,
        offline,
        "every event published while offline, in order"
    );
    // Then live, with nothing repeated in between.
    let (_, live) = publish_completed(&publisher, &u, json!("live")).await;
    assert_eq!(c.event().await.seq, live.seq);
}

#[tokio::test]
async fn a_device_resumes_on_another_gateway_after_a_crash_with_exactly_the_unacked_events() {
    let nats = NatsServer::start().await;
    let (gw_a, gw_b) = (
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    );
    let publisher = nats.publisher().await;
    let u = user("crash");
    let (mut c, _) = WsClient::resume(&gw_a.ws_url(), &u, "deviceId=tablet").await;
    let seen = publish_many(&publisher, &u, 6).await;
    assert_eq!(c.seqs(6).await, seen);
    c.ack(seen[2]).await;
    wait_for_cursor(&nats, &u, "tablet", seen[2]).await;

    gw_a.kill();
    let after_crash = publish_many(&publisher, &u, 4).await;
    let (mut c, w) = WsClient::resume(&gw_b.ws_url(), &u, "deviceId=tablet").await;
    assert_eq!(resumed_after(&w), seen[2]);
    let expected: Vec<u64> = seen[3..].iter().chain(&after_crash).copied().collect();
    assert_eq!(
        c.seqs(expected.len()).await,
        expected,
        "unacknowledged and new, in order"
    );
    let (_, next) = publish_completed(&publisher, &u, json!("next")).await;
    assert_eq!(c.event().await.seq, next.seq, "and nothing else");
}

#[tokio::test]
async fn since_replay_racing_live_publishing_has_no_gap_and_no_repeat() {
    const BEFORE: usize = 1500;
    const DURING: usize = 1500;
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("race");
    let mut all = publish_many(&publisher, &u, BEFORE).await;
    let (p, uu) = (publisher.clone(), u.clone());
    let live = tokio::spawn(async move { publish_many(&p, &uu, DURING).await });
    let (mut c, w) = WsClient::resume(&gw.ws_url(), &u, "since=0").await;
    assert_eq!(resumed_after(&w), 0);
    let got = c.seqs(BEFORE + DURING).await;
    all.extend(within("live publisher", live).await.expect("published"));
    assert_eq!(got.len(), all.len());
    assert_eq!(got, all, "every sequence once, in order");
    println!(
        "since replay: {} events received in order, none missing, none repeated",
        got.len()
    );
}

#[tokio::test]
async fn clients_end_with_every_event_across_a_broker_restart() {
    const N: usize = 200;
    let mut nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("restart");
    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=d1").await;
    let (p, uu) = (publisher.clone(), u.clone());
    let producer = tokio::spawn(async move { publish_many(&p, &uu, N).await });
    let mut got = c.seqs(N / 4).await;
    nats.restart().await;
    let published = within("producer", producer).await.expect("all published");
    while got.len() < N {
        got.push(c.event().await.seq);
    }
    assert_eq!(got, published, "in order, nothing lost, nothing repeated");
}

#[tokio::test]
async fn a_live_event_revealing_a_missed_one_triggers_a_fetch() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("gap");
    let mut c = WsClient::open(&gw.ws_url(), &u).await;
    let (_, first) = publish_completed(&publisher, &u, json!(1)).await;
    assert_eq!(c.event().await.seq, first.seq);

    // Deterministic miss: point the stream's RePublish elsewhere for two events, as if
    // the gateway's subscription had dropped them, then restore it.
    let republish_to = |dest: &str| {
        let mut cfg = ziraai_common::nats::notify_stream_config().expect("definition");
        if let Some(rp) = cfg.republish.as_mut() {
            rp.destination = dest.to_owned();
        }
        cfg
    };
    within(
        "redirect",
        js.update_stream(republish_to("elsewhere.{{wildcard(1)}}")),
    )
    .await
    .expect("updated");
    let missed = publish_many(&publisher, &u, 2).await;
    within(
        "restore",
        js.update_stream(republish_to("live.{{wildcard(1)}}")),
    )
    .await
    .expect("updated");
    let (_, next) = publish_completed(&publisher, &u, json!(4)).await;

    let expected: Vec<u64> = missed.iter().copied().chain([next.seq]).collect();
    assert_eq!(
        c.seqs(3).await,
        expected,
        "the missed events first, then the live one"
    );
    assert_eq!(gw.health().await["delivery"]["gapsDetected"], 1);
}

#[tokio::test]
async fn events_removed_by_retention_are_reported_as_a_gap() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let js = async_nats::jetstream::new(nats.client().await);
    let u = user("expired");
    let seqs = publish_many(&publisher, &u, 5).await;
    // Retention removes the oldest messages: purge everything before the fourth.
    let stream = within("stream", js.get_stream("NOTIFY"))
        .await
        .expect("exists");
    within(
        "purge",
        std::future::IntoFuture::into_future(stream.purge().sequence(seqs[3])),
    )
    .await
    .expect("purged");

    let (mut c, w) = WsClient::resume(&gw.ws_url(), &u, &format!("since={}", seqs[0])).await;
    match w {
        ServerFrame::Welcome {
            gap,
            oldest_available,
            resumed_after,
            ..
        } => {
            assert!(gap, "events after the cursor have expired");
            assert_eq!(oldest_available, Some(seqs[3]));
            assert_eq!(resumed_after, seqs[0]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.seqs(2).await,
        seqs[3..].to_vec(),
        "what is left, in order"
    );

    // A cursor within the retained range reports no gap.
    let (_, w) = WsClient::resume(&gw.ws_url(), &u, &format!("since={}", seqs[3])).await;
    assert!(matches!(
        w,
        ServerFrame::Welcome {
            gap: false,
            oldest_available: None,
            ..
        }
    ));
}

#[tokio::test]
async fn bad_resume_parameters_are_refused() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("params");
    for (query, code) in [
        ("since=-1", "bad_since"),
        ("since=abc", "bad_since"),
        ("deviceId=a.b", "bad_device_id"),
        ("deviceId=", "bad_device_id"),
    ] {
        let url = format!("{}?{query}", gw.ws_url());
        let refused = WsClient::connect(&url, Some(&token(&u)), None)
            .await
            .err()
            .expect("refused");
        assert_eq!(
            (refused.status, refused.body["error"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    assert_eq!(gw.probe.users(), 0);
}
