//! Addresses and origins: forwarded client addresses honoured from trusted proxies only
//! (allow-list and rate-limit key follow them), `/health` details behind the
//! allow-list, origin patterns, and `null` refused in production.

use std::net::Ipv4Addr;
use std::time::Duration;

use ziraai_e2e::*;

const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies_for_the_allow_list() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_TRUSTED_PROXIES", "127.0.0.1"),
            ("ZIRAAI_METRICS_ALLOW", "198.51.100.9"),
        ],
    ))
    .await;
    let status = |src, path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let addr = gw.addr;
        async move { request_from(src, addr, "GET", path, headers).await.status }
    };
    let xff: &[(&str, &str)] = &[("X-Forwarded-For", "6.6.6.6, 198.51.100.9")];
    let forwarded: &[(&str, &str)] = &[("Forwarded", "for=\"198.51.100.9:4711\";proto=https")];
    for path in ["/metrics", "/health"] {
        assert_eq!(status(PROXY, path, xff).await, 200, "{path} via the proxy");
        assert_eq!(
            status(PROXY, path, forwarded).await,
            403,
            "{path}: the proxies write X-Forwarded-For; a Forwarded header is the client's own"
        );
        assert_eq!(
            status(PROXY, path, &[("X-Forwarded-For", "unknown")]).await,
            403,
            "{path}: an unreadable hop is an unknown client, not the proxy"
        );
        assert_eq!(
            status(PROXY, path, &[]).await,
            403,
            "{path}: the proxy itself is not allowed"
        );
        assert_eq!(
            status(STRANGER, path, xff).await,
            403,
            "{path}: a spoofed header from an untrusted peer is ignored"
        );
    }
    let refused = request_from(STRANGER, gw.addr, "GET", "/health", &[]).await;
    assert_eq!(refused.json()["error"], "forbidden");
    assert!(
        refused.json().get("nats").is_none(),
        "no details: {}",
        refused.body
    );
    // Liveness and readiness stay open to anyone.
    assert_eq!(status(STRANGER, "/health/live", &[]).await, 200);
    assert_eq!(status(STRANGER, "/health/ready", &[]).await, 200);
}

#[tokio::test]
async fn proxies_writing_rfc_7239_forwarded_are_read_only_when_configured() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_TRUSTED_PROXIES", "127.0.0.1"),
            ("ZIRAAI_TRUSTED_PROXY_HEADER", "forwarded"),
            ("ZIRAAI_METRICS_ALLOW", "198.51.100.9"),
        ],
    ))
    .await;
    let get = |headers: &'static [(&'static str, &'static str)]| {
        let addr = gw.addr;
        async move {
            request_from(PROXY, addr, "GET", "/metrics", headers)
                .await
                .status
        }
    };
    let forwarded: &[(&str, &str)] = &[("Forwarded", "for=\"198.51.100.9:4711\";proto=https")];
    assert_eq!(get(forwarded).await, 200, "RFC 7239 from the proxy");
    let xff: &[(&str, &str)] = &[("X-Forwarded-For", "198.51.100.9")];
    assert_eq!(
        get(xff).await,
        403,
        "now X-Forwarded-For is the client's own"
    );
    let hidden: &[(&str, &str)] = &[("Forwarded", "for=_hidden")];
    assert_eq!(get(hidden).await, 403, "an obfuscated hop is unknown");
}

