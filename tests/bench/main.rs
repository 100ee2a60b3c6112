//! `make bench`: a load generator against a real gateway process.
//!
//! Starts the pinned nats-server (harness), runs the release `ziraai-gateway` as a
//! child process, opens `--sockets` WebSockets (one user per two sockets), reads the
//! gateway's RSS before and after to get memory per idle socket, then publishes
//! `--events` events at `--rate` per second to random users and measures
//! publish-to-receive latency on every socket that receives them. Everything talks to
//! 127.0.0.1 and stops by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use ziraai_e2e::{NatsServer, STEP, http_get, token, user};
use ziraai_proto::analysis::{AnalysisId, AnalysisOutcome};

struct Args {
    sockets: usize,
    events: usize,
    rate: u64,
    tracking: bool,
}

fn args() -> Args {
    let mut a = Args {
        sockets: 2000,
        events: 2000,
        rate: 500,
        tracking: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-tracking" {
            a.tracking = false;
            continue;
        }
        let value = it
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--sockets" => a.sockets = value as usize,
            "--events" => a.events = value as usize,
            "--rate" => a.rate = value.max(1),
            other => {
                panic!("unknown flag {other} (use --sockets, --events, --rate, --no-tracking)")
            }
        }
    }
    a
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, in milliseconds.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 here, in ticks of 10 ms.
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) * 10
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let nats = NatsServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let bin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ziraai-gateway");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build --release --bins` (make bench does)",
        bin.display()
    );
    let mut gateway = tokio::process::Command::new(&bin)
        .env_remove("ZIRAAI_TEST_NATS_SERVER")
        .env("ZIRAAI_CONFIG_DIR", "")
        .env("ZIRAAI_NATS_URL", nats.url())
        .env("ZIRAAI_GATEWAY_LISTEN", &listen)
        .env("ZIRAAI_LOG_FORMAT", "json")
        .env("ZIRAAI_GATEWAY_HANDSHAKE_BURST", "1000000")
        .env("RUST_LOG", "warn")
        .env(
            "ZIRAAI_DELIVERY_TRACKING",
            if args.tracking { "true" } else { "false" },
        )
        .kill_on_drop(true)
        .spawn()?;
    let pid = gateway.id().unwrap_or(0);
    let addr: std::net::SocketAddr = listen.parse()?;
    let ready_by = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err()
        || http_get(addr, "/health/ready").await.0 != 200
    {
        anyhow::ensure!(Instant::now() < ready_by, "gateway not ready in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = rss_kib(pid);

    // Open the sockets: two per user, 100 handshakes in flight at a time.
    let users: Vec<_> = (0..args.sockets.div_ceil(2))
        .map(|_| user("bench"))
        .collect();
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<Duration>();
    let epoch = Arc::new(Instant::now());
    let url = format!("ws://{listen}/ws");
    let opened = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(100));
    let mut readers = Vec::new();
    for i in 0..args.sockets {
        let u = users[i / 2].clone();
        let (url, sem, lat_tx, epoch) = (url.clone(), sem.clone(), lat_tx.clone(), epoch.clone());
        let permit = sem.acquire_owned().await?;
        let connect = tokio_tungstenite::connect_async(format!("{url}?access_token={}", token(&u)));
        let (mut ws, _) = tokio::time::timeout(STEP, connect).await??;
        let _welcome = tokio::time::timeout(STEP, ws.next()).await?;
        drop(permit);
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    if let Some(sent) = v["data"]["result"]["sentAtNanos"].as_u64() {
                        let now = epoch.elapsed().as_nanos() as u64;
                        let _ = lat_tx.send(Duration::from_nanos(now.saturating_sub(sent)));
                        // Acknowledge like a real client (tracked as "acked").
                        let ack = format!(r#"{{"type":"ack","seq":{}}}"#, v["seq"]);
                        let _ =
                            futures_util::SinkExt::send(&mut ws, Message::Text(ack.into())).await;
                    }
                }
            }
        }));
    }
    drop(lat_tx);
    let open_time = opened.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await; // let allocations settle before sampling RSS
    let with_sockets = rss_kib(pid);

    // Publish events to random users at the target rate.
    let publisher = nats.publisher().await;
    let cpu_before = cpu_ms(pid);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut expected = 0usize;
    let mut publishes = Vec::new();
    for n in 0..args.events {
        let due = start + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let u = users[fastrand(n) % users.len()].clone();
        expected += 2;
        let sent = epoch.elapsed().as_nanos() as u64;
        let outcome = AnalysisOutcome::completed(
            AnalysisId::Text(format!("b{n}")),
            u,
            serde_json::json!({"sentAtNanos": sent}),
        );
        let p = publisher.clone();
        publishes.push(tokio::spawn(
            async move { p.publish_outcome(&outcome).await },
        ));
    }
    for p in publishes {
        tokio::time::timeout(STEP, p).await???;
    }
    let publish_time = start.elapsed();
    let mut lat = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while lat.len() < expected {
        match tokio::time::timeout_at(deadline, lat_rx.recv()).await {
            Ok(Some(d)) => lat.push(d),
            _ => break,
        }
    }
    lat.sort();
    let cpu_events = cpu_ms(pid).saturating_sub(cpu_before);
    let after = rss_kib(pid);
    for r in readers {
        r.abort();
    }
    let _ = gateway.start_kill();

    println!("machine: {}", machine());
    println!(
        "sockets: {} ({} users, 2 sockets each), opened in {:.2?}",
        args.sockets,
        users.len(),
        open_time
    );
    println!(
        "gateway RSS: {base} KiB idle, {with_sockets} KiB with sockets -> {:.1} KiB per socket; {after} KiB after the events",
        (with_sockets.saturating_sub(base)) as f64 / args.sockets as f64
    );
    println!(
        "events: {} published at {} /s target in {:.2?}; deliveries {} of {} expected",
        args.events,
        args.rate,
        publish_time,
        lat.len(),
        expected
    );
    println!(
        "gateway CPU during the events: {cpu_events} ms = {:.1} µs per delivery (delivery tracking {})",
        cpu_events as f64 * 1000.0 / lat.len().max(1) as f64,
        if args.tracking { "on" } else { "off" }
    );
    println!(
        "publish-to-receive latency: p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?}",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    anyhow::ensure!(lat.len() == expected, "lost deliveries");
    Ok(())
}

/// Deterministic spread of events over users (no extra dependency for randomness).
fn fastrand(n: usize) -> usize {
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x as usize
}
