//! Tokens that end: a socket closes when its token expires (native `token_expired` +
//! 4001; SignalR Close `token_expired` with allowReconnect, the official client
//! reconnecting with a fresh token from its factory), the native `auth` refresh
//! (accepted, and refused with 1008), issuer / audience / longest lifetime, RS256 and
//! ES256 public keys, and key rotation by SIGHUP on a gateway process.

use std::time::Duration;

use serde_json::json;
use ziraai_e2e::*;
use ziraai_proto::{Protocol, ServerFrame};

/// Wall-clock seconds since the epoch, with a fraction.
fn now_f64() -> f64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9
}

fn exp_of(ttl: i64) -> i64 {
    unix_now() + ttl
}

#[tokio::test]
async fn a_native_socket_closes_with_token_expired_4001_after_exp_plus_leeway() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(&nats, &[("ZIRAAI_JWT_LEEWAY", "1s")])).await;
    let u = user("exp");
    // A few seconds: enough to connect on a loaded machine, short for the test.
    let exp = exp_of(6);
    let t = token_with(&json!({"userId": u.as_str(), "exp": exp}));
    let mut c = WsClient::connect(&gw.ws_url(), Some(&t), None)
        .await
        .expect("accepted while valid");
    assert!(matches!(c.frame().await, ServerFrame::Welcome { .. }));
    let (frames, code) = c.until_close().await;
    let closed_at = now_f64();
    assert_eq!(code, Some(4001), "{frames:?}");
    match frames.last() {
        Some(ServerFrame::Error { code, message }) => {
            assert_eq!(code, "token_expired");
            assert!(!message.is_empty());
        }
        other => panic!("expected the token_expired error frame, got {other:?}"),
    }
    // Not before exp plus the leeway (a little slack for the timer's granularity).
    assert!(
        closed_at >= (exp + 1) as f64 - 0.05,
        "closed at {closed_at}, exp {exp} + 1 s leeway"
    );
    wait_until("the socket is gone", || gw.probe.connections() == 0).await;
}

/// Sends an `auth` frame in the socket's own encoding.
async fn send_auth(c: &mut WsClient, token: &str) {
    match c.protocol {
        Protocol::Json => {
            c.send_text(&json!({"type": "auth", "token": token}).to_string())
                .await
        }
        Protocol::MsgPack => {
            let bytes =
                rmp_serde::to_vec_named(&json!({"type": "auth", "token": token})).expect("encode");
            c.send_binary(bytes).await;
        }
    }
}

