//! End-to-end harness: a real pinned `nats-server` per test (random port, own store
//! dir, killed on drop), gateways built in-process on `127.0.0.1:0`, real WebSocket
//! clients, and helpers that wait for conditions with deadlines instead of sleeping.

mod browser;
mod client;
mod cluster;
mod devices;
mod isolated;
mod keys;
mod load;
pub mod loadclient;
mod nats_server;
mod node;
mod otlp;
mod process;
pub mod prom;
mod proxy;
mod signalr;
mod source;
mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ziraai_common::GatewayServiceConfig;
use ziraai_gateway::{App, Probe};
use ziraai_proto::UserId;
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};
use ziraai_worker::{Published, Publisher};

pub use browser::{Card, DemoPage, PageStatus, PageView};
pub use client::{Refused, WsClient};
pub use cluster::NatsCluster;
pub use devices::{Balancer, Device, wait_connected};
pub use keys::{TestKey, short_token, token_with, unix_now};
pub use load::{
    DeviceResult, EventLoad, Sent, assert_every_device_has_everything,
    assert_stream_holds_each_once, first_delivery_after, stream_msg_ids,
};
pub use nats_server::{NatsServer, PINNED_VERSION, binary as nats_server_binary};
pub use otlp::metrics::ReceivedPoint;
pub use otlp::{OtlpProtocol, OtlpReceiver, ReceivedSpan};
pub use process::{
    ServiceProcess, bin_path, debian_tool, send_signal, shipped_config_dir, workspace_dir,
};
pub use proxy::Proxy;
pub use signalr::{JsClient, JsOptions};
pub use source::{Answer, connect_from, request_from};
pub use worker::{
    Behaviour, PublishCounts, TestAnalyzer, TestWorker, job_events, submit_job, worker_config,
    worker_vars,
};

/// Default bound of one awaited step in a test.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `fut` for at most `STEP`, failing the test with `what` on time-out.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?} waiting for {what}"),
    }
}

/// Awaits `fut` for at most `limit`, failing the test with `what` on time-out.
pub async fn within_for<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `cond` every 20 ms until it holds, failing the test after `STEP`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// What services connect to: one server or a whole cluster (`ZIRAAI_NATS_URL`).
pub trait NatsUrls {
    /// The value of `ZIRAAI_NATS_URL` (comma-separated for a cluster).
    fn nats_url(&self) -> String;
}

impl NatsUrls for NatsServer {
    fn nats_url(&self) -> String {
        self.url()
    }
}

impl NatsUrls for NatsCluster {
    fn nats_url(&self) -> String {
        self.urls()
    }
}

/// A random valid user id, so tests never share subjects by accident.
pub fn user(prefix: &str) -> UserId {
    UserId::parse(&format!("{prefix}-{}", nuid::next())).expect("generated ids are valid")
}

/// A token for `user` signed with the development secret the test gateways use.
pub fn token(user: &UserId) -> String {
    ziraai_gateway::auth::mint(
        &GatewayServiceConfig::development().auth.jwt_secret,
        user.as_str(),
        600,
    )
}

/// Configuration of a test gateway on `nats`, with `extra` variables applied.
pub fn gateway_config(nats: &impl NatsUrls, extra: &[(&str, &str)]) -> GatewayServiceConfig {
    GatewayServiceConfig::load(&gateway_vars(nats, extra)).expect("test configuration is valid")
}

/// The variables of a test gateway on `nats` (in-process or as a process).
pub fn gateway_vars(nats: &impl NatsUrls, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("ZIRAAI_CONFIG_DIR".into(), String::new()),
        ("ZIRAAI_NATS_URL".into(), nats.nats_url()),
        ("ZIRAAI_GATEWAY_LISTEN".into(), "127.0.0.1:0".into()),
        ("ZIRAAI_GATEWAY_SHUTDOWN_GRACE".into(), "5s".into()),
        // Every test client comes from 127.0.0.1; the limit has its own test.
        ("ZIRAAI_GATEWAY_HANDSHAKE_BURST".into(), "100000".into()),
        // Likewise for polling, ack and admin requests (tested in `bounds`).
        ("ZIRAAI_GATEWAY_HTTP_BURST".into(), "100000".into()),
    ]);
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    vars
}

