//! Logging set-up: JSON lines in staging and production, readable text in development.
//! `RUST_LOG` filters (default `info` for services, `warn` for one-shot commands). Tokens and secrets are never logged: the
//! configuration types keep them in `SecretString`, which does not print.
//! Trace context crosses NATS in W3C headers ([`propagation`]).

pub mod propagation;
pub use propagation::{extract, inject};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber for a service (default level `info`); a second
/// call (tests) is a no-op.
pub fn init(format: LogFormat) {
    init_at(format, "info");
}

/// Installs the global subscriber for a command-line tool whose stdout is its result:
/// default level `warn`, so connection chatter stays out of the terminal.
pub fn init_cli(format: LogFormat) {
    init_at(format, "warn");
}

fn init_at(format: LogFormat, default_level: &str) {
    // W3C `traceparent`/`tracestate` in NATS headers (see [`propagation`]).
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
