//! Sequence integrity (issue 9): nothing a producer puts in headers or payload changes
//! the sequence the gateway believes an event has. Forged `Nats-*` headers published
//! through JetStream to `notify.<user>`, and forged core publishes straight to
//! `live.<user>`, never lose, reorder, repeat or fake an event, and never move a
//! device cursor past the stream's last sequence.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use serde_json::{Value, json};
use ziraai_e2e::*;
use ziraai_proto::{Envelope, EventFrame, PayloadEncoding, ServerFrame, UserId};

/// How long a collecting client waits for one more event before it reports what it got
/// (only reached when events are missing: a complete run stops at its sentinel).
const QUIET: Duration = Duration::from_secs(3);
/// A sequence far beyond anything the test stores.
const FAR_AHEAD: u64 = 999_999_999;

fn body(marker: &str) -> bytes::Bytes {
    let mut data = serde_json::Map::new();
    data.insert("marker".into(), json!(marker));
    Envelope::now("analysis.completed", data)
        .encode(PayloadEncoding::Json)
        .into()
}

/// Headers a producer should never be able to use to change a sequence.
fn forged_headers(user: &UserId, seq: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Sequence", seq.to_string().as_str());
    h.insert(
        "Nats-Last-Sequence",
        seq.saturating_sub(1).to_string().as_str(),
    );
    h.insert("Nats-Stream", "NOTIFY");
    h.insert("Nats-Subject", user.notify_subject().as_str());
    h.insert("Content-Type", "application/json");
    h
}

/// A JetStream publish to `notify.<user>` carrying forged `Nats-*` headers (a stored,
/// real event); returns its sequence from the PubAck.
async fn publish_with_forged_headers(js: &jetstream::Context, user: &UserId, marker: &str) -> u64 {
    let mut h = forged_headers(user, FAR_AHEAD);
    h.insert("Nats-Stream", "EVIL");
    h.insert("Nats-Subject", "notify.someone-else");
    let msg = PublishMessage::build().payload(body(marker)).headers(h);
    let ack = within("forged-header publish", async {
        js.send_publish(user.notify_subject(), msg)
            .await
            .expect("sent")
            .await
            .expect("stored")
    })
    .await;
    ack.sequence
}

/// A core publish straight to `live.<user>`, claiming sequence `seq`.
async fn forge_live(client: &async_nats::Client, user: &UserId, seq: u64, marker: &str) {
    within("forged core publish", async {
        client
            .publish_with_headers(user.live_subject(), forged_headers(user, seq), body(marker))
            .await
            .expect("published");
        client.flush().await.expect("flushed");
    })
    .await;
}

async fn stream_last(js: &jetstream::Context) -> u64 {
    let s = within("stream info", js.get_stream("NOTIFY"))
        .await
        .expect("NOTIFY exists");
    s.cached_info().state.last_sequence
}

fn marker(e: &EventFrame) -> &str {
    e.data.get("marker").and_then(Value::as_str).unwrap_or("")
}

/// Reads events (acknowledging each when `ack`) until `stop` holds for one, or nothing
/// more arrives for [`QUIET`].
async fn collect(
    c: &mut WsClient,
    ack: bool,
    stop: impl Fn(&EventFrame) -> bool,
) -> Vec<EventFrame> {
    let mut got = Vec::new();
    while let Ok(e) = tokio::time::timeout(QUIET, c.event()).await {
        if ack {
            c.ack(e.seq).await;
        }
        let done = stop(&e);
        got.push(e);
        if done {
            break;
        }
    }
    got
}

