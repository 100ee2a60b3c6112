//! `ziraai-loadgen`: the load generator of `make bench` and `make bench-100k`.
//!
//! `run` starts, per scenario, the pinned nats-server and release `ziraai-gateway`
//! processes (the binary next to this one), client processes (this binary again, role
//! `clients`, each holding up to ~19,000 sockets of one protocol), and publishers in
//! this process (JetStream, pipelined PubAcks, paced or flat out). It measures
//! publish-to-receive latency (HDR histograms), lost and duplicate deliveries per
//! client, connect rate, and RSS and CPU of every process from `/proc`; then writes
//! `<out>/<start>.json` and prints a Markdown table. It exits non-zero when a
//! scenario failed or lost an event. Everything runs on 127.0.0.0/8 and stops by itself.

mod cli;
mod clients;
mod harness;
mod idle;
mod pace;
mod pool;
mod procstat;
mod publish;
mod report;
mod scenarios;
mod stack;
mod storm;
mod tally;

use clap::Parser;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{Cli, Cmd, RunArgs, SCENARIOS};
use crate::harness::Ctx;
use crate::report::Report;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Clients => runtime.block_on(clients::run()),
        Cmd::Run(args) => {
            let ok = runtime.block_on(run(*args))?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn now_utc() -> String {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the scenarios (in the suite's order); true when nothing failed.
async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let started = now_utc();
    let dir = args.out.join(started.replace([':', '-'], ""));
    std::fs::create_dir_all(&dir)?;
    let machine = procstat::machine();
    let commit = procstat::commit();
    let load_before = procstat::load_average();
    println!(
        "ziraai-loadgen: commit {commit}, {} cores ({}), logs in {}",
        machine.cores,
        machine.cpu_model,
        dir.display()
    );
    let mut scenarios = args.scenarios.clone();
    scenarios.sort_by_key(|s| SCENARIOS.iter().position(|k| k == s));
    scenarios.dedup();
    let mut ctx = Ctx {
        args,
        dir,
        rows: Vec::new(),
        ratios: Vec::new(),
        errors: Vec::new(),
    };
    for s in &scenarios {
        println!("scenario {s} ...");
        let result = match s.as_str() {
            "a" => scenarios::a(&mut ctx).await,
            "b" => idle::b(&mut ctx).await,
            "ceiling" => scenarios::ceiling(&mut ctx).await,
            "c" => scenarios::c(&mut ctx).await,
            "d" => scenarios::d(&mut ctx).await,
            "storm" => storm::storm(&mut ctx).await,
            "nats-storm" => storm::nats_storm(&mut ctx).await,
            "features" => scenarios::features(&mut ctx).await,
            "100k" => idle::hundred_k(&mut ctx).await,
            "smoke" => scenarios::smoke(&mut ctx).await,
            other => Err(anyhow::anyhow!("unknown scenario {other}")),
        };
        if let Err(e) = result {
            ctx.fail(format!("scenario {s}: {e:#}"));
        }
    }
    let report = Report {
        started_utc: started,
        finished_utc: now_utc(),
        commit,
        machine,
        args: std::env::args().skip(1).collect(),
        load_before,
        load_after: procstat::load_average(),
        rows: ctx.rows,
        ratios: ctx.ratios,
        errors: ctx.errors,
    };
    let path = report.write_json(&ctx.args.out)?;
    println!("\n{}", report.markdown());
    println!("report: {}", path.display());
    Ok(report.errors.is_empty())
}