#[tokio::test]
async fn the_rate_limit_key_follows_the_forwarded_client_and_ignores_spoofs() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("ZIRAAI_GATEWAY_HTTP_BURST", "2"),
            ("ZIRAAI_GATEWAY_HTTP_INTERVAL", "60s"),
            ("ZIRAAI_GATEWAY_HANDSHAKE_BURST", "1"),
            ("ZIRAAI_GATEWAY_HANDSHAKE_INTERVAL", "60s"),
        ],
    ))
    .await;
    let auth = format!("Bearer {}", token(&user("fwd")));
    let poll = |src, client: &str| {
        let (addr, auth, client) = (gw.addr, auth.clone(), client.to_owned());
        async move {
            let mut h = vec![("Authorization", auth.as_str())];
            if !client.is_empty() {
                h.push(("X-Forwarded-For", client.as_str()));
            }
            request_from(src, addr, "GET", "/api/v1/notifications", &h)
                .await
                .status
        }
    };
    // Through the proxy, each client has its own allowance.
    assert_eq!(poll(PROXY, "203.0.113.1").await, 200);
    assert_eq!(poll(PROXY, "203.0.113.1").await, 200);
    assert_eq!(poll(PROXY, "203.0.113.1").await, 429);
    assert_eq!(poll(PROXY, "203.0.113.2").await, 200, "another client");
    // An untrusted peer cannot dodge its limit by inventing addresses.
    assert_eq!(poll(STRANGER, "203.0.113.3").await, 200);
    assert_eq!(poll(STRANGER, "203.0.113.4").await, 200);
    assert_eq!(poll(STRANGER, "203.0.113.5").await, 429);
    assert_eq!(
        poll(STRANGER, "203.0.113.1").await,
        429,
        "nor borrow another client's"
    );
    // The handshake limit is keyed the same way.
    let t = token(&user("fwd-ws"));
    let upgrade = |client: &'static str| {
        let (addr, t) = (gw.addr, t.clone());
        async move {
            let answer = raw_http(
                addr,
                &format!(
                    "GET /ws?access_token={t} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                ),
            )
            .await;
            answer.split_whitespace().nth(1).unwrap_or("").to_owned()
        }
    };
    assert_eq!(upgrade("203.0.113.7").await, "101");
    assert_eq!(upgrade("203.0.113.7").await, "429");
    assert_eq!(upgrade("203.0.113.8").await, "101", "another client");
}

#[tokio::test]
async fn origin_patterns_match_exactly_one_label() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[(
            "ZIRAAI_GATEWAY_ALLOWED_ORIGINS",
            "https://*.ziraai.com,https://admin.example:8443",
        )],
    ))
    .await;
    let t = token(&user("origin"));
    let upgrade = |origin: &'static str| {
        let (addr, t) = (gw.addr, t.clone());
        async move {
            let answer = raw_http(
                addr,
                &format!(
                    "GET /ws?access_token={t} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                ),
            )
            .await;
            answer
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0)
        }
    };
    assert_eq!(upgrade("https://app.ziraai.com").await, 101);
    assert_eq!(upgrade("https://App.ZiraAI.com").await, 101);
    assert_eq!(upgrade("https://a.b.ziraai.com").await, 403, "two labels");
    assert_eq!(upgrade("https://ziraai.com").await, 403, "the apex");
    assert_eq!(upgrade("http://app.ziraai.com").await, 403, "the scheme");
    assert_eq!(
        upgrade("https://app.ziraai.com:8443").await,
        403,
        "the port"
    );
    assert_eq!(upgrade("https://admin.example:8443").await, 101);
    assert_eq!(upgrade("https://admin.example").await, 403);
    assert_eq!(upgrade("null").await, 403);
}

#[tokio::test]
async fn bad_origin_patterns_and_null_in_production_stop_the_gateway_with_exit_2() {
    let vars = std::collections::HashMap::from([
        ("ZIRAAI_ENV".to_owned(), "production".to_owned()),
        (
            "ZIRAAI_JWT_SECRET".to_owned(),
            "0123456789abcdef0123456789abcdef-prod".to_owned(),
        ),
        (
            "ZIRAAI_NATS_URL".to_owned(),
            "nats://svc:pw@127.0.0.1:1".to_owned(),
        ),
        (
            "ZIRAAI_GATEWAY_ALLOWED_ORIGINS".to_owned(),
            "https://*.ziraai.com,null,app.ziraai.com,https://x.*.ziraai.com".to_owned(),
        ),
    ]);
    let mut p = ServiceProcess::spawn("ziraai-gateway", &[], &vars);
    let status = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "stderr:\n{}", p.stderr());
    let lines: Vec<String> = p
        .stderr()
        .lines()
        .filter(|l| l.contains("ZIRAAI_GATEWAY_ALLOWED_ORIGINS"))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3, "one line per bad pattern: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("\"null\"")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("\"app.ziraai.com\"")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn the_workers_health_details_are_allow_listed_too() {
    let nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker = TestWorker::start(worker_config(
        &nats,
        &analyzer,
        &[("ZIRAAI_METRICS_ALLOW", "127.0.0.2")],
    ))
    .await;
    let get = |src, path| request_from(src, worker.health, "GET", path, &[]);
    let refused = get(PROXY, "/health").await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"], "forbidden");
    assert!(refused.json().get("breaker").is_none(), "{}", refused.body);
    let allowed = get(STRANGER, "/health").await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(allowed.json().get("breaker").is_some(), "{}", allowed.body);
    assert_eq!(get(PROXY, "/health/ready").await.status, 200);
    assert_eq!(get(PROXY, "/health/live").await.status, 200);
}
