//! The hub endpoint at the byte level: negotiate, handshake refusals, keep-alive,
//! client timeout, oversized and malformed messages, connection ids.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use ziraai_e2e::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn negotiate(gw: &TestGateway, query: &str, bearer: Option<&str>) -> (u16, Value) {
    let (status, body) = http_request(
        gw.addr,
        "POST",
        &format!("/hubs/plantanalysis/negotiate{query}"),
        bearer,
        None,
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn open(url: &str) -> Ws {
    within("hub websocket", tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade")
        .0
}

/// Opens the hub socket and completes a JSON handshake.
async fn handshaken(gw: &TestGateway, user: &ziraai_proto::UserId) -> Ws {
    let mut ws = open(&format!(
        "ws://{}/hubs/plantanalysis?access_token={}",
        gw.addr,
        token(user)
    ))
    .await;
    send(&mut ws, "{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
    assert_eq!(text(&mut ws).await, "{}\u{1e}");
    ws
}

async fn send(ws: &mut Ws, text: &str) {
    within("send", ws.send(Message::Text(text.into())))
        .await
        .expect("sent");
}

async fn text(ws: &mut Ws) -> String {
    loop {
        match within("hub frame", ws.next()).await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next hub message (skipping pings), parsed.
async fn message(ws: &mut Ws) -> Value {
    loop {
        let t = text(ws).await;
        let v: Value = serde_json::from_str(t.trim_end_matches('\u{1e}')).expect("JSON record");
        if v["type"] != 6 {
            return v;
        }
    }
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match within("close", ws.next()).await {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test]
async fn negotiate_answers_like_asp_net_core() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("neg");
    let t = token(&u);
    let (status, v) = negotiate(&gw, "?negotiateVersion=1", Some(&t)).await;
    assert_eq!(status, 200);
    assert_eq!(v["negotiateVersion"], 1);
    assert_eq!(
        v["availableTransports"],
        json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}])
    );
    assert_eq!(v["connectionId"].as_str().map(str::len), Some(22));
    assert!(v.get("ProtocolVersion").is_none() && v.get("useStatefulReconnect").is_none());
    let token_id = v["connectionToken"].as_str().expect("token").to_owned();
    assert!(
        token_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "URL-safe"
    );

    let (_, v0) = negotiate(&gw, "", Some(&t)).await;
    assert!(
        v0.get("connectionToken").is_none() && v0.get("negotiateVersion").is_none(),
        "version 0: {v0}"
    );
    let (status, bad) = negotiate(&gw, "?negotiateVersion=abc", Some(&t)).await;
    assert_eq!(status, 200);
    assert!(bad["error"].is_string(), "{bad}");
    let (_, v9) = negotiate(&gw, "?negotiateVersion=9", Some(&t)).await;
    assert_eq!(v9["negotiateVersion"], 1);

    let (status, _) = negotiate(&gw, "?negotiateVersion=1", None).await;
    assert_eq!(status, 401, "an unauthenticated negotiate");
    let (status, _) = http_request(gw.addr, "POST", "/hubs/plantanalysis", Some(&t), None).await;
    assert_eq!(status, 405);

    // The negotiated id works for its user only, and only if it is ours.
    let url = |id: &str, who: &ziraai_proto::UserId| {
        format!(
            "ws://{}/hubs/plantanalysis?id={id}&access_token={}",
            gw.addr,
            token(who)
        )
    };
    drop(open(&url(&token_id, &u)).await);
    for (id, who, status) in [
        (token_id.as_str(), user("other"), 403),
        ("forged", u.clone(), 404),
    ] {
        let refused = WsClient::connect(&url(id, &who), None, None)
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, status, "{id}");
    }
}

#[tokio::test]
async fn cors_preflight_allows_configured_origins_only() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_GATEWAY_ALLOWED_ORIGINS", "https://app.ziraai.com")],
    ))
    .await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /hubs/plantanalysis/negotiate HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, x-signalr-user-agent\r\nConnection: close\r\n\r\n"
        )
    };
    let ok = raw_http(gw.addr, &preflight("https://app.ziraai.com"))
        .await
        .to_ascii_lowercase();
    assert!(ok.starts_with("http/1.1 204"), "{ok}");
    assert!(
        ok.contains("access-control-allow-origin: https://app.ziraai.com"),
        "{ok}"
    );
    assert!(
        ok.contains("access-control-allow-credentials: true"),
        "{ok}"
    );
    assert!(ok.contains("x-signalr-user-agent"), "{ok}");
    let denied = raw_http(gw.addr, &preflight("https://evil.example")).await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
}

