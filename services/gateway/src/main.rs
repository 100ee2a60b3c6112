//! `ziraai-gateway`: serve WebSocket clients (default), mint a development token, or
//! watch a user's notifications from the command line.

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use ziraai_common::{GatewayServiceConfig as Config, shutdown, telemetry};
use ziraai_gateway::{App, auth, watch};

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
    /// Print a token for USER signed with the configured secret (development tooling).
    Token {
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Connect to a gateway as USER and print every frame as a JSON line.
    Watch {
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        /// User to mint a token for with the configured secret (ignored with --token).
        #[arg(long, default_value = ziraai_common::config::DEFAULT_DEMO_USER)]
        user: String,
        /// Use this token instead of minting one.
        #[arg(long, env = "ZIRAAI_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Device id: resume from this device's cursor (acks advance it).
        #[arg(long)]
        device: Option<String>,
        /// Replay every event after this sequence first.
        #[arg(long)]
        since: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::for_main("ziraai-gateway") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Token { user, ttl } => token(&config, &user, ttl),
        Command::Watch {
            url,
            user,
            token,
            device,
            since,
        } => {
            let token =
                token.unwrap_or_else(|| auth::mint(&config.auth.jwt_secret, &user, 24 * 3600));
            let mut params = Vec::new();
            if let Some(d) = device {
                params.push(format!("deviceId={d}"));
            }
            if let Some(s) = since {
                params.push(format!("since={s}"));
            }
            let url = if params.is_empty() {
                url
            } else {
                format!("{url}?{}", params.join("&"))
            };
            watch::run(&url, &token, shutdown::signal()).await
        }
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
    telemetry::init(config.log_format);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
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

fn token(config: &Config, user: &str, ttl: i64) -> anyhow::Result<()> {
    ziraai_proto::UserId::parse(user).map_err(|e| anyhow::anyhow!("--user {user:?} {e}"))?;
    if config.auth.jwt_secret.expose_secret().is_empty() {
        anyhow::bail!("no JWT secret configured");
    }
    println!("{}", auth::mint(&config.auth.jwt_secret, user, ttl));
    Ok(())
}