#[tokio::test]
async fn a_refresh_moves_the_expiry_and_the_socket_keeps_receiving() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(&nats, &[("ZIRAAI_JWT_LEEWAY", "0s")])).await;
    let publisher = nats.publisher().await;
    for offer in [None, Some("ziraai.v1.msgpack")] {
        let u = user("refresh");
        let old_exp = exp_of(6);
        let t = token_with(&json!({"userId": u.as_str(), "exp": old_exp}));
        let mut c = WsClient::connect(&gw.ws_url(), Some(&t), offer)
            .await
            .expect("accepted");
        assert!(matches!(c.frame().await, ServerFrame::Welcome { .. }));
        let new_exp = exp_of(600);
        send_auth(
            &mut c,
            &token_with(&json!({"userId": u.as_str(), "exp": new_exp})),
        )
        .await;
        let want = time::OffsetDateTime::from_unix_timestamp(new_exp)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format");
        match c.frame().await {
            ServerFrame::Authenticated { expires_at } => assert_eq!(expires_at, want),
            other => panic!("{offer:?}: expected authenticated, got {other:?}"),
        }
        // Past the old token's expiry the socket is still open and still delivers.
        within("the old expiry to pass", async {
            while now_f64() < old_exp as f64 + 1.0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let (_, published) = publish_completed(&publisher, &u, json!("after")).await;
        assert_eq!(c.event().await.seq, published.seq, "{offer:?}");
        c.close().await;
    }
}

#[tokio::test]
async fn a_refused_refresh_closes_with_its_auth_code_and_1008() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("refused");
    let later = exp_of(600);
    let cases = [
        (
            token_with(&json!({"userId": user("other").as_str(), "exp": later})),
            "token_other_user",
        ),
        (short_token(&u, 600) + "x", "token_bad_signature"),
        (
            token_with(&json!({"userId": u.as_str(), "exp": unix_now() - 3600})),
            "token_expired",
        ),
        ("garbage".to_owned(), "token_malformed"),
    ];
    for (bad, want) in cases {
        let mut c = WsClient::open(&gw.ws_url(), &u).await;
        send_auth(&mut c, &bad).await;
        let (frames, code) = c.until_close().await;
        assert_eq!(code, Some(1008), "{want}: {frames:?}");
        match frames.last() {
            Some(ServerFrame::Error { code, .. }) => assert_eq!(code, want),
            other => panic!("{want}: expected an error frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn issuer_audience_and_the_longest_lifetime_are_enforced() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_JWT_ISSUER", "https://auth.ziraai.test"),
            ("ZIRAAI_JWT_AUDIENCE", "ziraai-realtime"),
            ("ZIRAAI_JWT_MAX_TTL", "1h"),
        ],
    ))
    .await;
    let u = user("iss");
    let claims = |iss: Option<&str>, aud: Option<&str>, ttl: i64| {
        let mut c = json!({"userId": u.as_str(), "exp": exp_of(ttl)});
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = json!(aud);
        }
        token_with(&c)
    };
    let good = claims(
        Some("https://auth.ziraai.test"),
        Some("ziraai-realtime"),
        600,
    );
    let c = WsClient::connect(&gw.ws_url(), Some(&good), None)
        .await
        .expect("matching issuer and audience");
    c.close().await;
    let cases = [
        (
            claims(None, Some("ziraai-realtime"), 600),
            "token_bad_issuer",
        ),
        (
            claims(Some("https://evil.test"), Some("ziraai-realtime"), 600),
            "token_bad_issuer",
        ),
        (
            claims(Some("https://auth.ziraai.test"), None, 600),
            "token_bad_audience",
        ),
        (
            claims(Some("https://auth.ziraai.test"), Some("other"), 600),
            "token_bad_audience",
        ),
        (
            claims(
                Some("https://auth.ziraai.test"),
                Some("ziraai-realtime"),
                7200,
            ),
            "token_ttl_too_long",
        ),
    ];
    for (t, want) in cases {
        let refused = WsClient::connect(&gw.ws_url(), Some(&t), None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{want}: accepted"));
        assert_eq!(refused.status, 401, "{want}");
        assert_eq!(refused.body["error"], want, "{}", refused.body);
    }
    // The polling API shares the rule.
    let (status, body) = http_request(
        gw.addr,
        "GET",
        "/api/v1/notifications",
        Some(&claims(None, None, 600)),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token_bad_issuer"), "{body}");
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_the_configured_public_keys() {
    let nats = NatsServer::start().await;
    let rsa = TestKey::rs256();
    let ec = TestKey::es256();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("keys.pem");
    std::fs::write(&file, format!("{}{}", rsa.public_pem, ec.public_pem)).expect("write");
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_JWT_PUBLIC_KEYS_FILE", &file.to_string_lossy())],
    ))
    .await;
    for key in [&rsa, &ec] {
        let u = user("pk");
        let mut c = WsClient::connect(&gw.ws_url(), Some(&key.token(&u, 600)), None)
            .await
            .unwrap_or_else(|r| panic!("{:?} refused: {r:?}", key.alg));
        assert!(matches!(c.frame().await, ServerFrame::Welcome { .. }));
        // A refresh with a public-key token works too.
        send_auth(&mut c, &key.token(&u, 900)).await;
        assert!(matches!(c.frame().await, ServerFrame::Authenticated { .. }));
        c.close().await;
    }
    // HS256 still works beside the keys; a stranger's key does not.
    let u = user("pk");
    WsClient::open(&gw.ws_url(), &u).await.close().await;
    let stranger = TestKey::es256();
    let refused = WsClient::connect(&gw.ws_url(), Some(&stranger.token(&u, 600)), None)
        .await
        .err()
        .expect("a stranger's key is refused");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["error"], "token_bad_signature");
}

