//! The official SignalR JavaScript client against the gateway: both hub protocols,
//! skip-negotiation, refusals, unknown methods, reconnects that lose nothing.

use serde_json::{Value, json};
use ziraai_e2e::*;

fn opts(url: String, user: &ziraai_proto::UserId, protocol: &'static str) -> JsOptions {
    JsOptions {
        url,
        token: token(user),
        protocol,
        ..JsOptions::default()
    }
}

async fn receives_exact_data(protocol: &'static str, skip_negotiation: bool) {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("sr");
    let mut c = JsClient::start(JsOptions {
        skip_negotiation,
        ..opts(gw.hub_url(), &u, protocol)
    })
    .await;
    let connected = c.expect("connected").await;
    if !skip_negotiation {
        assert!(
            connected["connectionId"]
                .as_str()
                .is_some_and(|s| s.len() == 22),
            "{connected}"
        );
    }
    let result = json!({"disease": "leaf rust", "confidence": 0.93, "spots": [1, 2], "none": null});
    let (outcome, _) = publish_completed(&publisher, &u, result).await;
    let data = c.invocation("AnalysisCompleted").await;
    assert_eq!(
        data,
        Value::Object(outcome.to_envelope().data),
        "the event's data, untouched"
    );

    let failed = ziraai_proto::analysis::AnalysisOutcome::failed(
        ziraai_proto::analysis::AnalysisId::Number(7),
        u.clone(),
        ziraai_proto::analysis::AnalysisError {
            code: "bad_image".into(),
            message: "blurry".into(),
        },
    );
    within("publish", publisher.publish_outcome(&failed))
        .await
        .expect("published");
    let data = c.invocation("AnalysisFailed").await;
    assert_eq!(data["error"]["code"], "bad_image");
}

#[tokio::test]
async fn json_client_receives_analysis_completed_with_the_exact_data() {
    receives_exact_data("json", false).await;
}

#[tokio::test]
async fn messagepack_client_receives_analysis_completed_with_the_exact_data() {
    receives_exact_data("messagepack", false).await;
}

#[tokio::test]
async fn skip_negotiation_clients_connect_straight_to_the_hub() {
    receives_exact_data("json", true).await;
}

#[tokio::test]
async fn bad_or_expired_tokens_fail_to_connect() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("denied");
    let expired = ziraai_gateway::auth::mint(
        &ziraai_common::GatewayServiceConfig::development()
            .auth
            .jwt_secret,
        u.as_str(),
        -3600,
    );
    for (token, skip) in [
        (expired.clone(), false),
        ("not-a-jwt".to_owned(), false),
        (expired, true),
    ] {
        let mut c = JsClient::start(JsOptions {
            token,
            skip_negotiation: skip,
            ..opts(gw.hub_url(), &u, "json")
        })
        .await;
        let v = c.next().await;
        assert_eq!(v["event"], "startFailed", "{v}");
        let error = v["error"].as_str().unwrap_or("");
        if skip {
            assert!(error.contains("WebSocket failed to connect"), "{error}");
        } else {
            assert!(error.contains("401"), "{error}");
        }
    }
    assert_eq!(gw.probe.users(), 0);
}

#[tokio::test]
async fn unknown_methods_get_a_completion_error_and_the_connection_stays() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let u = user("invoke");
    for protocol in ["json", "messagepack"] {
        let mut c = JsClient::start(opts(gw.hub_url(), &u, protocol)).await;
        c.expect("connected").await;
        c.command("invoke SubscribeToEverything").await;
        let v = c.expect("invokeFailed").await;
        assert_eq!(
            v["error"],
            "Failed to invoke 'SubscribeToEverything' due to an error on the server. HubException: Method does not exist."
        );
        let (outcome, _) = publish_completed(&publisher, &u, json!(protocol)).await;
        assert_eq!(
            c.invocation("AnalysisCompleted").await["analysisId"],
            json!(outcome.analysis_id())
        );
        c.command("stop").await;
    }
}

