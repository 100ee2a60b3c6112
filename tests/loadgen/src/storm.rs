//! STORM: `--storm-sockets` sockets on one gateway process while events are published
//! at `--storm-rate`; the gateway is stopped (SIGTERM: drain, or SIGKILL: crash),
//! stays down `--storm-outage`, and starts again on the same port. Every client
//! reconnects with its device id; reported: the time until all resumed, and lost /
//! duplicate deliveries of the events published before, during and after the outage.
//! NATS storm ([`nats_storm`]): the nats-server restarts under the same sockets, and the
//! latency of live events during the gateway's re-sync is measured.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::harness::{
    Clients, Ctx, collect, connect_limit, fill_delivered, fill_published, open_stack,
};
use crate::publish::{self, PublishPlan, Targets, unix_ns};
use crate::report::Row;

/// Publishing before the stop and after everyone resumed.
const AROUND: Duration = Duration::from_secs(2);
/// How long the gateway is started again (as a supervisor would) when it exits while
/// starting.
const RESTART_LIMIT: Duration = Duration::from_secs(180);

pub(crate) async fn storm(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let n = args.storm_sockets;
    let mut sut = open_stack(ctx, "storm", 1, ctx.opts(), args.tracing).await?;
    let mut clients = Clients::open(ctx, &sut, &args.protocol, n, 1).await?;
    for signal in &args.storm_signals {
        let phase = format!("storm{}", signal.to_ascii_lowercase());
        let before = clients.pool.status().await?.status;
        let stop = CancellationToken::new();
        let plan = PublishPlan {
            phase: phase.clone(),
            users: clients.users.clone(),
            targets: Targets::Random,
            rate: Some(args.storm_rate),
            duration: Duration::MAX,
            publishers: args.publishers,
            window: args.window,
            traced: false,
        };
        let url = sut.stack.nats.url();
        let publishing = {
            let stop = stop.clone();
            tokio::spawn(async move { publish::run(&url, &plan, stop).await })
        };
        tokio::time::sleep(AROUND).await;
        let stopped_at = Instant::now();
        let gateway = sut.stack.gateways.remove(0);
        let addr = gateway.addr;
        gateway.stop(signal).await?;
        let down_in = stopped_at.elapsed();
        tokio::time::sleep(args.storm_outage).await;
        let restart_ns = unix_ns();
        let restarted_at = Instant::now();
        // A gateway that cannot start (e.g. JetStream too busy to answer its stream
        // check in time) exits; start it again, as a supervisor would, and say so.
        let mut start_failures = 0;
        loop {
            match sut.stack.add_gateway(Some(addr)).await {
                Ok(_) => break,
                Err(e) if restarted_at.elapsed() < RESTART_LIMIT => {
                    eprintln!("  storm: gateway restart failed, starting it again: {e:#}");
                    start_failures += 1;
                }
                Err(e) => return Err(e),
            }
        }
        let started_in = restarted_at.elapsed();
        let resumed = clients
            .pool
            .wait_for("every socket resumed", connect_limit(n), |s| {
                s.connected_now >= n && s.resumed_connects - before.resumed_connects >= n as u64
            })
            .await;
        let after_restart = resumed
            .as_ref()
            .ok()
            .map(|st| st.status.last_connect_ns.saturating_sub(restart_ns) as f64 / 1e9);
        tokio::time::sleep(AROUND).await;
        stop.cancel();
        let published = publishing.await??;
        let t0 = Instant::now();
        let delivered = collect(ctx, &mut clients, &phase, &published).await?;
        let mut row = Row {
            scenario: format!("storm SIG{signal}"),
            protocol: args.protocol.clone(),
            gateways: 1,
            sockets: n,
            target_rate: Some(args.storm_rate),
            resumed_after_restart_s: after_restart,
            resumed_after_kill_s: after_restart
                .map(|s| s + (restarted_at - stopped_at).as_secs_f64()),
            ..Row::default()
        };
        fill_published(&mut row, &published);
        fill_delivered(&mut row, &delivered, t0.elapsed());
        // Rates over this phase say nothing (it includes the outage).
        row.delivered_per_s = None;
        row.notes.push(format!(
            "gateway down in {:.2} s after SIG{signal}, restarted after {:?}; repeats after a resume are expected (acks of the last second may be lost)",
            down_in.as_secs_f64(),
            args.storm_outage
        ));
        if start_failures > 0 {
            row.notes.push(format!(
                "the restarted gateway exited {start_failures} times while starting (see its log), and was up {:.1} s after the first start",
                started_in.as_secs_f64()
            ));
        }
        if let Err(e) = resumed {
            ctx.fail(format!("storm SIG{signal}: {e:#}"));
        }
        ctx.push(row);
    }
    clients.close().await;
    sut.stack.stop().await;
    Ok(())
}

/// How long live events are published once the nats-server is back.
const RESYNC_LOAD: Duration = Duration::from_secs(5);

/// NATS storm: `--storm-sockets` sockets (one user each) on one gateway; the
/// nats-server is killed and started again on the same port and store. Every gateway
/// re-syncs each local user; reported: the latency of live events published at
/// `--storm-rate` from the moment the server is back (while the re-sync runs), and
/// that every acknowledged event arrived.
pub(crate) async fn nats_storm(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let n = args.storm_sockets;
    let mut sut = open_stack(ctx, "nats-storm", 1, ctx.opts(), args.tracing).await?;
    let mut clients = Clients::open(ctx, &sut, &args.protocol, n, 1).await?;
    let stopped_at = Instant::now();
    sut.stack.nats.restart().await;
    let down_for = stopped_at.elapsed();
    let plan = PublishPlan {
        phase: "resync".into(),
        users: clients.users.clone(),
        targets: Targets::Random,
        rate: Some(args.storm_rate),
        duration: RESYNC_LOAD,
        publishers: args.publishers,
        window: args.window,
        traced: false,
    };
    let t0 = Instant::now();
    let published = publish::run(&sut.stack.nats.url(), &plan, CancellationToken::new()).await?;
    let delivered = collect(ctx, &mut clients, "resync", &published).await?;
    let mut row = Row {
        scenario: "storm NATS restart".into(),
        protocol: args.protocol.clone(),
        gateways: 1,
        sockets: n,
        target_rate: Some(args.storm_rate),
        ..Row::default()
    };
    fill_published(&mut row, &published);
    fill_delivered(&mut row, &delivered, t0.elapsed());
    row.delivered_per_s = None;
    let st = clients.pool.status().await?;
    row.notes.push(format!(
        "nats-server killed and back in {:.2} s; live events published for {RESYNC_LOAD:?} from then on, while the gateway re-syncs its {n} users; {} client disconnects",
        down_for.as_secs_f64(),
        st.status.disconnects
    ));
    ctx.push(row);
    clients.close().await;
    sut.stack.stop().await;
    Ok(())
}
