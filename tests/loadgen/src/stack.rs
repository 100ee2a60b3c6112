//! The system under test: the pinned nats-server (harness [`NatsServer`], random
//! port, own store dir) and release `ziraai-gateway` processes (the binary next to
//! this one), each on its own loopback port, with their logs in the run directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use ziraai_e2e::NatsServer;

/// Bound of a gateway's start (connect to NATS, apply the streams, listen, ready).
const READY: Duration = Duration::from_secs(30);
/// Bound of a gateway's exit after SIGTERM (its drain is bounded by its shutdown grace).
const EXIT: Duration = Duration::from_secs(30);
/// Sockets a gateway process may hold (the open-file limit is 20,000).
const MAX_CONNECTIONS: &str = "19900";

/// How the gateways run.
#[derive(Debug, Clone, Default)]
pub(crate) struct GatewayOpts {
    pub(crate) tracking: bool,
    /// OTLP/gRPC endpoint: tracing on, every span sampled.
    pub(crate) otlp: Option<String>,
    /// More `ZIRAAI_*` variables (`--gateway-env K=V`).
    pub(crate) extra: Vec<(String, String)>,
}

/// One `ziraai-gateway` process.
pub(crate) struct Gateway {
    pub(crate) addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Gateway {
    /// Starts the gateway on `addr` (port 0: a free one) and waits until it is ready.
    pub(crate) async fn start(
        nats_url: &str,
        addr: SocketAddr,
        opts: &GatewayOpts,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let addr = if addr.port() == 0 {
            std::net::TcpListener::bind(addr)?.local_addr()?
        } else {
            addr
        };
        let bin = std::env::current_exe()?.with_file_name("ziraai-gateway");
        anyhow::ensure!(
            bin.exists(),
            "{} missing: run `cargo build --release --bins` (make bench does)",
            bin.display()
        );
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ZIRAAI_CONFIG_DIR", "")
            .env("ZIRAAI_NATS_URL", nats_url)
            .env("ZIRAAI_GATEWAY_LISTEN", addr.to_string())
            .env("ZIRAAI_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            // Every client comes from loopback: no per-IP limits in the way.
            .env("ZIRAAI_GATEWAY_HANDSHAKE_BURST", "1000000")
            .env("ZIRAAI_GATEWAY_HTTP_BURST", "1000000")
            .env("ZIRAAI_GATEWAY_MAX_CONNECTIONS", MAX_CONNECTIONS)
            .env(
                "ZIRAAI_DELIVERY_TRACKING",
                if opts.tracking { "true" } else { "false" },
            )
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile)
            .kill_on_drop(true);
        if let Some(endpoint) = &opts.otlp {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .env("OTEL_TRACES_SAMPLER", "always_on")
                .env("OTEL_BSP_SCHEDULE_DELAY", "1000");
        }
        for (k, v) in &opts.extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let deadline = Instant::now() + READY;
        while ready_status(addr).await != Some(200) {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "gateway on {addr} exited ({status}) while starting; log {}",
                    log.display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "gateway on {addr} not ready in {READY:?}; log {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            addr,
            child,
            log: log.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends `signal` (`TERM` or `KILL`) and waits for the exit.
    pub(crate) async fn stop(mut self, signal: &str) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let status = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status()
                .await?;
            anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        }
        tokio::time::timeout(EXIT, self.child.wait())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "gateway {} still running {EXIT:?} after SIG{signal}; log {}",
                    self.addr,
                    self.log.display()
                )
            })??;
        Ok(())
    }

    /// `GET /health` as JSON (null when it does not answer).
    pub(crate) async fn health(&self) -> serde_json::Value {
        let body = http_get(self.addr, "/health")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }
}

/// A nats-server and the gateways of one scenario.
pub(crate) struct Stack {
    pub(crate) nats: NatsServer,
    pub(crate) gateways: Vec<Gateway>,
    pub(crate) opts: GatewayOpts,
    dir: PathBuf,
    name: String,
}

impl Stack {
    /// A fresh nats-server with the notification streams applied, and `gateways`
    /// gateway processes on it (logs `<dir>/<name>-gw<k>.log`).
    pub(crate) async fn start(
        dir: &Path,
        name: &str,
        gateways: usize,
        opts: GatewayOpts,
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await;
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
        ziraai_common::nats::apply_notify_streams(&js, 1).await?;
        let mut stack = Self {
            nats,
            gateways: Vec::new(),
            opts,
            dir: dir.to_owned(),
            name: name.to_owned(),
        };
        for _ in 0..gateways {
            stack.add_gateway(None).await?;
        }
        Ok(stack)
    }

    /// Starts one more gateway (on `addr`, else a free port); returns its index.
    pub(crate) async fn add_gateway(&mut self, addr: Option<SocketAddr>) -> anyhow::Result<usize> {
        let k = self.gateways.len();
        let log = self.dir.join(format!("{}-gw{k}.log", self.name));
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let g = Gateway::start(&self.nats.url(), addr, &self.opts, &log).await?;
        self.gateways.push(g);
        Ok(k)
    }

    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.gateways.iter().map(|g| g.addr).collect()
    }

    pub(crate) fn gateway_pids(&self) -> Vec<u32> {
        self.gateways.iter().map(Gateway::pid).collect()
    }

    pub(crate) fn nats_pid(&self) -> u32 {
        self.nats.pid().unwrap_or(0)
    }

    /// Stops every gateway (SIGTERM, bounded), then the nats-server (dropped).
    pub(crate) async fn stop(self) {
        for g in self.gateways {
            if let Err(e) = g.stop("TERM").await {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// Status of `GET /health/ready`, or `None` if nothing answers.
async fn ready_status(addr: SocketAddr) -> Option<u16> {
    http_get(addr, "/health/ready").await.map(|(s, _)| s)
}

/// A minimal HTTP/1.1 GET, bounded by 2 s: status and body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
        Some((status, body.unwrap_or_default()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}