/// A gateway running in-process on a runtime of its own, so a test can kill it
/// abruptly (every task dropped, every socket cut, nothing flushed) like a crash.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub probe: Probe,
    service: isolated::Isolated,
}

impl TestGateway {
    /// Starts a gateway on `nats` with default test settings.
    pub async fn start(nats: &impl NatsUrls) -> Self {
        Self::start_with(gateway_config(nats, &[])).await
    }

    /// Starts a gateway with `config`.
    pub async fn start_with(config: GatewayServiceConfig) -> Self {
        let (service, (addr, probe)) =
            isolated::Isolated::start::<App>("test-gateway", config).await;
        Self {
            addr,
            probe,
            service,
        }
    }

    /// `ws://…/ws` of this gateway.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://…/hubs/plantanalysis` of this gateway.
    pub fn hub_url(&self) -> String {
        format!("http://{}{}", self.addr, ziraai_gateway::signalr::HUB_PATH)
    }

    /// Triggers graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.service.shutdown().await
    }

    /// Kills the gateway: no close frames, no cursor flush, no drain.
    pub fn kill(mut self) {
        self.service.kill();
    }

    /// `GET path` on this gateway: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// `GET path` with `Authorization: Bearer <bearer>`: status and the body as JSON
    /// (null when it is not JSON).
    pub async fn get_json(&self, path: &str, bearer: &str) -> (u16, serde_json::Value) {
        let (status, body) = http_request(self.addr, "GET", path, Some(bearer), None).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `/health` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        let (_, body) = self.get("/health").await;
        serde_json::from_str(&body).expect("health is JSON")
    }
}

/// Minimal HTTP/1.1 GET (the health endpoints need no more).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, None).await
}

/// Minimal HTTP/1.1 request with an optional bearer token and JSON body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&serde_json::Value>,
) -> (u16, String) {
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = bearer {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if json.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let text = raw_http(addr, &req).await;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sends `request` as written and returns everything the server answered until it
/// closed the connection (or, for an accepted upgrade, the first read).
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    within("raw HTTP exchange", async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        if request.contains("Upgrade: websocket") {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
        } else {
            s.read_to_end(&mut buf).await.expect("read");
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
}

/// The stored cursor of (user, device) in the `CURSORS` bucket.
pub async fn stored_cursor(nats: &NatsServer, user: &UserId, device: &str) -> Option<u64> {
    let js = async_nats::jetstream::new(nats.client().await);
    let kv = within(
        "bind CURSORS",
        js.get_key_value(ziraai_common::nats::CURSORS_BUCKET),
    )
    .await
    .expect("bucket exists");
    let value = within("read cursor", kv.get(format!("{user}.{device}")))
        .await
        .expect("readable")?;
    std::str::from_utf8(&value).ok()?.parse().ok()
}

/// Waits until the device's stored cursor is `seq`.
pub async fn wait_for_cursor(nats: &NatsServer, user: &UserId, device: &str, seq: u64) {
    within("cursor stored", async {
        while stored_cursor(nats, user, device).await != Some(seq) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Publishes `n` completed analyses for `user`; returns their sequences.
pub async fn publish_many(publisher: &Publisher, user: &UserId, n: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        seqs.push(
            publish_completed(publisher, user, serde_json::json!(i))
                .await
                .1
                .seq,
        );
    }
    seqs
}

/// Publishes a completed analysis for `user` through the worker's `Publisher`.
pub async fn publish_completed(
    publisher: &Publisher,
    user: &UserId,
    result: serde_json::Value,
) -> (AnalysisOutcome, Published) {
    let outcome = AnalysisOutcome::completed(
        AnalysisId::Text(nuid::next().to_string()),
        user.clone(),
        result,
    );
    let published = within("publish", publisher.publish_outcome(&outcome))
        .await
        .expect("published");
    (outcome, published)
}
