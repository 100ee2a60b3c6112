//! The command line: `ziraai-loadgen run [--scenarios …] [knobs]`, and the hidden
//! `clients` role the load generator re-executes itself with.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Every scenario, in the order the standard suite runs them.
pub(crate) const SCENARIOS: [&str; 10] = [
    "a",
    "b",
    "ceiling",
    "c",
    "d",
    "storm",
    "nats-storm",
    "features",
    "100k",
    "smoke",
];
/// `make bench`'s suite.
pub(crate) const STANDARD: &str = "a,b,ceiling,c,d,storm,nats-storm,features";

#[derive(Debug, Parser)]
#[command(
    name = "ziraai-loadgen",
    about = "Load generator: real nats-server and gateway processes, client processes, JetStream publishers; a JSON report and a Markdown table."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Runs scenarios and writes the report.
    Run(Box<RunArgs>),
    /// (internal) A client process: reads its spec and commands on stdin.
    #[command(hide = true)]
    Clients,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Comma-separated scenarios: a, b, ceiling, c, d, storm, nats-storm, features, 100k, smoke.
    #[arg(long, default_value = STANDARD, value_delimiter = ',', value_parser = scenario)]
    pub(crate) scenarios: Vec<String>,
    /// Gateway processes for A, C, D and features.
    #[arg(long, default_value_t = 2)]
    pub(crate) gateways: usize,
    /// Client protocol for A, C, D, storm: json, msgpack, signalr-json, signalr-msgpack.
    #[arg(long, default_value = "json")]
    pub(crate) protocol: String,
    /// Delivery tracking off in every gateway (the features scenario compares both).
    #[arg(long)]
    pub(crate) no_tracking: bool,
    /// Tracing on (OTLP to a receiver in this process) in every gateway.
    #[arg(long)]
    pub(crate) tracing: bool,
    /// Publisher tasks (each on its own NATS connection).
    #[arg(long, default_value_t = 4)]
    pub(crate) publishers: usize,
    /// PubAcks in flight per publisher.
    #[arg(long, default_value_t = 256)]
    pub(crate) window: usize,
    /// How long A, C and the ceiling publish.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub(crate) duration: Duration,
    /// Longest wait for the last deliveries after publishing stopped.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub(crate) drain: Duration,
    #[arg(long, default_value_t = 2000)]
    pub(crate) a_clients: usize,
    #[arg(long, default_value_t = 1000)]
    pub(crate) a_rate: u64,
    /// Idle sockets per protocol in B (one gateway process, one user per socket).
    #[arg(long, default_value_t = 19_000)]
    pub(crate) b_sockets: usize,
    #[arg(long, default_value = "json,signalr-json", value_delimiter = ',')]
    pub(crate) b_protocols: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    pub(crate) c_clients: usize,
    #[arg(long, default_value_t = 1000)]
    pub(crate) d_clients: usize,
    #[arg(long, default_value = "5000,10000,20000,40000", value_delimiter = ',')]
    pub(crate) d_rates: Vec<u64>,
    /// How long each rate of D publishes.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub(crate) d_duration: Duration,
    /// Sockets on the one gateway process that the storm restarts.
    #[arg(long, default_value_t = 19_000)]
    pub(crate) storm_sockets: usize,
    /// Signals of the storms, in order: TERM (drain) and/or KILL (crash).
    #[arg(long, default_value = "TERM,KILL", value_delimiter = ',', value_parser = signal)]
    pub(crate) storm_signals: Vec<String>,
    /// Events per second published during a storm (before, during and after the outage).
    #[arg(long, default_value_t = 200)]
    pub(crate) storm_rate: u64,
    /// How long the gateway stays down.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub(crate) storm_outage: Duration,
    /// Protocols the features scenario compares (the first is the baseline).
    #[arg(
        long,
        default_value = "json,msgpack,signalr-json,signalr-msgpack",
        value_delimiter = ','
    )]
    pub(crate) feature_protocols: Vec<String>,
    /// How long each features variant publishes (at A's rate to A's clients).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub(crate) feature_duration: Duration,
    /// Sockets of the 100k scenario.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) sockets: usize,
    /// How long the 100k scenario holds its sockets idle (RSS sampled throughout).
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub(crate) hold: Duration,
    /// Most sockets per gateway process in the 100k scenario (open files: 20,000).
    #[arg(long, default_value_t = 19_000)]
    pub(crate) per_gateway: usize,
    /// Most sockets per client process (open files: 20,000).
    #[arg(long, default_value_t = 19_000)]
    pub(crate) per_child: usize,
    /// Source addresses 127.0.0.2…; default: one per 20,000 sockets past 20,000.
    #[arg(long)]
    pub(crate) sources: Option<usize>,
    /// Handshakes in flight per client process.
    #[arg(long, default_value_t = 200)]
    pub(crate) connect_window: usize,
    /// Sockets of each protocol in the smoke scenario (two per user).
    #[arg(long, default_value_t = 100)]
    pub(crate) smoke_sockets: usize,
    /// Protocols of the smoke scenario.
    #[arg(
        long,
        default_value = "json,msgpack,signalr-json,signalr-msgpack",
        value_delimiter = ','
    )]
    pub(crate) smoke_protocols: Vec<String>,
    /// More gateway variables, `K=V` (repeatable), e.g. ZIRAAI_GATEWAY_OUTBOUND_QUEUE=16.
    #[arg(long = "gateway-env", value_parser = key_value)]
    pub(crate) gateway_env: Vec<(String, String)>,
    /// Directory of the JSON report and the processes' logs.
    #[arg(long, default_value = ".run/bench")]
    pub(crate) out: PathBuf,
}

