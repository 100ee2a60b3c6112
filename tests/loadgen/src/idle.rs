//! Idle sockets: B (gateway RSS per idle authenticated socket, one process) and the
//! 100,000-socket run (several gateway and client processes, a hold with RSS
//! sampled, then one event to every user and a broadcast burst).

use std::time::{Duration, Instant};

use crate::harness::{Clients, Ctx, Meter, Phase, Sut, measure, open_stack};
use crate::procstat::rss_kib;
use crate::publish::Targets;
use crate::report::Row;

/// How long sockets sit idle before RSS is read (allocations settle).
const SETTLE: Duration = Duration::from_secs(2);
/// How long B measures the CPU of idle sockets.
const IDLE_CPU: Duration = Duration::from_secs(5);

/// B: for each of `--b-protocols`, a fresh gateway process and `--b-sockets` idle
/// sockets (one user each): the growth of the gateway's, nats-server's and the client
/// processes' RSS per socket, and their CPU while the sockets sit idle.
pub(crate) async fn b(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    for protocol in &args.b_protocols {
        let sut = open_stack(ctx, &format!("b-{protocol}"), 1, ctx.opts(), args.tracing).await?;
        tokio::time::sleep(SETTLE).await;
        let (gw0, nats0) = rss(&sut);
        let clients = Clients::open(ctx, &sut, protocol, args.b_sockets, 1).await;
        let clients = match clients {
            Ok(c) => c,
            Err(e) => {
                sut.stack.stop().await;
                ctx.fail(format!("B ({protocol}): {e:#}"));
                continue;
            }
        };
        tokio::time::sleep(SETTLE).await;
        let (gw1, nats1) = rss(&sut);
        let client_rss: u64 = clients.pool.pids().iter().map(|&p| rss_kib(p)).sum();
        // What idle sockets cost in CPU (heartbeats, pings, timers).
        let meter = Meter::start(&sut.stack, clients.pool.pids());
        tokio::time::sleep(IDLE_CPU).await;
        let cpu = meter.stop();
        let n = args.b_sockets.max(1) as f64;
        let mut row = Row {
            scenario: "B".into(),
            protocol: protocol.clone(),
            gateways: 1,
            sockets: args.b_sockets,
            connect_per_s: Some(clients.connect_per_s),
            rss_per_socket_kib: Some(gw1.saturating_sub(gw0) as f64 / n),
            nats_rss_per_socket_kib: Some(nats1.saturating_sub(nats0) as f64 / n),
            client_rss_per_socket_kib: Some(client_rss as f64 / n),
            gateway_rss_kib: Some(gw1),
            nats_rss_kib: Some(nats1),
            notes: vec![format!(
                "gateway RSS {} → {} KiB, nats-server {} → {} KiB",
                gw0, gw1, nats0, nats1
            )],
            ..Row::default()
        };
        cpu.fill(&mut row, 0);
        row.notes.push(format!(
            "idle CPU over {IDLE_CPU:?}: gateway {:.1} %, nats-server {:.1} % of a core",
            row.gateway_cpu_pct.unwrap_or(0.0),
            row.nats_cpu_pct.unwrap_or(0.0)
        ));
        clients.close().await;
        sut.stack.stop().await;
        ctx.push(row);
    }
    Ok(())
}

/// Total RSS of the gateways, and nats-server's.
fn rss(sut: &Sut) -> (u64, u64) {
    (
        sut.stack.gateway_pids().iter().map(|&p| rss_kib(p)).sum(),
        rss_kib(sut.stack.nats_pid()),
    )
}

/// 100k: `--sockets` sockets (one user each) over ⌈sockets / per-gateway⌉ gateway
/// processes and client processes of at most `--per-child`, held idle for `--hold`
/// with the gateways' RSS sampled every 10 s, then one event to every user paced at
/// 5,000/s (0 lost), then a broadcast burst: one more event to every user, flat out.
pub(crate) async fn hundred_k(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let gateways = args.sockets.div_ceil(args.per_gateway.max(1)).max(1);
    println!(
        "  100k: {} sockets over {gateways} gateway processes, hold {:?}",
        args.sockets, args.hold
    );
    let sut = open_stack(ctx, "100k", gateways, ctx.opts(), args.tracing).await?;
    tokio::time::sleep(SETTLE).await;
    let (gw0, nats0) = rss(&sut);
    let mut clients = Clients::open(ctx, &sut, &args.protocol, args.sockets, 1).await?;
    tokio::time::sleep(SETTLE).await;
    let (gw1, nats1) = rss(&sut);
    let held = Instant::now();
    let mut samples = vec![gw1];
    while held.elapsed() < args.hold {
        tokio::time::sleep(Duration::from_secs(10).min(args.hold)).await;
        samples.push(rss(&sut).0);
        let st = clients.pool.status().await?;
        if st.status.connected_now < args.sockets {
            ctx.fail(format!(
                "100k: {} of {} sockets connected during the hold (last disconnect: {})",
                st.status.connected_now, args.sockets, st.last_disconnect
            ));
            break;
        }
    }
    let n = args.sockets.max(1) as f64;
    let idle = Row {
        scenario: "100k hold".into(),
        protocol: args.protocol.clone(),
        gateways,
        sockets: args.sockets,
        connect_per_s: Some(clients.connect_per_s),
        rss_per_socket_kib: Some(gw1.saturating_sub(gw0) as f64 / n),
        nats_rss_per_socket_kib: Some(nats1.saturating_sub(nats0) as f64 / n),
        gateway_rss_kib: samples.last().copied(),
        nats_rss_kib: Some(rss(&sut).1),
        rss_samples_kib: samples,
        notes: vec![format!("held {:.0} s", held.elapsed().as_secs_f64())],
        ..Row::default()
    };
    ctx.push(idle);
    for (scenario, phase, rate) in [
        ("100k every socket", "every", Some(5000)),
        ("100k broadcast", "burst", None),
    ] {
        let phase = Phase {
            scenario,
            phase,
            rate,
            duration: Duration::MAX,
            targets: Targets::EachOnce,
        };
        match measure(ctx, &sut, &mut clients, phase).await {
            Ok(row) => ctx.push(row),
            Err(e) => ctx.fail(format!("{scenario}: {e:#}")),
        }
    }
    clients.close().await;
    sut.stack.stop().await;
    Ok(())
}
