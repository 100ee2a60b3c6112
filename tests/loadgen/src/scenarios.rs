//! The delivery scenarios: A (light paced load), the JetStream ceiling, C (flat out),
//! D (paced sweep), the feature costs and the smoke run of `make test`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::harness::{Clients, Ctx, Meter, Phase, Sut, fill_published, measure, open_stack};
use crate::publish::{self, PublishPlan, Targets};
use crate::report::{Ratio, Row, ratio};

/// A: `--a-clients` sockets (one user each), `--a-rate` events/s to random users.
pub(crate) async fn a(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let row = delivery_case(
        ctx,
        "A",
        &args.protocol,
        ctx.opts(),
        args.tracing,
        (args.a_clients, Some(args.a_rate), args.duration),
    )
    .await?;
    ctx.push(row);
    Ok(())
}

/// Opens a fresh stack and `clients` sockets, runs one phase, closes everything.
async fn delivery_case(
    ctx: &Ctx,
    scenario: &str,
    protocol: &str,
    opts: crate::stack::GatewayOpts,
    traced: bool,
    (sockets, rate, duration): (usize, Option<u64>, Duration),
) -> anyhow::Result<Row> {
    let name = scenario.to_ascii_lowercase().replace(' ', "-");
    let sut = open_stack(ctx, &name, ctx.args.gateways, opts, traced).await?;
    let mut clients = Clients::open(ctx, &sut, protocol, sockets, 1).await?;
    let phase = Phase {
        scenario,
        phase: &phase_name(scenario),
        rate,
        duration,
        targets: Targets::Random,
    };
    let row = measure(ctx, &sut, &mut clients, phase).await;
    clients.close().await;
    sut.stack.stop().await;
    row
}