#[tokio::test]
async fn two_users_on_two_gateways_get_only_their_own_events() {
    let nats = NatsServer::start().await;
    let (gw_a, gw_b) = (
        TestGateway::start(&nats).await,
        TestGateway::start(&nats).await,
    );
    let publisher = nats.publisher().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut a = JsClient::start(opts(gw_a.hub_url(), &alice, "json")).await;
    let mut b = JsClient::start(opts(gw_b.hub_url(), &bob, "messagepack")).await;
    a.expect("connected").await;
    b.expect("connected").await;
    let (for_alice, _) = publish_completed(&publisher, &alice, json!("a")).await;
    let (for_bob, _) = publish_completed(&publisher, &bob, json!("b")).await;
    // Each one's first invocation is their own; the other's never came before it.
    assert_eq!(
        a.invocation("AnalysisCompleted").await["analysisId"],
        json!(for_alice.analysis_id())
    );
    assert_eq!(
        b.invocation("AnalysisCompleted").await["analysisId"],
        json!(for_bob.analysis_id())
    );
    let (again, _) = publish_completed(&publisher, &alice, json!("a2")).await;
    assert_eq!(
        a.invocation("AnalysisCompleted").await["analysisId"],
        json!(again.analysis_id())
    );
}

/// A gateway on the same address as `gw` after it is gone (the client's URL stays).
async fn replacement(nats: &NatsServer, addr: std::net::SocketAddr) -> TestGateway {
    TestGateway::start_with(gateway_config(
        nats,
        &[("ZIRAAI_GATEWAY_LISTEN", &addr.to_string())],
    ))
    .await
}

#[tokio::test]
async fn automatic_reconnect_after_a_gateway_restart_loses_nothing_with_a_device_id() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let addr = gw.addr;
    let publisher = nats.publisher().await;
    let u = user("phone");
    let url = format!("{}?deviceId=android-1", gw.hub_url());
    let mut c = JsClient::start(JsOptions {
        reconnect: true,
        ..opts(url, &u, "messagepack")
    })
    .await;
    c.expect("connected").await;
    let (first, published) = publish_completed(&publisher, &u, json!(1)).await;
    assert_eq!(
        c.invocation("AnalysisCompleted").await["analysisId"],
        json!(first.analysis_id())
    );
    // SignalR clients send no acks: a written event counts as received once the client
    // is heard from a moment later (any message; here invocations, every 100 ms).
    within("cursor confirmed", async {
        while stored_cursor(&nats, &u, "android-1").await != Some(published.seq) {
            c.command("invoke Ping").await;
            c.expect("invokeFailed").await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    gw.kill();
    c.expect("reconnecting").await;
    let mut during = Vec::new();
    for i in 0..3 {
        during.push(publish_completed(&publisher, &u, json!(i)).await.0);
    }
    let _gw = replacement(&nats, addr).await;
    c.expect("reconnected").await;
    for outcome in during {
        assert_eq!(
            c.invocation("AnalysisCompleted").await["analysisId"],
            json!(outcome.analysis_id())
        );
    }
}

#[tokio::test]
async fn graceful_shutdown_sends_allow_reconnect_and_the_client_comes_back() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let addr = gw.addr;
    let publisher = nats.publisher().await;
    let u = user("web");
    let url = format!("{}?deviceId=browser-1", gw.hub_url());
    let mut c = JsClient::start(JsOptions {
        reconnect: true,
        ..opts(url, &u, "json")
    })
    .await;
    c.expect("connected").await;
    gw.shutdown().await.expect("clean shutdown");
    let v = c.expect("reconnecting").await;
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("restarting")),
        "{v}"
    );
    let (missed, _) = publish_completed(&publisher, &u, json!("while away")).await;
    let _gw = replacement(&nats, addr).await;
    c.expect("reconnected").await;
    assert_eq!(
        c.invocation("AnalysisCompleted").await["analysisId"],
        json!(missed.analysis_id())
    );
}
