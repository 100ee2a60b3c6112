//! The per-user connection limit across gateways (`ZIRAAI_MAX_CONNECTIONS_PER_USER`,
//! `ZIRAAI_CONNECTION_LIMIT_POLICY`): eviction of the oldest socket wherever it is
//! (native 4008 / `connection_limit`, hub Close without reconnect), refusal with 429,
//! SignalR sockets counted with native ones, other users untouched, concurrent
//! handshakes, and a SIGKILLed gateway whose sockets stop counting within 30 s.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use ziraai_e2e::*;
use ziraai_proto::{ServerFrame, UserId};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The self-healing bound of the contract.
const HEAL_BOUND: Duration = Duration::from_secs(30);

fn hub_ws_url(addr: std::net::SocketAddr, u: &UserId) -> String {
    format!("ws://{addr}/hubs/plantanalysis?access_token={}", token(u))
}

/// A hub socket (no negotiate) after a JSON handshake.
async fn hub(addr: std::net::SocketAddr, u: &UserId) -> Ws {
    let (mut ws, _) = within(
        "hub websocket",
        tokio_tungstenite::connect_async(hub_ws_url(addr, u)),
    )
    .await
    .expect("hub upgrade accepted");
    within(
        "handshake",
        ws.send(Message::Text(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}".into(),
        )),
    )
    .await
    .expect("sent");
    assert_eq!(hub_message(&mut ws).await, serde_json::json!({}));
    ws
}

/// The next hub message other than a ping; `Null` when the socket ended.
async fn hub_message(ws: &mut Ws) -> Value {
    loop {
        match within("hub message", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value =
                    serde_json::from_str(t.trim_end_matches('\u{1e}')).expect("JSON record");
                if v["type"] != 6 {
                    return v;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return Value::Null,
        }
    }
}

/// Asserts the native socket was evicted: `connection_limit` error frame, then 4008.
async fn assert_evicted(c: &mut WsClient) {
    let (frames, code) = c.until_close().await;
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Error { code, .. } if code == "connection_limit")),
        "{frames:?}"
    );
    assert_eq!(code, Some(4008));
}

fn limit_vars<'a>(policy: &'a str, max: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("ZIRAAI_CONNECTION_LIMIT_POLICY", policy),
        ("ZIRAAI_MAX_CONNECTIONS_PER_USER", max),
        ("ZIRAAI_CONNECTION_HEARTBEAT", "1s"),
    ]
}

#[tokio::test]
async fn the_sixth_connection_evicts_the_oldest_on_the_other_gateway() {
    let nats = NatsServer::start().await;
    // The default policy and limit (evict-oldest, 5).
    let a = TestGateway::start(&nats).await;
    let b = TestGateway::start(&nats).await;
    let (u, other) = (user("lim"), user("other"));
    let mut oldest = WsClient::open(&a.ws_url(), &u).await;
    let mut hub_second = hub(b.addr, &u).await;
    let mut rest = Vec::new();
    for url in [a.ws_url(), b.ws_url(), a.ws_url()] {
        rest.push(WsClient::open(&url, &u).await);
    }
    let mut bystander = WsClient::open(&a.ws_url(), &other).await;
    assert_eq!(a.probe.connections() + b.probe.connections(), 6);

    // Sixth on B: the oldest, on A, gets connection_limit and 4008.
    rest.push(WsClient::open(&b.ws_url(), &u).await);
    assert_evicted(&mut oldest).await;
    // Seventh, a hub socket on A: the next oldest is the hub socket on B.
    let mut hub_seventh = hub(a.addr, &u).await;
    let close = hub_message(&mut hub_second).await;
    assert_eq!(close["type"], 7, "{close}");
    assert_eq!(close["error"], "connection_limit", "{close}");
    assert_eq!(close["allowReconnect"], false, "{close}");
    wait_until("five sockets of the user and one of the other", || {
        a.probe.connections() + b.probe.connections() == 6
    })
    .await;

    // Everyone left still gets events; the other user was never touched.
    let publisher = nats.publisher().await;
    let seq = publish_completed(&publisher, &other, serde_json::json!("x"))
        .await
        .1
        .seq;
    assert_eq!(bystander.event().await.seq, seq);
    let seq = publish_completed(&publisher, &u, serde_json::json!("y"))
        .await
        .1
        .seq;
    for c in &mut rest {
        assert_eq!(c.event().await.seq, seq);
    }
    let inv = hub_message(&mut hub_seventh).await;
    assert_eq!(inv["target"], "AnalysisCompleted", "{inv}");
    for gw in [&a, &b] {
        assert_eq!(
            metric(gw, "ziraai_gateway_connection_limit_evictions_total").await,
            1
        );
    }
}