#[tokio::test]
async fn the_signalr_client_gets_token_expired_and_reconnects_with_a_fresh_token() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(&nats, &[("ZIRAAI_JWT_LEEWAY", "0s")])).await;
    let publisher = nats.publisher().await;
    let u = user("sr-exp");
    let mut c = JsClient::start(JsOptions {
        url: gw.hub_url(),
        // Node starts before it connects: leave it time on a loaded machine.
        token: short_token(&u, 10),
        protocol: "json",
        reconnect: true,
        ..JsOptions::default()
    })
    .await;
    c.expect("connected").await;
    // The factory's next token: fresh and long-lived.
    c.set_token(&short_token(&u, 600)).await;
    c.expect("tokenSet").await;
    let reconnecting = c.expect("reconnecting").await;
    assert!(
        reconnecting["error"]
            .as_str()
            .is_some_and(|e| e.contains("token_expired")),
        "{reconnecting}"
    );
    c.expect("reconnected").await;
    let (outcome, _) = publish_completed(&publisher, &u, json!("after refresh")).await;
    let data = c.invocation("AnalysisCompleted").await;
    assert_eq!(data, serde_json::Value::Object(outcome.to_envelope().data));
}

#[tokio::test]
async fn public_keys_rotate_on_sighup_and_a_bad_file_keeps_the_old_ones() {
    let nats = NatsServer::start().await;
    let old = TestKey::es256();
    let new = TestKey::rs256();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("keys.pem");
    std::fs::write(&file, &old.public_pem).expect("write");
    let path = file.to_string_lossy().into_owned();
    let gw = ServiceProcess::gateway(&nats, &[("ZIRAAI_JWT_PUBLIC_KEYS_FILE", &path)]).await;
    let u = user("rot");
    let status = |t: String| {
        let url = gw.ws_url();
        async move {
            match WsClient::connect(&url, Some(&t), None).await {
                Ok(c) => {
                    c.close().await;
                    200
                }
                Err(r) => r.status,
            }
        }
    };
    assert_eq!(status(old.token(&u, 600)).await, 200);
    assert_eq!(
        status(new.token(&u, 600)).await,
        401,
        "new key not yet known"
    );

    // A broken file on SIGHUP: logged, the old key stays.
    std::fs::write(&file, "not a key").expect("write");
    gw.sighup();
    within("the failed reload to be logged", async {
        while !gw.stderr().contains("public keys not reloaded") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(status(old.token(&u, 600)).await, 200, "old key kept");

    // The new key: accepted after SIGHUP, without a restart; the old one is gone.
    std::fs::write(&file, &new.public_pem).expect("write");
    gw.sighup();
    within("the new key to be accepted", async {
        while status(new.token(&u, 600)).await != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(status(old.token(&u, 600)).await, 401, "old key retired");
    assert!(gw.pid().is_some(), "still the same process");
}

#[tokio::test]
async fn a_bad_public_key_file_at_start_up_exits_2_with_one_line() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("keys.pem");
    std::fs::write(
        &file,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let vars = gateway_vars(
        &nats,
        &[("ZIRAAI_JWT_PUBLIC_KEYS_FILE", &file.to_string_lossy())],
    );
    let mut p = ServiceProcess::spawn("ziraai-gateway", &[], &vars);
    let status = p.wait_exit(STEP).await;
    assert_eq!(status.code(), Some(2), "{}", p.stderr());
    let lines: Vec<_> = p
        .stderr()
        .lines()
        .filter(|l| l.contains("ZIRAAI_JWT_PUBLIC_KEYS_FILE"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "{}", p.stderr());
    assert!(lines[0].starts_with("ziraai-gateway: "), "{}", lines[0]);
}
