//! `ziraai-gateway`: serve WebSocket clients (default), mint a development token, or
//! watch a user's notifications from the command line.

use clap::{Parser, Subcommand};
use ziraai_common::{GatewayServiceConfig as Config, shutdown, telemetry};
use ziraai_gateway::auth::KeysError;
use ziraai_gateway::cli::{token, watch};
use ziraai_gateway::{App, KeyReloader};

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
    let gateway_id = ziraai_gateway::new_gateway_id();
    let traces = match command {
        Command::Serve => {
            let service = telemetry::ServiceInfo {
                default_name: "ziraai-gateway",
                version: env!("CARGO_PKG_VERSION"),
                instance_id: gateway_id.clone(),
                environment: config.env.as_str(),
            };
            let vars = std::env::vars().collect();
            let (traces, warnings) = telemetry::init_service(config.log_format, service, &vars);
            warnings.iter().for_each(|w| tracing::warn!("{w}"));
            Some(traces)
        }
        // One-shot tools: stdout is the result, logs only when something is wrong.
        Command::Token(_) | Command::Watch(_) => {
            telemetry::init_cli(config.log_format);
            None
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let result = match command {
        Command::Serve => serve(config, gateway_id).await,
        Command::Token(args) => token::mint(&args, &config)
            .map(|t| println!("{t}"))
            .map_err(anyhow::Error::from),
        Command::Watch(args) => match args.plan() {
            Ok(plan) => watch::run(plan, &config, shutdown::signal()).await,
            Err(e) => Err(e),
        },
    };
    if let Some(traces) = traces {
        traces.shutdown(telemetry::SHUTDOWN_GRACE);
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A bad public key file is a configuration error, like the config's own.
        Err(e) if e.downcast_ref::<KeysError>().is_some() => {
            eprintln!("ziraai-gateway: {e}");
            std::process::ExitCode::from(2)
        }
        // Too few JetStream servers for the replicas: one line, exit 2.
        Err(e)
            if e.downcast_ref::<ziraai_common::nats::NatsSetupError>()
                .is_some_and(ziraai_common::nats::NatsSetupError::is_refusal) =>
        {
            eprintln!("ziraai-gateway: {e}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ziraai-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, gateway_id: String) -> anyhow::Result<()> {
    if config.auth.dev_secret {
        tracing::warn!(
            "using the built-in development JWT secret; set ZIRAAI_JWT_SECRET for anything shared"
        );
    }
    let env = config.env;
    let app = App::build_as(config, gateway_id).await?;
    let reload = reload_on_sighup(app.key_reloader());
    let addr = app.local_addr()?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), env = env.as_str(), gateway_id = app.gateway_id(), %addr, "gateway listening");
    if env == ziraai_common::Environment::Development {
        tracing::info!("demo page (development only): http://{addr}/demo");
    }
    tokio::select! {
        result = app.run_until_stopped(shutdown::signal()) => result,
        () = reload => unreachable!("the SIGHUP loop never ends"),
    }
}

/// Re-reads the public key file at every SIGHUP (registered before this returns, so
/// a SIGHUP after the "listening" line never kills the process).
fn reload_on_sighup(keys: KeyReloader) -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup());
    async move {
        match hup {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading public keys");
                    keys.reload();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; keys reload only on restart")
            }
        }
        std::future::pending::<()>().await;
    }
}
