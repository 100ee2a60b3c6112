//! Assembles the layers for one service: the environment, its file, the shared
//! section, then the calling service's own sections; unknown variables are warned about.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::file::{FileConfig, LogFile, NatsFile};
use super::loader::{Loader, parse_nonzero_duration};
use super::parse::split_list;
use super::*;

/// Variables of the shared section. With the gateway's and the worker's, every variable
/// some service reads: others starting with `ZIRAAI_` get a warning, in both services.
const SHARED_VARS: &[&str] = &[
    "ZIRAAI_ENV",
    "ZIRAAI_CONFIG_DIR",
    "ZIRAAI_NATS_URL",
    "ZIRAAI_NATS_CREDS_FILE",
    "ZIRAAI_NATS_TOKEN",
    "ZIRAAI_NATS_TOKEN_FILE",
    "ZIRAAI_NATS_USER",
    "ZIRAAI_NATS_PASSWORD",
    "ZIRAAI_NATS_PASSWORD_FILE",
    "ZIRAAI_NATS_CONNECT_TIMEOUT",
    "ZIRAAI_NATS_REPLICAS",
    "ZIRAAI_LOG_FORMAT",
    "ZIRAAI_METRICS_ALLOW",
];

/// `ziraai-gateway`: shared, `[gateway]` and the JWT secret.
pub(super) fn load_gateway(
    vars: &HashMap<String, String>,
) -> Result<GatewayServiceConfig, ConfigErrors> {
    let (mut l, file, shared) = begin(vars);
    let gateway = gateway::gateway(&mut l, file.gateway, shared.env);
    let auth = gateway::auth(&mut l, shared.env);
    let s = finish(l, shared)?;
    Ok(GatewayServiceConfig {
        env: s.env,
        nats: s.nats,
        log_format: s.log_format,
        metrics_allow: s.metrics_allow,
        warnings: s.warnings,
        gateway,
        auth,
    })
}

/// `ziraai-worker`: shared and `[worker]`.
pub(super) fn load_worker(
    vars: &HashMap<String, String>,
) -> Result<WorkerServiceConfig, ConfigErrors> {
    let (mut l, file, shared) = begin(vars);
    let worker = worker::worker(&mut l, file.worker);
    let s = finish(l, shared)?;
    Ok(WorkerServiceConfig {
        env: s.env,
        nats: s.nats,
        log_format: s.log_format,
        metrics_allow: s.metrics_allow,
        warnings: s.warnings,
        worker,
    })
}

/// Reads the environment, its file and the shared section; problems so far are in the
/// returned loader.
fn begin(vars: &HashMap<String, String>) -> (Loader<'_>, FileConfig, SharedConfig) {
    let mut l = Loader {
        vars,
        errors: Vec::new(),
    };
    let env = match vars.get("ZIRAAI_ENV").filter(|v| !v.is_empty()) {
        None => Environment::Development,
        Some(raw) => Environment::parse(raw).unwrap_or_else(|| {
            l.errors.push(format!(
                "ZIRAAI_ENV: {raw:?} is not one of development, staging, production"
            ));
            Environment::Development
        }),
    };
    let mut file = read_file_layer(env, vars).unwrap_or_else(|e| {
        l.errors.push(e);
        FileConfig::default()
    });
    let shared = SharedConfig {
        env,
        nats: nats(&mut l, std::mem::take(&mut file.nats), env),
        log_format: log_format(&mut l, std::mem::take(&mut file.log), env),
        metrics_allow: l.pick(
            "ZIRAAI_METRICS_ALLOW",
            file.metrics_allow.take().map(|v| v.join(",")),
            crate::metrics::IpRange::loopback(),
            |s| {
                split_list(s)
                    .iter()
                    .map(|r| crate::metrics::IpRange::parse(r))
                    .collect()
            },
        ),
        warnings: unknown_variables(vars),
    };
    (l, file, shared)
}

/// Every problem of every section at once, or the shared section.
fn finish(l: Loader<'_>, shared: SharedConfig) -> Result<SharedConfig, ConfigErrors> {
    if l.errors.is_empty() {
        Ok(shared)
    } else {
        Err(ConfigErrors(l.errors))
    }
}

