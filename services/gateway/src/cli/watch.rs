//! `ziraai-gateway watch`: a command-line client of `/ws` that prints every event once.
//!
//! Lossless by default: it connects with a device id (`cli-<hostname>`, `--device`
//! overrides), so the gateway resumes it from that device's cursor, and it acknowledges
//! each event after printing it. When the socket ends (a gateway restart closes it with
//! 1012, a crash cuts it, the port refuses) it reconnects by itself with back-off
//! (100 ms doubling to 5 s) asking for `since=<position>`, the last printed sequence
//! (or, before the first event, where the first welcome said it resumed), and drops any
//! event at or below it: every event stored meanwhile is printed, once, in order. `--live-only` connects without a device id (no cursor kept between runs).
//!
//! stdout carries one JSON line per event and nothing else, so it can be piped; the
//! welcome, errors and reconnect notes go to stderr.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ziraai_common::config::{DEFAULT_DEMO_USER, GatewayServiceConfig as Config};
use ziraai_proto::DeviceId;

use super::token::{self, TokenArgs};

/// Where `make run`'s gateway listens.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8080/ws";
/// First reconnect delay; doubles up to [`BACKOFF_MAX`], reset by a successful connect.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bound of one connection attempt (TCP + HTTP upgrade).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The gateway pings every 30 s: this long without any frame means the path is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(95);
/// Lifetime of a token minted for one connection attempt.
const MINTED_TTL: Duration = Duration::from_secs(3600);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Arguments of `ziraai-gateway watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The gateway's WebSocket endpoint.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// User to watch; a token is minted for it with the configured secret
    /// (development only). Ignored with --token.
    #[arg(long, default_value = DEFAULT_DEMO_USER)]
    pub user: String,
    /// Connect with this token instead of minting one.
    #[arg(long, env = "ZIRAAI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Device id: the gateway resumes from this device's cursor and the acks advance
    /// it [default: cli-<hostname>].
    #[arg(long, conflicts_with = "live_only")]
    pub device: Option<DeviceId>,
    /// Connect without a device id: start with new events and keep no cursor between
    /// runs (reconnects within a run still continue where it left off).
    #[arg(long)]
    pub live_only: bool,
    /// Print every stored event after this sequence first (instead of the cursor).
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
}

/// How to reach the gateway, resolved once from the arguments.
#[derive(Debug)]
pub struct Plan {
    base: String,
    device: Option<DeviceId>,
    since: Option<u64>,
    token: Option<String>,
    mint: TokenArgs,
}

impl WatchArgs {
    /// Resolves the device id (default from the host name) and checks the user.
    pub fn plan(self) -> anyhow::Result<Plan> {
        let device = match (self.live_only, self.device) {
            (true, _) => None,
            (false, Some(d)) => Some(d),
            (false, None) => Some(default_device()),
        };
        if self.token.is_none() {
            ziraai_proto::UserId::parse(&self.user)
                .map_err(|e| anyhow::anyhow!("--user {:?} {e}", self.user))?;
        }
        Ok(Plan {
            base: self.url,
            device,
            since: self.since,
            token: self.token,
            mint: TokenArgs {
                user: self.user,
                roles: Vec::new(),
                ttl: MINTED_TTL,
            },
        })
    }
}

impl Plan {
    /// The URL of the next connection: the device id, and `since` the position
    /// reached (or `--since` before the first connection).
    pub fn url(&self, position: Option<u64>) -> String {
        let mut params = Vec::new();
        if let Some(d) = &self.device {
            params.push(format!("deviceId={d}"));
        }
        if let Some(s) = position.or(self.since) {
            params.push(format!("since={s}"));
        }
        if params.is_empty() {
            return self.base.clone();
        }
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", self.base, params.join("&"))
    }
}

/// `cli-<hostname>`, cut down to the device-id rule `[A-Za-z0-9_-]{1,64}`.
pub fn default_device() -> DeviceId {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    device_from_host(&host)
}

fn device_from_host(host: &str) -> DeviceId {
    let clean: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    let name = if clean.is_empty() { "host" } else { &clean };
    // Only the id alphabet remains and the length is at most 64.
    DeviceId::parse(&format!("cli-{name}")).unwrap_or_else(|_| default_fallback())
}

fn default_fallback() -> DeviceId {
    // A literal of the id alphabet.
    DeviceId::parse("cli-host").expect("a valid literal")
}

/// How one connection ended.
enum Ended {
    /// Stop signal or closed stdout: exit 0.
    Stopped,
    /// The socket is gone: reconnect.
    Lost(String),
}

/// Why a connection attempt failed.
enum ConnectError {
    /// Worth retrying: refused connection, 429, 5xx (draining, broker unavailable).
    Retry(String),
    /// Retrying cannot help: a bad token, URL or argument.
    Fatal(anyhow::Error),
}

/// Prints `plan`'s events as JSON lines until `stop` resolves; reconnects by itself.
pub async fn run(
    plan: Plan,
    config: &Config,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let user = match &plan.token {
        Some(_) => "named by --token",
        None => plan.mint.user.as_str(),
    };
    match &plan.device {
        Some(d) => eprintln!(
            "watch: user {user}, device id {d} (resumes from its cursor; --live-only opts out)"
        ),
        None => eprintln!("watch: user {user}, live only (no device id)"),
    }
    // Everything up to here was printed: the last event's sequence, or where the first
    // welcome resumed (a new device starts live, and its next connection must not).
    let mut position: Option<u64> = None;
    let mut backoff = BACKOFF_START;
    loop {
        let url = plan.url(position);
        let attempt = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = connect(&plan, config, &url) => r,
        };
        let why = match attempt {
            Err(ConnectError::Fatal(e)) => return Err(e),
            Err(ConnectError::Retry(why)) => why,
            Ok(ws) => {
                backoff = BACKOFF_START;
                match follow(ws, &mut position, &mut stop).await? {
                    Ended::Stopped => return Ok(()),
                    Ended::Lost(why) => why,
                }
            }
        };
        eprintln!("watch: {why}; reconnecting in {backoff:?}");
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connect(plan: &Plan, config: &Config, url: &str) -> Result<Socket, ConnectError> {
    let token = match &plan.token {
        Some(t) => t.clone(),
        None => token::mint(&plan.mint, config)
            .map_err(|e| ConnectError::Fatal(anyhow::Error::new(e).context("pass --token")))?,
    };
    let mut request = url
        .into_client_request()
        .with_context(|| format!("bad --url {url:?}"))
        .map_err(ConnectError::Fatal)?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .context("the token is not a header value")
        .map_err(ConnectError::Fatal)?;
    request.headers_mut().insert("Authorization", bearer);
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("ziraai.v1.json"),
    );
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| {
                ConnectError::Retry(format!("no answer from {url} within {CONNECT_TIMEOUT:?}"))
            })?;
    match connected {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let why = format!("{url} answered HTTP {status}: {body}");
            if status.as_u16() == 429 || status.is_server_error() {
                Err(ConnectError::Retry(why))
            } else {
                Err(ConnectError::Fatal(anyhow::anyhow!("refused: {why}")))
            }
        }
        Err(tungstenite::Error::Url(e)) => Err(ConnectError::Fatal(anyhow::anyhow!(
            "bad --url {url:?}: {e}"
        ))),
        Err(e) => Err(ConnectError::Retry(format!("cannot connect to {url}: {e}"))),
    }
}

/// Prints the socket's events until it ends; acks each after printing it.
async fn follow(
    mut ws: Socket,
    position: &mut Option<u64>,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> anyhow::Result<Ended> {
    loop {
        let next = tokio::select! {
            _ = &mut *stop => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return Ok(Ended::Stopped);
            }
            m = tokio::time::timeout(SILENCE_LIMIT, ws.next()) => m,
        };
        let text = match next {
            Err(_) => return Ok(Ended::Lost(format!("nothing heard for {SILENCE_LIMIT:?}"))),
            Ok(None) => return Ok(Ended::Lost("the connection ended".into())),
            Ok(Some(Err(e))) => return Ok(Ended::Lost(format!("connection lost: {e}"))),
            Ok(Some(Ok(Message::Close(frame)))) => return closed(frame),
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
        };
        let frame: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                eprintln!("watch: ignoring a frame that is not JSON: {text}");
                continue;
            }
        };
        match frame["type"].as_str() {
            Some("event") => {
                let Some(seq) = frame["seq"].as_u64() else {
                    eprintln!("watch: ignoring an event without seq: {text}");
                    continue;
                };
                if position.is_some_and(|last| seq <= last) {
                    continue; // printed before a reconnect
                }
                if !print_line(&text)? {
                    return Ok(Ended::Stopped);
                }
                *position = Some(seq);
                let ack = format!("{{\"type\":\"ack\",\"seq\":{seq}}}");
                if let Err(e) = ws.send(Message::Text(ack.into())).await {
                    return Ok(Ended::Lost(format!("connection lost: {e}")));
                }
            }
            Some("welcome") => {
                if position.is_none() {
                    *position = frame["resumedAfter"].as_u64();
                }
                eprintln!(
                    "watch: connected as {} ({}), resumed after {}",
                    frame["userId"].as_str().unwrap_or("?"),
                    frame["connectionId"].as_str().unwrap_or("?"),
                    frame["resumedAfter"]
                );
                if frame["gap"] == true {
                    eprintln!(
                        "watch: events after {} have expired from the stream; oldest available {}",
                        frame["resumedAfter"], frame["oldestAvailable"]
                    );
                }
                // Re-acknowledge what was printed before a reconnect: acks sent just
                // before a gateway crash may not have reached the device's cursor, and
                // nothing else would move it until the next event.
                if let Some(seq) = *position
                    && frame["resumedAfter"].as_u64() == Some(seq)
                    && seq > 0
                {
                    let ack = format!("{{\"type\":\"ack\",\"seq\":{seq}}}");
                    if let Err(e) = ws.send(Message::Text(ack.into())).await {
                        return Ok(Ended::Lost(format!("connection lost: {e}")));
                    }
                }
            }
            Some("error") => eprintln!("watch: the gateway reports {text}"),
            _ => {}
        }
    }
}

/// What a close frame means for the next step.
fn closed(frame: Option<tungstenite::protocol::CloseFrame>) -> anyhow::Result<Ended> {
    let Some(frame) = frame else {
        return Ok(Ended::Lost("closed by the gateway".into()));
    };
    let code = u16::from(frame.code);
    match frame.code {
        // The gateway refused this client's own frames: reconnecting would repeat it.
        CloseCode::Invalid | CloseCode::Policy | CloseCode::Size => {
            anyhow::bail!("closed by the gateway ({code} {})", frame.reason)
        }
        _ => Ok(Ended::Lost(format!(
            "closed by the gateway ({code} {})",
            frame.reason
        ))),
    }
}

/// Writes one line to stdout; `false` when stdout is closed (a pipe's reader left).
fn print_line(line: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
