//! `make bench`: a load generator against a real gateway process, tracing off and on.
//!
//! Each run ([`run::run`]) starts the pinned nats-server (harness) and the release
//! `ziraai-gateway` as a child process, opens `--sockets` WebSockets (one user per two
//! sockets), reads the gateway's RSS before and after to get memory per idle socket,
//! then publishes `--events` events at `--rate` per second to random users and
//! measures publish-to-receive latency on every socket and the gateway's CPU per
//! delivery. `--tracing both` (the default) runs the same load twice in one
//! invocation: without an OTLP endpoint, then exporting every span (always-on sampler,
//! events carrying a `traceparent` as the worker's do) to an OTLP receiver in this
//! process, and prints the two side by side ([`report::print_table`]). Everything
//! talks to 127.0.0.1 and stops by itself.

mod report;
mod run;

/// The command line.
pub(crate) struct Args {
    pub(crate) sockets: usize,
    pub(crate) events: usize,
    pub(crate) rate: u64,
    pub(crate) tracking: bool,
    /// Runs with tracing off and/or on, in this order.
    pub(crate) tracing: Vec<bool>,
}

const USAGE: &str = "use --sockets N, --events N, --rate N, --no-tracking, --tracing both|on|off";

/// Parses the flags (without the program name).
fn parse(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        sockets: 2000,
        events: 2000,
        rate: 500,
        tracking: true,
        tracing: vec![false, true],
    };
    while let Some(flag) = it.next() {
        if flag == "--no-tracking" {
            a.tracking = false;
            continue;
        }
        let value = it.next().unwrap_or_default();
        if flag == "--tracing" {
            a.tracing = match value.as_str() {
                "both" => vec![false, true],
                "on" => vec![true],
                "off" => vec![false],
                other => anyhow::bail!("--tracing {other:?}: {USAGE}"),
            };
            continue;
        }
        let Ok(n) = value.parse::<u64>() else {
            anyhow::bail!("{flag} needs a number: {USAGE}");
        };
        match flag.as_str() {
            "--sockets" => a.sockets = n as usize,
            "--events" => a.events = n as usize,
            "--rate" => a.rate = n.max(1),
            other => anyhow::bail!("unknown flag {other}: {USAGE}"),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse(std::env::args().skip(1))?;
    println!("machine: {}", report::machine());
    println!(
        "load: {} sockets ({} users, 2 sockets each), {} events at {} /s, delivery tracking {}",
        args.sockets,
        args.sockets.div_ceil(2),
        args.events,
        args.rate,
        if args.tracking { "on" } else { "off" }
    );
    let mut runs = Vec::new();
    for &traced in &args.tracing {
        let label = if traced { "tracing on" } else { "tracing off" };
        println!("running with {label} ...");
        // A whole run is bounded: sockets, events, the wait for deliveries and spans.
        let limit = std::time::Duration::from_secs(
            120 + args.sockets as u64 / 50 + args.events as u64 / args.rate,
        );
        let figures = tokio::time::timeout(limit, run::run(&args, traced))
            .await
            .map_err(|_| anyhow::anyhow!("{label}: run not done in {limit:?}"))??;
        runs.push(figures);
    }
    report::print_table(&runs);
    for f in &runs {
        anyhow::ensure!(
            f.deliveries() == f.expected,
            "{}: lost deliveries ({} of {})",
            f.label,
            f.deliveries(),
            f.expected
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(flags: &str) -> anyhow::Result<Args> {
        parse(flags.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn tracing_defaults_to_both_runs_off_first() {
        let a = parsed("--sockets 10 --events 20 --rate 0 --no-tracking").expect("parses");
        assert_eq!(
            (a.sockets, a.events, a.rate, a.tracking),
            (10, 20, 1, false)
        );
        assert_eq!(a.tracing, vec![false, true]);
        assert_eq!(parsed("--tracing on").expect("parses").tracing, vec![true]);
        assert_eq!(
            parsed("--tracing off").expect("parses").tracing,
            vec![false]
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parsed("--tracing sometimes").is_err());
        assert!(parsed("--sockets many").is_err());
        assert!(parsed("--events").is_err());
        assert!(parsed("--speed 3").is_err());
    }
}
