//! Every bad token and user id is refused with 401 before the upgrade, leaving no
//! subscription behind; origins outside the allow-list get 403.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use ziraai_common::config::DEV_JWT_SECRET;
use ziraai_e2e::*;

fn sign(claims: serde_json::Value, key: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("encode")
}

fn b64(s: &str) -> String {
    use std::fmt::Write;
    // Hand-rolled base64url (no padding) to build an unsigned `alg: none` token.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            let _ = write!(out, "{}", A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn bad_tokens_and_user_ids_get_401_and_leave_nothing_behind() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let later = now + 600;
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "token_missing"),
        ("malformed", Some("not.a.jwt".into()), "token_malformed"),
        (
            "unsigned alg none",
            Some(format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&format!(r#"{{"userId":"u1","exp":{later}}}"#))
            )),
            "token_bad_algorithm",
        ),
        (
            "wrong key",
            Some(sign(
                json!({"userId": "u1", "exp": later}),
                "another-secret-another-secret-xx",
            )),
            "token_bad_signature",
        ),
        (
            "expired",
            Some(sign(
                json!({"userId": "u1", "exp": now - 3600}),
                DEV_JWT_SECRET,
            )),
            "token_expired",
        ),
        (
            "no exp",
            Some(sign(json!({"userId": "u1"}), DEV_JWT_SECRET)),
            "token_missing_exp",
        ),
        (
            "no user",
            Some(sign(json!({"exp": later}), DEV_JWT_SECRET)),
            "token_no_user",
        ),
        (
            "subject injection",
            Some(sign(
                json!({"userId": "42.>", "exp": later}),
                DEV_JWT_SECRET,
            )),
            "token_bad_user_id",
        ),
        (
            "wildcard",
            Some(sign(json!({"userId": "*", "exp": later}), DEV_JWT_SECRET)),
            "token_bad_user_id",
        ),
        (
            "space",
            Some(sign(json!({"sub": "a b", "exp": later}), DEV_JWT_SECRET)),
            "token_bad_user_id",
        ),
        (
            "too long",
            Some(sign(
                json!({"userId": "x".repeat(65), "exp": later}),
                DEV_JWT_SECRET,
            )),
            "token_bad_user_id",
        ),
    ];
    for (name, token, code) in cases {
        let refused = WsClient::connect(&gw.ws_url(), token.as_deref(), None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: upgrade was accepted"));
        assert_eq!(refused.status, 401, "{name}");
        assert_eq!(refused.body["error"], code, "{name}: {}", refused.body);
        assert!(refused.body["message"].is_string(), "{name}");
    }
    assert_eq!(gw.probe.users(), 0, "no subscription was created");
    assert_eq!(gw.probe.connections(), 0);
}

#[tokio::test]
async fn token_in_query_and_numeric_user_ids_are_accepted() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let t = sign(
        json!({"userId": 4242, "exp": time::OffsetDateTime::now_utc().unix_timestamp() + 60}),
        DEV_JWT_SECRET,
    );
    let mut c = WsClient::connect(&format!("{}?access_token={t}", gw.ws_url()), None, None)
        .await
        .expect("accepted");
    match c.frame().await {
        ziraai_proto::ServerFrame::Welcome { user_id, .. } => assert_eq!(user_id, "4242"),
        other => panic!("expected welcome, got {other:?}"),
    }
    assert!(gw.probe.has_user("4242"));
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_GATEWAY_ALLOWED_ORIGINS", "https://app.ziraai.com")],
    ))
    .await;
    let u = user("origin");
    let url = format!("{}?access_token={}", gw.ws_url(), token(&u));
    for (origin, want) in [
        ("https://evil.example", 403),
        ("https://app.ziraai.com", 101),
    ] {
        let status = raw_upgrade_status(gw.addr, &url, origin).await;
        assert_eq!(status, want, "{origin}");
    }
}

/// Sends an upgrade request with an Origin header and returns the status code.
async fn raw_upgrade_status(addr: std::net::SocketAddr, url: &str, origin: &str) -> u16 {
    let path = url
        .split_once(&addr.to_string())
        .map(|(_, p)| p)
        .expect("path");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
    );
    raw_http(addr, &req)
        .await
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn handshakes_are_rate_limited_per_address_and_nothing_else_is() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_GATEWAY_HANDSHAKE_BURST", "3"),
            ("ZIRAAI_GATEWAY_HANDSHAKE_INTERVAL", "1h"),
        ],
    ))
    .await;
    let u = user("eager");
    let t = token(&u);
    let negotiate = || {
        http_request(
            gw.addr,
            "POST",
            "/hubs/plantanalysis/negotiate?negotiateVersion=1",
            Some(&t),
            None,
        )
    };
    // Refused handshakes count too: a token-guessing loop is what this stops.
    let refused = WsClient::connect(&gw.ws_url(), Some("garbage"), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 401);
    let _a = WsClient::open(&gw.ws_url(), &u).await;
    let (status, _) = negotiate().await;
    assert_eq!(status, 200);
    let limited = WsClient::connect(&gw.ws_url(), Some(&t), None)
        .await
        .err()
        .expect("limited");
    assert_eq!(
        (limited.status, limited.body["error"].as_str()),
        (429, Some("too_many_handshakes"))
    );
    let (status, _) = negotiate().await;
    assert_eq!(status, 429, "negotiate shares the limit");
    let raw = raw_http(
        gw.addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.to_ascii_lowercase().contains("retry-after:"), "{raw}");
    assert_eq!(
        gw.get("/health/ready").await.0,
        200,
        "health is not limited"
    );
    let (status, _) = http_request(gw.addr, "GET", "/api/v1/notifications", Some(&t), None).await;
    assert_eq!(status, 200, "polling is not limited");
}

/// An `Origin` that is not text (a 0xFF byte) matches no allowed origin, not even `*`:
/// the socket upgrade and the SignalR preflight both refuse it (fail closed).
#[tokio::test]
async fn a_non_utf8_origin_is_refused_on_sockets_and_preflight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_GATEWAY_ALLOWED_ORIGINS", "*")],
    ))
    .await;
    let u = user("origin-bytes");
    let t = token(&u);
    let upgrade = format!(
        "GET /ws?access_token={t} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://\u{0}.example\r\n\r\n"
    );
    let preflight = "OPTIONS /hubs/plantanalysis/negotiate HTTP/1.1\r\nHost: x\r\nOrigin: https://\u{0}.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n".to_owned();
    for (what, request) in [("/ws", upgrade), ("negotiate preflight", preflight)] {
        // The placeholder NUL becomes the raw byte 0xFF (not UTF-8, valid obs-text).
        let bytes: Vec<u8> = request
            .bytes()
            .map(|b| if b == 0 { 0xff } else { b })
            .collect();
        let answer = within("raw exchange", async {
            let mut s = tokio::net::TcpStream::connect(gw.addr)
                .await
                .expect("connect");
            s.write_all(&bytes).await.expect("write");
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{what}: {answer}");
        assert!(answer.contains("origin_not_allowed"), "{what}: {answer}");
    }
}