#[tokio::test]
async fn handshake_refusals_use_the_dotnet_texts() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let u = user("hs");
    for (request, error) in [
        (
            "{\"protocol\":\"xml\",\"version\":1}\u{1e}",
            "The protocol 'xml' is not supported.",
        ),
        (
            "{\"protocol\":\"json\",\"version\":3}\u{1e}",
            "The server does not support version 3 of the 'json' protocol.",
        ),
        (
            "{\"version\":1}\u{1e}",
            "An unexpected error occurred during connection handshake.",
        ),
    ] {
        let mut ws = open(&format!(
            "ws://{}/hubs/plantanalysis?access_token={}",
            gw.addr,
            token(&u)
        ))
        .await;
        send(&mut ws, request).await;
        let v: Value =
            serde_json::from_str(text(&mut ws).await.trim_end_matches('\u{1e}')).expect("JSON");
        assert_eq!(v, json!({"error": error}));
        assert_eq!(close_code(&mut ws).await, Some(1000));
    }
    assert_eq!(
        gw.probe.users(),
        0,
        "no subscription for a failed handshake"
    );
}

#[tokio::test]
async fn keep_alive_pings_and_the_client_timeout() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[
            ("ZIRAAI_SIGNALR_KEEPALIVE", "1s"),
            ("ZIRAAI_SIGNALR_CLIENT_TIMEOUT", "3s"),
        ],
    ))
    .await;
    let u = user("ka");
    let mut ws = handshaken(&gw, &u).await;
    assert_eq!(
        text(&mut ws).await,
        "{\"type\":6}\u{1e}",
        "a ping when idle"
    );
    // Silent client: closed with the .NET error and allowReconnect.
    let close = message(&mut ws).await;
    assert_eq!(
        close,
        json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true})
    );
    assert_eq!(close_code(&mut ws).await, Some(1000));
}

#[tokio::test]
async fn oversized_and_malformed_messages_close_with_an_error_and_spare_others() {
    let nats = NatsServer::start().await;
    let gw = TestGateway::start_with(gateway_config(
        &nats,
        &[("ZIRAAI_SIGNALR_MAX_MESSAGE", "1024")],
    ))
    .await;
    let publisher = nats.publisher().await;
    let u = user("big");
    let mut bystander = handshaken(&gw, &u).await;
    let big = format!(
        "{{\"type\":1,\"target\":\"X\",\"arguments\":[\"{}\"]}}\u{1e}",
        "x".repeat(2048)
    );
    for bad in [
        big.as_str(),
        "{\"type\":1}\u{1e}",
        "not json\u{1e}",
        "{\"type\":6}",
    ] {
        let mut ws = handshaken(&gw, &u).await;
        send(&mut ws, bad).await;
        let close = message(&mut ws).await;
        assert_eq!(
            close,
            json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true}),
            "{bad:.40}"
        );
        assert_eq!(close_code(&mut ws).await, Some(1000));
    }
    let (outcome, _) = publish_completed(&publisher, &u, json!("still here")).await;
    let v = message(&mut bystander).await;
    assert_eq!(
        (v["type"].clone(), v["target"].clone()),
        (json!(1), json!("AnalysisCompleted"))
    );
    assert_eq!(
        v["arguments"][0]["analysisId"],
        json!(outcome.analysis_id())
    );
}