fn seqs(events: &[EventFrame]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn forged_sequences_lose_fake_or_repeat_nothing() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let u = user("forged");
    let mut live = WsClient::open(&gw.ws_url(), &u).await;
    let (mut dev, _) = WsClient::resume(&gw.ws_url(), &u, "deviceId=d1").await;

    // Phase 1: a real event, one stored with forged headers, and a last one; the device
    // acks each as it arrives and leaves.
    let mut real = publish_many(&publisher, &u, 1).await;
    real.push(publish_with_forged_headers(&js, &u, "h1").await);
    let mut dev_first = collect(&mut dev, true, |e| marker(e) == "h1").await;
    real.push(publish_with_forged_headers(&js, &u, "p1").await);
    dev_first.extend(collect(&mut dev, true, |e| marker(e) == "p1").await);
    dev.close().await;

    // Phase 2: more real events, forged headers again, and forged core publishes to the
    // live subject: far ahead, the next real sequence with fake content, and behind.
    real.extend(publish_many(&publisher, &u, 3).await);
    let next = stream_last(&js).await + 1;
    forge_live(&client, &u, FAR_AHEAD, "forged-ahead").await;
    forge_live(&client, &u, next, "forged-next").await;
    forge_live(&client, &u, 1, "forged-behind").await;
    within("bare core publish", async {
        client
            .publish(u.live_subject(), body("forged-bare"))
            .await
            .expect("published");
    })
    .await;
    real.extend(publish_many(&publisher, &u, 2).await);
    real.push(publish_with_forged_headers(&js, &u, "h2").await);
    real.extend(publish_many(&publisher, &u, 2).await);
    let sentinel = publish_with_forged_headers(&js, &u, "sentinel").await;
    real.push(sentinel);
    let last = stream_last(&js).await;

    let live_got = collect(&mut live, false, |e| marker(e) == "sentinel").await;
    let (mut back, welcome) = WsClient::resume(&gw.ws_url(), &u, "deviceId=d1").await;
    let back_got = collect(&mut back, true, |e| marker(e) == "sentinel").await;
    let expected_back: Vec<u64> = real[3..].to_vec();
    back.ack(FAR_AHEAD).await;
    back.close().await;
    let cursor = stored_cursor(&nats, &u, "d1").await.unwrap_or(0);

    let faked = |evs: &[EventFrame]| {
        evs.iter()
            .filter(|e| marker(e).starts_with("forged"))
            .count()
    };
    let received = |want: &[u64], evs: &[EventFrame]| {
        let got = seqs(evs);
        want.iter().filter(|s| got.contains(s)).count()
    };
    eprintln!(
        "forged-header reproduction: live socket got {}/{} real events ({} frames, forged content {}); \
         resuming device got {}/{} ({} frames), welcome {welcome:?}; device cursor {cursor}, stream last {last}",
        received(&real, &live_got),
        real.len(),
        live_got.len(),
        faked(&live_got),
        received(&expected_back, &back_got),
        expected_back.len(),
        back_got.len(),
    );

    assert_eq!(
        seqs(&dev_first),
        real[..3],
        "the device's first events, server sequences"
    );
    assert_eq!(
        seqs(&live_got),
        real,
        "every real event once, in order, server sequences"
    );
    assert_eq!(
        seqs(&back_got),
        expected_back,
        "the resuming device misses nothing"
    );
    assert_eq!(
        faked(&live_got) + faked(&back_got),
        0,
        "forged content never delivered"
    );
    assert!(
        matches!(welcome, ServerFrame::Welcome { resumed_after, gap: false, .. } if resumed_after == real[2]),
        "resumes after its last real ack: {welcome:?}"
    );
    // The last ack (far ahead) is clamped: the cursor stays within the stream.
    assert!(
        cursor <= last,
        "cursor {cursor} beyond the stream's last {last}"
    );
    assert_eq!(
        cursor, sentinel,
        "the cursor is the last event acknowledged"
    );
    // Ahead, next with fake content, behind, and one without headers: four, each once.
    let counted = within("forged live messages counted", async {
        loop {
            let n = gw.health().await["delivery"]["forgedLiveMessagesDropped"]
                .as_u64()
                .unwrap_or(0);
            if n >= 4 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(counted, 4);
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains("ziraai_gateway_events_dropped_total{reason=\"forged\"} 4\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_http_ack_beyond_the_stream_is_clamped() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let js = jetstream::new(nats.client().await);
    let u = user("forged-http");
    publish_many(&publisher, &u, 1).await;
    publish_with_forged_headers(&js, &u, "h").await;
    let body = json!({"deviceId": "d9", "seq": FAR_AHEAD});
    let (status, text) = http_request(
        gw.addr,
        "POST",
        "/api/v1/notifications/ack",
        Some(&token(&u)),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let last = stream_last(&js).await;
    assert_eq!(stored_cursor(&nats, &u, "d9").await, Some(last));
}

#[tokio::test]
async fn a_multi_token_notify_subject_is_refused_by_the_stream() {
    let nats = NatsServer::start().await;
    let _gw = TestGateway::start(&nats).await;
    let js = jetstream::new(nats.client().await);
    let refused = within("publish to notify.a.b", async {
        match js.publish("notify.a.b", body("x")).await {
            Ok(ack) => ack.await.map(|a| a.sequence),
            Err(e) => Err(e),
        }
    })
    .await;
    assert!(refused.is_err(), "stored as {refused:?}");
    let info = within("stream info", js.get_stream("NOTIFY"))
        .await
        .expect("exists");
    assert_eq!(
        info.cached_info().config.subjects,
        vec!["notify.*".to_owned()]
    );
}

#[tokio::test]
async fn an_existing_notify_stream_on_the_old_subjects_is_updated_in_place() {
    let nats = NatsServer::start().await;
    let js = jetstream::new(nats.client().await);
    // The definition before issue 9: `notify.>` republished to `live.>`.
    let mut old = ziraai_common::nats::notify_stream_config().expect("definition");
    old.subjects = vec!["notify.>".into()];
    if let Some(rp) = old.republish.as_mut() {
        rp.source = "notify.>".into();
        rp.destination = "live.>".into();
    }
    within("old stream", js.create_stream(old))
        .await
        .expect("created");
    let u = user("upgraded");
    let stored = within("old publish", async {
        js.publish(u.notify_subject(), body("before"))
            .await
            .expect("sent")
            .await
            .expect("stored")
    })
    .await
    .sequence;

    let gw = TestGateway::start(&nats).await;
    let info = within("stream info", js.get_stream("NOTIFY"))
        .await
        .expect("exists");
    let cfg = &info.cached_info().config;
    assert_eq!(
        cfg.subjects,
        vec!["notify.*".to_owned()],
        "updated in place"
    );
    let rp = cfg.republish.as_ref().expect("republish kept");
    assert_eq!(
        (rp.source.as_str(), rp.destination.as_str()),
        ("notify.*", "live.{{wildcard(1)}}")
    );
    assert_eq!(info.cached_info().state.messages, 1, "stored events kept");

    let (mut c, _) = WsClient::resume(&gw.ws_url(), &u, "since=0").await;
    assert_eq!(c.event().await.seq, stored, "replayed after the update");
    let publisher = nats.publisher().await;
    let live = publish_many(&publisher, &u, 1).await;
    assert_eq!(c.seqs(1).await, live, "and live through the new RePublish");
}

#[tokio::test]
async fn a_signalr_resume_record_beyond_the_stream_is_clamped() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let js = jetstream::new(nats.client().await);
    let u = user("forged-sr");
    let jwt = token(&u);
    let path = "/hubs/plantanalysis/negotiate?negotiateVersion=1&useStatefulReconnect=true";
    let (status, text) = http_request(gw.addr, "POST", path, Some(&jwt), None).await;
    assert_eq!(status, 200, "{text}");
    let negotiated: Value = serde_json::from_str(&text).expect("JSON");
    let (cid, conn_token) = (
        negotiated["connectionId"].as_str().expect("id"),
        negotiated["connectionToken"].as_str().expect("token"),
    );
    // A resume record whose sequence lies beyond the stream (e.g. a reset stream).
    let kv = within("bucket", js.get_key_value("SIGNALR"))
        .await
        .expect("bucket");
    let record = json!({"user": u.as_str(), "protocol": "json", "acked": 0, "seq": FAR_AHEAD, "dirty": false});
    within("put record", kv.put(cid, record.to_string().into()))
        .await
        .expect("stored");

    let url = format!(
        "ws://{}/hubs/plantanalysis?id={conn_token}&access_token={jwt}&deviceId=d7",
        gw.addr
    );
    let (mut ws, _) = within("hub socket", tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade");
    let hub = |v: Value| Message::Text(format!("{v}\u{1e}").into());
    within("send", ws.send(hub(json!({"type": 9, "sequenceId": 1}))))
        .await
        .expect("sent");
    let mut next_message = async || loop {
        match within("hub message", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str::<Value>(t.trim_end_matches('\u{1e}')).expect("JSON");
            }
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    };
    assert_eq!(next_message().await, json!({"type": 9, "sequenceId": 1}));
    let live = publish_many(&publisher, &u, 1).await;
    let invocation = loop {
        let m = next_message().await;
        if m["type"] == 1 {
            break m;
        }
    };
    assert_eq!(
        invocation["arguments"][0]["result"],
        json!(0),
        "the real event is delivered"
    );
    within("ack", ws.send(hub(json!({"type": 8, "sequenceId": 1}))))
        .await
        .expect("sent");
    wait_for_cursor(&nats, &u, "d7", live[0]).await;
}
