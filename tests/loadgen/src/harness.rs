//! What every scenario uses: the run's context, opening a stack and its clients,
//! one measured publishing phase ([`measure`]), and the CPU meter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use ziraai_e2e::{OtlpProtocol, OtlpReceiver};
use ziraai_proto::UserId;

use crate::cli::RunArgs;
use crate::pool::{ClientPool, PoolPlan};
use crate::procstat::{cpu_ms, rss_kib};
use crate::publish::{self, PublishPlan, Published, Targets};
use crate::report::{Ratio, Row};
use crate::stack::{GatewayOpts, Stack};

/// Longest wait for every socket of a pool to connect: 100 sockets a second at least
/// (100,000 sockets connected at ~150/s on a saturated 2-core machine).
pub(crate) fn connect_limit(sockets: usize) -> Duration {
    Duration::from_secs(60 + sockets as u64 / 100)
}

/// The run: its arguments, where logs go, and what it measured so far.
pub(crate) struct Ctx {
    pub(crate) args: RunArgs,
    pub(crate) dir: PathBuf,
    pub(crate) rows: Vec<Row>,
    pub(crate) ratios: Vec<Ratio>,
    pub(crate) errors: Vec<String>,
}

impl Ctx {
    /// The gateway options of the run's flags (tracing needs a receiver: [`open_stack`]).
    pub(crate) fn opts(&self) -> GatewayOpts {
        GatewayOpts {
            tracking: !self.args.no_tracking,
            otlp: None,
            extra: self.args.gateway_env.clone(),
        }
    }

    /// Records a failed check (the run exits non-zero at the end).
    pub(crate) fn fail(&mut self, what: String) {
        eprintln!("FAILED: {what}");
        self.errors.push(what);
    }

    /// Adds `row`, failing the run if it lost events.
    pub(crate) fn push(&mut self, row: Row) {
        if let Some(lost) = row.lost.filter(|&l| l > 0) {
            self.fail(format!(
                "{} ({}): {lost} of {} deliveries lost",
                row.scenario,
                row.protocol,
                row.expected.unwrap_or(0)
            ));
        }
        let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let p99 = row
            .p99_ms
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "  {} {}: delivered {}/{}, lost {}, dup {}, p99 {p99} ms",
            row.scenario,
            row.protocol,
            n(row.delivered),
            n(row.expected),
            n(row.lost),
            n(row.duplicates),
        );
        self.rows.push(row);
    }
}

/// A stack with its OTLP receiver when traced.
pub(crate) struct Sut {
    pub(crate) stack: Stack,
    pub(crate) otlp: Option<OtlpReceiver>,
}

/// Starts a nats-server and `gateways` gateways with `opts` (and a receiver when `traced`).
pub(crate) async fn open_stack(
    ctx: &Ctx,
    name: &str,
    gateways: usize,
    mut opts: GatewayOpts,
    traced: bool,
) -> anyhow::Result<Sut> {
    let otlp = if traced {
        let r = OtlpReceiver::start(OtlpProtocol::Grpc).await?;
        opts.otlp = Some(r.endpoint());
        Some(r)
    } else {
        None
    };
    let stack = Stack::start(&ctx.dir, name, gateways, opts).await?;
    Ok(Sut { stack, otlp })
}

/// Clients connected to a stack: `sockets` sockets, `per_user` per user.
pub(crate) struct Clients {
    pub(crate) pool: ClientPool,
    pub(crate) users: Arc<Vec<UserId>>,
    pub(crate) protocol: String,
    pub(crate) connect_per_s: f64,
}

impl Clients {
    /// Opens the sockets over every gateway of `sut` and waits until all are up.
    pub(crate) async fn open(
        ctx: &Ctx,
        sut: &Sut,
        protocol: &str,
        sockets: usize,
        per_user: usize,
    ) -> anyhow::Result<Self> {
        let users: Vec<UserId> = (0..sockets.div_ceil(per_user.max(1)))
            .map(|_| ziraai_e2e::user("lg"))
            .collect();
        let names: Vec<String> = users.iter().map(|u| u.as_str().to_owned()).collect();
        let gateways = sut.stack.addrs();
        let device_prefix = format!("lg{}", &nuid::next().as_str()[..8]);
        let plan = PoolPlan {
            protocol,
            sockets,
            users: &names,
            gateways: &gateways,
            per_child: ctx.args.per_child,
            sources: ctx
                .args
                .sources
                .unwrap_or_else(|| PoolPlan::auto_sources(sockets)),
            reconnect: true,
            connect_window: ctx.args.connect_window,
            device_prefix: &device_prefix,
        };
        let mut pool = ClientPool::start(&plan).await?;
        let st = pool.wait_all_connected(connect_limit(sockets)).await?;
        let secs =
            (st.status.last_connect_ns.saturating_sub(start_ns(&pool)) as f64 / 1e9).max(1e-3);
        Ok(Self {
            pool,
            users: Arc::new(users),
            protocol: protocol.to_owned(),
            connect_per_s: sockets as f64 / secs,
        })
    }