fn read_file_layer(env: Environment, vars: &HashMap<String, String>) -> Result<FileConfig, String> {
    let path: PathBuf = match vars.get("ZIRAAI_CONFIG_DIR") {
        Some(dir) if dir.is_empty() => return Ok(FileConfig::default()),
        Some(dir) => {
            let p = Path::new(dir).join(format!("{}.toml", env.as_str()));
            if !p.exists() {
                return Err(format!("ZIRAAI_CONFIG_DIR: {} does not exist", p.display()));
            }
            p
        }
        None => {
            let p = Path::new("infra/config").join(format!("{}.toml", env.as_str()));
            if !p.exists() {
                return Ok(FileConfig::default());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The broker connection; production requires credentials (both services connect).
fn nats(l: &mut Loader<'_>, file: NatsFile, env: Environment) -> NatsConfig {
    let nats = NatsConfig {
        urls: l.pick(
            "ZIRAAI_NATS_URL",
            file.url,
            vec![DEFAULT_NATS_URL.into()],
            |s| {
                let urls = split_list(s);
                if urls.is_empty() {
                    Err("no URL given".into())
                } else {
                    Ok(urls)
                }
            },
        ),
        creds_file: l
            .var("ZIRAAI_NATS_CREDS_FILE")
            .map(str::to_owned)
            .or(file.creds_file)
            .map(PathBuf::from),
        token: l.secret("ZIRAAI_NATS_TOKEN"),
        user: l.var("ZIRAAI_NATS_USER").map(str::to_owned).or(file.user),
        password: l.secret("ZIRAAI_NATS_PASSWORD"),
        connect_timeout: l.pick(
            "ZIRAAI_NATS_CONNECT_TIMEOUT",
            file.connect_timeout,
            DEFAULT_NATS_CONNECT_TIMEOUT,
            parse_nonzero_duration,
        ),
        replicas: l.pick(
            "ZIRAAI_NATS_REPLICAS",
            file.replicas.map(|n| n.to_string()),
            DEFAULT_NATS_REPLICAS,
            parse_replicas,
        ),
    };
    if env == Environment::Production && !nats.has_auth() {
        l.errors.push(
            "NATS credentials are required in production: set ZIRAAI_NATS_CREDS_FILE, ZIRAAI_NATS_TOKEN, or ZIRAAI_NATS_USER with ZIRAAI_NATS_PASSWORD"
                .into(),
        );
    }
    nats
}

/// Replicas of a stream: 1 to [`MAX_NATS_REPLICAS`] (JetStream's own bounds).
fn parse_replicas(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_NATS_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{raw:?} is not a number of replicas from 1 to {MAX_NATS_REPLICAS} (1 for a single server, 3 for a 3-node cluster)"
        )),
    }
}

fn log_format(l: &mut Loader<'_>, file: LogFile, env: Environment) -> LogFormat {
    l.pick(
        "ZIRAAI_LOG_FORMAT",
        file.format,
        match env {
            Environment::Development => LogFormat::Pretty,
            _ => LogFormat::Json,
        },
        |s| match s.trim() {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            _ => Err(format!("{s:?} is not json or pretty")),
        },
    )
}

/// `ZIRAAI_*` variables no service reads (a variable of the other service is known).
fn unknown_variables(vars: &HashMap<String, String>) -> Vec<String> {
    let known = |k: &str| {
        [SHARED_VARS, gateway::VARS, worker::VARS]
            .iter()
            .any(|set| set.contains(&k))
    };
    let mut unknown: Vec<&String> = vars
        .keys()
        .filter(|k| k.starts_with("ZIRAAI_") && !known(k))
        .collect();
    unknown.sort();
    unknown
        .into_iter()
        .map(|k| format!("unknown variable {k} is ignored"))
        .collect()
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "validate_bounds_tests.rs"]
mod bounds_tests;

#[cfg(test)]
#[path = "validate_replicas_tests.rs"]
mod replicas_tests;