/// A phase name safe in an event id: letters and digits.
fn phase_name(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The ceiling: a fresh nats-server with the same streams and no gateway; the same
/// publishers flat out for `--duration` to `--c-clients` users: acknowledged events/s.
pub(crate) async fn ceiling(ctx: &mut Ctx) -> anyhow::Result<()> {
    let sut = open_stack(ctx, "ceiling", 0, ctx.opts(), false).await?;
    let users: Vec<_> = (0..ctx.args.c_clients)
        .map(|_| ziraai_e2e::user("lg"))
        .collect();
    let meter = Meter::start(&sut.stack, vec![]);
    let plan = PublishPlan {
        phase: "ceiling".into(),
        users: users.into(),
        targets: Targets::Random,
        rate: None,
        duration: ctx.args.duration,
        publishers: ctx.args.publishers,
        window: ctx.args.window,
        traced: false,
    };
    let published = publish::run(&sut.stack.nats.url(), &plan, CancellationToken::new()).await?;
    let cpu = meter.stop();
    let mut row = Row {
        scenario: "ceiling".into(),
        protocol: "(no gateway)".into(),
        ..Row::default()
    };
    fill_published(&mut row, &published);
    cpu.fill(&mut row, 0);
    row.nats_rss_kib = Some(crate::procstat::rss_kib(sut.stack.nats_pid()));
    row.notes.push(format!(
        "JetStream publish + RePublish alone: {} publishers × {} PubAcks in flight",
        ctx.args.publishers, ctx.args.window
    ));
    sut.stack.stop().await;
    ctx.push(row);
    Ok(())
}

/// C: `--c-clients` sockets, publishers flat out for `--duration`.
pub(crate) async fn c(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let mut row = delivery_case(
        ctx,
        "C",
        &args.protocol,
        ctx.opts(),
        args.tracing,
        (args.c_clients, None, args.duration),
    )
    .await?;
    let ceiling = ctx
        .rows
        .iter()
        .find(|r| r.scenario == "ceiling")
        .and_then(|r| r.acked_per_s);
    row.of_ceiling_pct = ratio(row.delivered_per_s, ceiling).map(|r| r * 100.0);
    ctx.push(row);
    Ok(())
}

/// D: `--d-clients` sockets on one stack, each rate of `--d-rates` for `--d-duration`.
pub(crate) async fn d(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let sut = open_stack(ctx, "d", args.gateways, ctx.opts(), args.tracing).await?;
    let mut clients = Clients::open(ctx, &sut, &args.protocol, args.d_clients, 1).await?;
    let mut result = Ok(());
    for &rate in &args.d_rates {
        let phase = Phase {
            scenario: &format!("D {rate}/s"),
            phase: &format!("d{rate}"),
            rate: Some(rate),
            duration: args.d_duration,
            targets: Targets::Random,
        };
        match measure(ctx, &sut, &mut clients, phase).await {
            Ok(mut row) => {
                if let Some(acked) = row.acked_per_s
                    && acked < rate as f64 * 0.95
                {
                    row.notes.push(format!(
                        "rate not held: {acked:.0}/s acknowledged of {rate}/s"
                    ));
                }
                ctx.push(row);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    clients.close().await;
    sut.stack.stop().await;
    result
}

/// The cost of each feature at A's load, one fresh stack per variant: tracking off,
/// tracing on, and each other protocol, against the baseline (first protocol,
/// tracking on, tracing off).
pub(crate) async fn features(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let base_proto = args
        .feature_protocols
        .first()
        .cloned()
        .unwrap_or_else(|| "json".into());
    let on = crate::stack::GatewayOpts {
        tracking: true,
        otlp: None,
        extra: args.gateway_env.clone(),
    };
    let off = crate::stack::GatewayOpts {
        tracking: false,
        ..on.clone()
    };
    let mut variants: Vec<(String, String, crate::stack::GatewayOpts, bool)> = vec![
        ("baseline".into(), base_proto.clone(), on.clone(), false),
        ("tracking off".into(), base_proto.clone(), off, false),
        ("tracing on".into(), base_proto.clone(), on.clone(), true),
    ];
    for p in args.feature_protocols.iter().skip(1) {
        variants.push((format!("protocol {p}"), p.clone(), on.clone(), false));
    }
    let mut base: Option<Row> = None;
    for (name, protocol, opts, traced) in variants {
        let scenario = format!("feature {name}");
        let row = delivery_case(
            ctx,
            &scenario,
            &protocol,
            opts,
            traced,
            (args.a_clients, Some(args.a_rate), args.feature_duration),
        )
        .await;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                ctx.fail(format!("{scenario}: {e:#}"));
                continue;
            }
        };
        match &base {
            None => base = Some(row.clone()),
            Some(b) => ctx.ratios.push(Ratio {
                name: format!("{name} (vs {base_proto}, tracking on, tracing off)"),
                cpu_per_delivery_x: ratio(row.gateway_us_per_delivery, b.gateway_us_per_delivery),
                p50_x: ratio(row.p50_ms, b.p50_ms),
                p99_x: ratio(row.p99_ms, b.p99_ms),
            }),
        }
        ctx.push(row);
    }
    Ok(())
}

/// The smoke run of `make test`: one gateway, `--smoke-sockets` sockets of each
/// protocol (two per user), 200 events/s for 1 s; fails on any loss or duplicate.
pub(crate) async fn smoke(ctx: &mut Ctx) -> anyhow::Result<()> {
    let args = ctx.args.clone();
    let sut: Sut = open_stack(ctx, "smoke", 1, ctx.opts(), false).await?;
    for protocol in &args.smoke_protocols {
        let mut clients = Clients::open(ctx, &sut, protocol, args.smoke_sockets, 2).await?;
        let phase = Phase {
            scenario: "smoke",
            phase: &format!("smoke{}", phase_name(protocol)),
            rate: Some(200),
            duration: Duration::from_secs(1),
            targets: Targets::Random,
        };
        let row = measure(ctx, &sut, &mut clients, phase).await;
        clients.close().await;
        let row = row?;
        if let Some(d) = row.duplicates.filter(|&d| d > 0) {
            ctx.fail(format!("smoke ({protocol}): {d} duplicate deliveries"));
        }
        if row.acked.unwrap_or(0) == 0 {
            ctx.fail(format!("smoke ({protocol}): nothing published"));
        }
        ctx.push(row);
    }
    sut.stack.stop().await;
    Ok(())
}