    pub(crate) async fn close(self) {
        self.pool.stop().await;
    }
}

/// The pool's start as unix ns.
fn start_ns(pool: &ClientPool) -> u64 {
    publish::unix_ns().saturating_sub(pool.started.elapsed().as_nanos() as u64)
}

/// One publishing phase against connected clients, measured into a row.
pub(crate) struct Phase<'a> {
    pub(crate) scenario: &'a str,
    pub(crate) phase: &'a str,
    pub(crate) rate: Option<u64>,
    pub(crate) duration: Duration,
    pub(crate) targets: Targets,
}

/// Publishes `phase`, waits for its deliveries, and measures it.
pub(crate) async fn measure(
    ctx: &Ctx,
    sut: &Sut,
    clients: &mut Clients,
    phase: Phase<'_>,
) -> anyhow::Result<Row> {
    let before = clients.pool.status().await?;
    let meter = Meter::start(&sut.stack, clients.pool.pids());
    let plan = PublishPlan {
        phase: phase.phase.to_owned(),
        users: clients.users.clone(),
        targets: phase.targets,
        rate: phase.rate,
        duration: phase.duration,
        publishers: ctx.args.publishers,
        window: ctx.args.window,
        traced: sut.otlp.is_some(),
    };
    let t0 = Instant::now();
    let published = publish::run(&sut.stack.nats.url(), &plan, CancellationToken::new()).await?;
    let delivered = collect(ctx, clients, phase.phase, &published).await?;
    let wall = t0.elapsed();
    if sut.otlp.is_some() {
        // The last export batch leaves within the schedule delay (1 s): count its CPU.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let cpu = meter.stop();
    let after = clients.pool.status().await?;
    let mut row = Row {
        scenario: phase.scenario.to_owned(),
        protocol: clients.protocol.clone(),
        gateways: sut.stack.gateways.len(),
        sockets: clients.pool.sockets,
        target_rate: phase.rate,
        connect_per_s: Some(clients.connect_per_s),
        ..Row::default()
    };
    fill_published(&mut row, &published);
    fill_delivered(&mut row, &delivered, wall);
    cpu.fill(&mut row, delivered.distinct);
    row.gateway_rss_each_kib = sut
        .stack
        .gateway_pids()
        .iter()
        .map(|&p| rss_kib(p))
        .collect();
    row.gateway_rss_kib = Some(row.gateway_rss_each_kib.iter().sum());
    row.nats_rss_kib = Some(rss_kib(sut.stack.nats_pid()));
    let reconnects = after.status.disconnects - before.status.disconnects;
    if reconnects > 0 {
        row.notes.push(format!(
            "{reconnects} disconnects during the phase (clients resume with their device id); last: {}",
            after.last_disconnect
        ));
    }
    if let Some(otlp) = &sut.otlp {
        let spans = otlp.spans();
        let deliver = spans.iter().filter(|s| s.name == "notify.deliver").count();
        let (mut exported, mut dropped) = (0, 0);
        for g in &sut.stack.gateways {
            let h = g.health().await;
            exported += h["traces"]["exported"].as_u64().unwrap_or(0);
            dropped += h["traces"]["dropped"].as_u64().unwrap_or(0);
        }
        row.notes.push(format!(
            "tracing on: {} spans received ({deliver} notify.deliver); gateways exported {exported}, dropped {dropped}",
            spans.len()
        ));
    }
    Ok(row)
}

/// Waits for the deliveries of `published` in `phase` (bounded by `--drain`, plus a
/// second per 5,000 expected deliveries, after the publishers stopped).
pub(crate) async fn collect(
    ctx: &Ctx,
    clients: &mut Clients,
    phase: &str,
    published: &Published,
) -> anyhow::Result<crate::pool::Delivered> {
    let users = clients.users.len().max(1);
    let sockets = clients.pool.sockets;
    let expected: u64 = (0..sockets)
        .map(|i| published.acked_per_user[i % users])
        .sum();
    let acked = &published.acked_per_user;
    // A big burst (100,000 events) takes longer than the drain alone.
    let limit = ctx.args.drain + Duration::from_secs(expected / 5000);
    clients
        .pool
        .collect(phase, expected, |i| acked[i % users], limit)
        .await
}

pub(crate) fn fill_published(row: &mut Row, p: &Published) {
    row.acked = Some(p.acked);
    row.publish_failed = p.failed;
    row.acked_per_s = Some(p.acked_per_s());
    if let Some(e) = &p.first_error {
        row.notes.push(format!("first publish error: {e}"));
    }
}

pub(crate) fn fill_delivered(row: &mut Row, d: &crate::pool::Delivered, wall: Duration) {
    row.expected = Some(d.expected);
    row.delivered = Some(d.distinct);
    row.lost = Some(d.lost);
    row.duplicates = Some(d.duplicates);
    row.extra = Some(d.extra);
    row.delivered_per_s = Some(d.distinct as f64 / wall.as_secs_f64().max(1e-9));
    row.p50_ms = d.latency.ms(0.5);
    row.p90_ms = d.latency.ms(0.9);
    row.p99_ms = d.latency.ms(0.99);
    row.p999_ms = d.latency.ms(0.999);
    row.max_ms = d.latency.max_ms();
}

/// CPU of the gateways, nats-server, this process (the publishers) and the client
/// processes over a phase.
pub(crate) struct Meter {
    gateways: Vec<u32>,
    nats: u32,
    clients: Vec<u32>,
    t0: Instant,
    start: [u64; 4],
    start_each: Vec<u64>,
}

/// CPU milliseconds over a wall time.
pub(crate) struct Cpu {
    wall: Duration,
    ms: [u64; 4],
    gateway_each: Vec<u64>,
}

impl Meter {
    /// Starts measuring the stack's processes, this one and `clients`.
    pub(crate) fn start(stack: &Stack, clients: Vec<u32>) -> Self {
        let mut m = Self {
            gateways: stack.gateway_pids(),
            nats: stack.nats_pid(),
            clients,
            t0: Instant::now(),
            start: [0; 4],
            start_each: Vec::new(),
        };
        m.start = m.read();
        m.start_each = m.gateways.iter().map(|&p| cpu_ms(p)).collect();
        m.t0 = Instant::now();
        m
    }

    fn read(&self) -> [u64; 4] {
        [
            self.gateways.iter().map(|&p| cpu_ms(p)).sum(),
            cpu_ms(self.nats),
            cpu_ms(std::process::id()),
            self.clients.iter().map(|&p| cpu_ms(p)).sum(),
        ]
    }

    pub(crate) fn stop(&self) -> Cpu {
        let end = self.read();
        let mut ms = [0; 4];
        for i in 0..4 {
            ms[i] = end[i].saturating_sub(self.start[i]);
        }
        let gateway_each = self
            .gateways
            .iter()
            .zip(&self.start_each)
            .map(|(&p, &s)| cpu_ms(p).saturating_sub(s))
            .collect();
        Cpu {
            wall: self.t0.elapsed(),
            ms,
            gateway_each,
        }
    }
}

impl Cpu {
    fn pct(&self, i: usize) -> f64 {
        self.ms[i] as f64 / (self.wall.as_secs_f64() * 1000.0).max(1e-9) * 100.0
    }

    /// CPU % of each part, and the gateways' and nats-server's CPU per delivery.
    pub(crate) fn fill(&self, row: &mut Row, deliveries: u64) {
        row.gateway_cpu_pct = Some(self.pct(0));
        row.nats_cpu_pct = Some(self.pct(1));
        row.publisher_cpu_pct = Some(self.pct(2));
        row.clients_cpu_pct = Some(self.pct(3));
        row.gateway_cpu_each_ms = self.gateway_each.clone();
        if deliveries > 0 {
            row.gateway_us_per_delivery = Some(self.ms[0] as f64 * 1000.0 / deliveries as f64);
            row.nats_us_per_delivery = Some(self.ms[1] as f64 * 1000.0 / deliveries as f64);
        }
    }
}
