//! What the gateway and the worker share: layered configuration, the NATS
//! connection and stream definitions, telemetry set-up and shutdown signals.

pub mod config;
pub mod health;
pub mod metrics;
pub mod nats;
pub mod origin;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigErrors, Environment, GatewayServiceConfig, WorkerServiceConfig};
