//! End-to-end tests: real nats-server, real gateways, real WebSocket clients.

mod addresses;
mod auth;
mod banner;
mod bounds;
mod client_numbers;
mod conn_limit;
mod delivery;
mod demo_page;
mod durable;
mod forged;
mod lifecycle;
mod metrics;
mod permissions;
mod polling;
mod processes;
mod protocol;
mod scale_out;
mod shutdown;
mod signalr;
mod signalr_raw;
mod signalr_stateful;
mod soak;
mod token_life;
mod watch_cli;
mod worker;
mod worker_outcomes;
