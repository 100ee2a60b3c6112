//! `ziraai-gateway`: serve WebSocket clients (default), mint a development token, or
//! watch a user's notifications from the command line.

use clap::{Parser, Subcommand};
use ziraai_common::{GatewayServiceConfig as Config, shutdown, telemetry};
use ziraai_gateway::App;
use ziraai_gateway::cli::{token, watch};

#[derive(Parser)]
#[command(
    name = "ziraai-gateway",
    version,
    about = "ZiraAI Realtime WebSocket gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve clients (the default).
    Serve,
    /// Print a development token for USER signed with the configured secret
    /// (refused outside ZIRAAI_ENV=development).
    Token(token::TokenArgs),
    /// Follow USER's events as JSON lines on stdout, resuming across restarts
    /// (device id by default) and acknowledging what it printed.
    Watch(watch::WatchArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::for_main("ziraai-gateway") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let command = cli.command.unwrap_or(Command::Serve);
    match command {
        Command::Serve => telemetry::init(config.log_format),
        // One-shot tools: stdout is the result, logs only when something is wrong.
        Command::Token(_) | Command::Watch(_) => telemetry::init_cli(config.log_format),
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let result = match command {
        Command::Serve => serve(config).await,
        Command::Token(args) => token::mint(&args, &config)
            .map(|t| println!("{t}"))
            .map_err(anyhow::Error::from),
        Command::Watch(args) => match args.plan() {
            Ok(plan) => watch::run(plan, &config, shutdown::signal()).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ziraai-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.auth.dev_secret {
        tracing::warn!(
            "using the built-in development JWT secret; set ZIRAAI_JWT_SECRET for anything shared"
        );
    }
    let env = config.env;
    let app = App::build(config).await?;
    let addr = app.local_addr()?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), env = env.as_str(), gateway_id = app.gateway_id(), %addr, "gateway listening");
    if env == ziraai_common::Environment::Development {
        tracing::info!("demo page (development only): http://{addr}/demo");
    }
    app.run_until_stopped(shutdown::signal()).await
}
