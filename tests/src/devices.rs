//! Devices for fault tests: a native socket that reconnects with its device id,
//! alternating between gateway URLs; the official SignalR client with automatic and
//! stateful reconnect, started again should it ever give up; and a round-robin TCP
//! balancer in front of gateways. Each records what it received, in arrival order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;
use ziraai_proto::{ServerFrame, UserId};

use crate::{JsClient, JsOptions, within_for};

/// Pause between two connection attempts of a device (pacing, not synchronisation).
const RECONNECT_PACE: Duration = Duration::from_millis(100);

/// What a device received, in arrival order.
#[derive(Debug, Clone)]
pub(crate) enum Got {
    /// A native event frame's sequence.
    Seq(u64),
    /// A SignalR invocation's `analysisId` (SignalR carries no sequence).
    Id(String),
}

#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) got: Mutex<Vec<(Got, Instant)>>,
    /// Connection events with the number of events received by then.
    pub(crate) marks: Mutex<Vec<(String, usize)>>,
    connected: AtomicU64,
    reconnects: AtomicU64,
}

/// A device of one user that stays connected, whatever happens to gateways or brokers.
pub struct Device {
    pub name: String,
    pub user: usize,
    pub(crate) inbox: Arc<Inbox>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Device {
    /// A native client (`/ws?deviceId=…`, acking every event) trying `urls` in turn
    /// whenever its socket ends.
    pub fn native(urls: Vec<String>, user: (usize, &UserId), device: &str) -> Self {
        let inbox = Arc::new(Inbox::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(native_loop(
            urls,
            user.1.clone(),
            device.to_owned(),
            inbox.clone(),
            stop.clone(),
        ));
        Self {
            name: format!("native {device}"),
            user: user.0,
            inbox,
            stop,
            task,
        }
    }

    /// The official SignalR client on `hub_url` (`…/hubs/plantanalysis`) with a device
    /// id, automatic and stateful reconnect; started again should it ever close.
    pub fn signalr(hub_url: String, user: (usize, &UserId), device: &str) -> Self {
        let inbox = Arc::new(Inbox::default());
        let stop = CancellationToken::new();
        let opts = JsOptions {
            url: format!("{hub_url}?deviceId={device}"),
            token: crate::token(user.1),
            protocol: "json",
            reconnect: true,
            stateful: true,
            ..JsOptions::default()
        };
        let task = tokio::spawn(signalr_loop(opts, inbox.clone(), stop.clone()));
        Self {
            name: format!("signalr {device}"),
            user: user.0,
            inbox,
            stop,
            task,
        }
    }

    /// Times this device connected (the first time included).
    pub fn connections(&self) -> u64 {
        self.inbox.connected.load(Ordering::SeqCst)
    }

    /// Times the connection dropped or the client reported reconnecting.
    pub fn reconnects(&self) -> u64 {
        self.inbox.reconnects.load(Ordering::SeqCst)
    }

    /// Received events as stream sequences (SignalR ids mapped through `seq_of`), in
    /// arrival order, with their arrival times.
    pub(crate) fn received(&self, seq_of: &HashMap<String, u64>) -> Vec<(u64, Instant)> {
        self.inbox
            .got
            .lock()
            .expect("lock")
            .iter()
            .map(|(g, at)| match g {
                Got::Seq(s) => (*s, *at),
                Got::Id(id) => (
                    *seq_of
                        .get(id)
                        .unwrap_or_else(|| panic!("{} got an unknown event {id}", self.name)),
                    *at,
                ),
            })
            .collect()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Waits until every device is connected (bounded by `limit`).
pub async fn wait_connected(devices: &[Device], limit: Duration) {
    within_for(limit, "every device connected", async {
        while devices.iter().any(|d| d.connections() == 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn native_loop(
    urls: Vec<String>,
    user: UserId,
    device: String,
    inbox: Arc<Inbox>,
    stop: CancellationToken,
) {
    let token = crate::token(&user);
    for attempt in 0usize.. {
        let url = format!("{}?deviceId={device}", urls[attempt % urls.len()]);
        let mut req = url.into_client_request().expect("valid URL");
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("header value");
        req.headers_mut().insert("Authorization", bearer);
        let connect = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(req),
        );
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = connect => c,
        };
        if let Ok(Ok((mut ws, _))) = connected {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                        return;
                    }
                    m = ws.next() => m,
                };
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(ServerFrame::Welcome { .. }) => {
                        inbox.connected.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(ServerFrame::Event(e)) => {
                        inbox
                            .got
                            .lock()
                            .expect("lock")
                            .push((Got::Seq(e.seq), Instant::now()));
                        let ack =
                            Message::Text(format!(r#"{{"type":"ack","seq":{}}}"#, e.seq).into());
                        if ws.send(ack).await.is_err() {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        inbox.reconnects.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_PACE) => {}
        }
    }
}

async fn signalr_loop(opts: JsOptions, inbox: Arc<Inbox>, stop: CancellationToken) {
    loop {
        let mut client = JsClient::start(opts.clone()).await;
        loop {
            let v = tokio::select! {
                _ = stop.cancelled() => {
                    client.command("stop").await;
                    return;
                }
                v = client.next_unbounded() => v,
            };
            let Some(v) = v else { break };
            if v["event"] != "invocation" {
                let n = inbox.got.lock().expect("lock").len();
                inbox.marks.lock().expect("lock").push((v.to_string(), n));
            }
            match v["event"].as_str() {
                Some("connected") => {
                    inbox.connected.fetch_add(1, Ordering::SeqCst);
                }
                Some("invocation") => {
                    let id = v["data"]["analysisId"].as_str().unwrap_or_default();
                    inbox
                        .got
                        .lock()
                        .expect("lock")
                        .push((Got::Id(id.to_owned()), Instant::now()));
                }
                Some("reconnecting") => {
                    inbox.reconnects.fetch_add(1, Ordering::SeqCst);
                }
                Some("closed" | "startFailed") => break,
                _ => {}
            }
        }
        // The client gave up (or its start failed): a new one resumes from the cursor.
        inbox.reconnects.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_PACE) => {}
        }
    }
}

/// A round-robin TCP balancer over gateways (what HAProxy does in front of them):
/// each new connection goes to the next backend; a backend taken out of the rotation
/// keeps its open connections until it closes them.
pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    accept: JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let backends = Arc::new(Mutex::new(backends));
        let b = backends.clone();
        let accept = tokio::spawn(async move {
            let next = AtomicU64::new(0);
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = {
                    let list = b.lock().expect("lock");
                    if list.is_empty() {
                        continue;
                    }
                    list[next.fetch_add(1, Ordering::Relaxed) as usize % list.len()]
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            addr,
            backends,
            accept,
        }
    }

    /// The backends new connections go to from now on.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().expect("lock") = backends;
    }

    /// `http://…/hubs/plantanalysis` through the balancer.
    pub fn hub_url(&self) -> String {
        format!("http://{}{}", self.addr, ziraai_gateway::signalr::HUB_PATH)
    }

    /// `ws://…/ws` through the balancer.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