fn scenario(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    if SCENARIOS.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(format!(
            "unknown scenario {s:?}: one of {}",
            SCENARIOS.join(", ")
        ))
    }
}

fn signal(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_uppercase();
    let s = s.trim_start_matches("SIG").to_owned();
    match s.as_str() {
        "TERM" | "KILL" => Ok(s),
        _ => Err(format!("{s:?}: TERM or KILL")),
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: K=V"))?;
    Ok((k.trim().to_owned(), v.to_owned()))
}

/// `250ms`, `10s`, `10m`, `1h`, or bare seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &str) -> Result<RunArgs, clap::Error> {
        let argv = std::iter::once("ziraai-loadgen run").chain(args.split_whitespace());
        let argv: Vec<&str> = argv.flat_map(|a| a.split(' ')).collect();
        Cli::try_parse_from(argv).map(|c| match c.command {
            Cmd::Run(a) => *a,
            Cmd::Clients => panic!("not run"),
        })
    }

    #[test]
    fn defaults_are_the_standard_suite() {
        let a = run("").expect("parses");
        assert_eq!(
            a.scenarios,
            [
                "a",
                "b",
                "ceiling",
                "c",
                "d",
                "storm",
                "nats-storm",
                "features"
            ]
        );
        assert_eq!(a.d_rates, [5000, 10000, 20000, 40000]);
        assert_eq!(a.storm_signals, ["TERM", "KILL"]);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.hold, Duration::from_secs(600));
        assert_eq!((a.gateways, a.publishers, a.window), (2, 4, 256));
        assert!(!a.no_tracking && !a.tracing);
    }

    #[test]
    fn knobs_parse() {
        let a = run(
            "--scenarios A,d --d-rates 1000,2000 --duration 500ms --storm-signals sigkill \
             --gateway-env ZIRAAI_GATEWAY_OUTBOUND_QUEUE=16 --no-tracking --sockets 1000 --hold 2m",
        )
        .expect("parses");
        assert_eq!(a.scenarios, ["a", "d"]);
        assert_eq!(a.d_rates, [1000, 2000]);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.storm_signals, ["KILL"]);
        assert_eq!(
            a.gateway_env,
            [("ZIRAAI_GATEWAY_OUTBOUND_QUEUE".to_owned(), "16".to_owned())]
        );
        assert!(a.no_tracking);
        assert_eq!((a.sockets, a.hold), (1000, Duration::from_secs(120)));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(run("--scenarios e").is_err());
        assert!(run("--duration fast").is_err());
        assert!(run("--duration 3d").is_err());
        assert!(run("--storm-signals HUP").is_err());
        assert!(run("--gateway-env NOVALUE").is_err());
        assert!(run("--sockets many").is_err());
        assert!(Cli::try_parse_from(["ziraai-loadgen"]).is_err());
        assert!(Cli::try_parse_from(["ziraai-loadgen", "clients"]).is_ok());
    }
}