/// The value of one metric of `gw`.
async fn metric(gw: &TestGateway, name: &str) -> u64 {
    let (status, text) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn the_official_client_evicted_does_not_reconnect() {
    let nats = NatsServer::start().await;
    let a = TestGateway::start_with(gateway_config(&nats, &limit_vars("evict-oldest", "2"))).await;
    let b = TestGateway::start_with(gateway_config(&nats, &limit_vars("evict-oldest", "2"))).await;
    let u = user("js");
    let mut js = JsClient::start(JsOptions {
        url: a.hub_url(),
        token: token(&u),
        reconnect: true,
        ..Default::default()
    })
    .await;
    js.expect("connected").await;
    let _second = WsClient::open(&b.ws_url(), &u).await;
    let _third = WsClient::open(&b.ws_url(), &u).await;
    // Automatic reconnect is on, yet the client closes for good: allowReconnect false.
    let closed = js.next().await;
    assert_eq!(closed["event"], "closed", "no reconnecting first: {closed}");
    let error = closed["error"].as_str().unwrap_or_default();
    assert!(error.contains("connection_limit"), "{closed}");
    wait_until("the evicted socket is gone", || a.probe.connections() == 0).await;
    assert_eq!(b.probe.connections(), 2);
}

#[tokio::test]
async fn refuse_answers_429_and_counts_hub_sockets_with_native_ones() {
    let nats = NatsServer::start().await;
    let a = TestGateway::start_with(gateway_config(&nats, &limit_vars("refuse", "3"))).await;
    let b = TestGateway::start_with(gateway_config(&nats, &limit_vars("refuse", "3"))).await;
    let (u, other) = (user("ref"), user("other"));
    let first = WsClient::open(&a.ws_url(), &u).await;
    let _hub = hub(b.addr, &u).await;
    let _third = WsClient::open(&a.ws_url(), &u).await;
    for url in [b.ws_url(), a.ws_url(), hub_ws_url(b.addr, &u)] {
        let refused = WsClient::connect(&url, Some(&token(&u)), None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url}: admitted over the limit"));
        assert_eq!(refused.status, 429, "{url}");
        assert_eq!(refused.body["error"], "too_many_connections", "{url}");
    }
    // Nothing was closed, and another user is admitted.
    assert_eq!(a.probe.connections() + b.probe.connections(), 3);
    assert_eq!(
        metric(&a, "ziraai_gateway_connection_limit_refusals_total").await,
        1
    );
    assert_eq!(
        metric(&b, "ziraai_gateway_connection_limit_refusals_total").await,
        2
    );
    let _o = WsClient::open(&b.ws_url(), &other).await;
    // A closed socket frees its slot.
    first.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match WsClient::connect(&b.ws_url(), Some(&token(&u)), None).await {
            Ok(_) => break,
            Err(r) => assert_eq!(r.status, 429),
        }
        assert!(Instant::now() < deadline, "slot not freed after a close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sockets_sharing_one_negotiated_token_each_count() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(&nats, &limit_vars("refuse", "5"))).await;
    let u = user("reuse");
    let (status, body) = http_request(
        gw.addr,
        "POST",
        "/hubs/plantanalysis/negotiate?negotiateVersion=1",
        Some(&token(&u)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let negotiated: Value = serde_json::from_str(&body).expect("negotiate JSON");
    let id = negotiated["connectionToken"].as_str().expect("a token");
    let url = format!("{}&id={id}", hub_ws_url(gw.addr, &u));
    let mut open = Vec::new();
    for _ in 0..5 {
        let (ws, _) = within("hub websocket", tokio_tungstenite::connect_async(&url))
            .await
            .expect("admitted within the limit");
        open.push(ws);
    }
    // A sixth socket on the same token is one too many, like any other.
    let refused = WsClient::connect(&url, None, None)
        .await
        .err()
        .expect("the sixth socket on one token is refused");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"], "too_many_connections");
}

#[tokio::test]
async fn concurrent_handshakes_on_two_gateways_stay_within_the_limit() {
    let nats = NatsServer::start().await;
    let refuse = limit_vars("refuse", "3");
    let evict = limit_vars("evict-oldest", "3");
    let a = TestGateway::start_with(gateway_config(&nats, &refuse)).await;
    let b = TestGateway::start_with(gateway_config(&nats, &refuse)).await;
    let u = user("race");
    let attempts = (0..8).map(|i| {
        let url = if i % 2 == 0 { a.ws_url() } else { b.ws_url() };
        let t = token(&u);
        async move { WsClient::connect(&url, Some(&t), None).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let admitted: Vec<WsClient> = results.into_iter().filter_map(Result::ok).collect();
    // Refuse never overshoots (it may refuse more than needed under a race).
    assert!((1..=3).contains(&admitted.len()), "{}", admitted.len());
    drop(admitted);
    wait_until("sockets closed", || {
        a.probe.connections() + b.probe.connections() == 0
    })
    .await;

    let c = TestGateway::start_with(gateway_config(&nats, &evict)).await;
    let d = TestGateway::start_with(gateway_config(&nats, &evict)).await;
    let v = user("race");
    let attempts = (0..8).map(|i| {
        let url = if i % 2 == 0 { c.ws_url() } else { d.ws_url() };
        let t = token(&v);
        async move { WsClient::connect(&url, Some(&t), None).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let clients: Vec<WsClient> = results
        .into_iter()
        .map(|r| r.expect("evict-oldest admits every handshake"))
        .collect();
    // The evictions settle at the limit.
    wait_until("back at the limit", || {
        c.probe.connections() + d.probe.connections() == 3
    })
    .await;
    drop(clients);
}

#[tokio::test]
async fn a_killed_gateways_connections_stop_counting_within_30_s() {
    let nats = NatsServer::start().await;
    let vars = limit_vars("refuse", "5");
    let mut doomed = ServiceProcess::gateway(&nats, &vars).await;
    let survivor = TestGateway::start_with(gateway_config(&nats, &vars)).await;
    let u = user("kill");
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(WsClient::open(&doomed.ws_url(), &u).await);
    }
    let refused = WsClient::connect(&survivor.ws_url(), Some(&token(&u)), None)
        .await
        .err()
        .expect("the sixth is refused");
    assert_eq!(refused.status, 429);

    doomed.sigkill();
    let killed = Instant::now();
    doomed.wait_exit(STEP).await;
    drop(held);
    let mut admitted = Vec::new();
    loop {
        match WsClient::connect(&survivor.ws_url(), Some(&token(&u)), None).await {
            Ok(c) => {
                admitted.push(c);
                break;
            }
            Err(r) => assert_eq!(r.status, 429, "{:?}", r.body),
        }
        assert!(
            killed.elapsed() < HEAL_BOUND,
            "still refused {HEAL_BOUND:?} after the kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("admitted again {:?} after SIGKILL", killed.elapsed());
    // The dead gateway's keys are gone: exactly five fit again.
    for _ in 0..4 {
        admitted.push(WsClient::open(&survivor.ws_url(), &u).await);
    }
    let refused = WsClient::connect(&survivor.ws_url(), Some(&token(&u)), None)
        .await
        .err()
        .expect("the sixth is refused again");
    assert_eq!(refused.status, 429);
}

/// Subjects of `KV_CONNS` matching `filter`.
async fn conns_subjects(nats: &NatsServer, filter: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = within("KV_CONNS", js.get_stream("KV_CONNS"))
        .await
        .expect("stream exists");
    let info = within("stream subjects", stream.info_with_subjects(filter))
        .await
        .expect("info");
    within("subjects", info.map_ok(|(s, _)| s).try_collect::<Vec<_>>())
        .await
        .expect("subjects")
}

#[tokio::test]
async fn a_gateway_taken_for_dead_registers_its_sockets_again() {
    let nats = NatsServer::start().await;
    let vars = limit_vars("refuse", "1");
    let a = TestGateway::start_with(gateway_config(&nats, &vars)).await;
    let b = TestGateway::start_with(gateway_config(&nats, &vars)).await;
    let gw_a = a.health().await["gatewayId"]
        .as_str()
        .expect("gateway id")
        .to_owned();
    let u = user("lost");
    let _held = WsClient::open(&a.ws_url(), &u).await;
    let mine = format!("$KV.CONNS.u.{u}.{gw_a}.*");
    assert_eq!(conns_subjects(&nats, &mine).await.len(), 1);
    // What other gateways do to a gateway whose heartbeat expired (NATS unreachable).
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = within("KV_CONNS", js.get_stream("KV_CONNS"))
        .await
        .expect("stream");
    for filter in [
        format!("$KV.CONNS.u.*.{gw_a}.*"),
        format!("$KV.CONNS.gw.{gw_a}"),
    ] {
        within("purge", stream.purge().filter(filter).into_future())
            .await
            .expect("purged");
    }
    assert!(conns_subjects(&nats, &mine).await.is_empty());
    // Its next heartbeat notices and writes the socket's key again: B refuses again.
    within("the key is written again", async {
        while conns_subjects(&nats, &mine).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        conns_subjects(&nats, &format!("$KV.CONNS.gw.{gw_a}"))
            .await
            .len(),
        1
    );
    let refused = WsClient::connect(&b.ws_url(), Some(&token(&u)), None)
        .await
        .err()
        .expect("counted again");
    assert_eq!(refused.status, 429);
}
