//! `ziraai-gateway`: serve WebSocket clients (default), mint a development token,
//! watch a user's notifications from the command line, or run operator commands.

use clap::{Parser, Subcommand};
use ziraai_common::{GatewayServiceConfig as Config, shutdown, telemetry};
use ziraai_gateway::auth::KeysError;
use ziraai_gateway::cli::{admin, token, watch};
use ziraai_gateway::{App, KeyReloader};

/// jemalloc with its background threads. Idle sockets cost the same as with glibc's
/// allocator (13.4 KiB each either way, measured), but after a storm of closes glibc
/// kept all of the memory (105 MB after 6,000 sockets closed) while jemalloc purges
/// it within seconds; `_RJEM_MALLOC_CONF` tunes it (e.g. `dirty_decay_ms:1000`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Operator commands (as the `operator` NATS user): a user's events and devices,
    /// deliveries of an event, set a cursor, replay to a device, erase a user.
    Admin(admin::AdminArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Admin(args)) = cli.command {
        return admin_main(args).await;
    }
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
        Command::Token(_) | Command::Watch(_) | Command::Admin(_) => {
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
        Command::Admin(_) => unreachable!("dispatched before the gateway configuration"),
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

/// `admin`: reads only the shared configuration (NATS, logs), so it runs in every
/// environment without the gateway's secrets.
async fn admin_main(args: admin::AdminArgs) -> std::process::ExitCode {
    let config = match ziraai_common::config::SharedConfig::for_main("ziraai-gateway admin") {
        Ok(c) => c,
        Err(code) => return code,
    };
    telemetry::init_cli(config.log_format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    admin::main(args, &config).await
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
