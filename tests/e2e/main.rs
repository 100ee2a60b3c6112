//! End-to-end tests: real nats-server, real gateways, real WebSocket clients.

mod auth;
mod banner;
mod client_numbers;
mod delivery;
mod demo_page;
mod durable;
mod forged;
mod lifecycle;
mod polling;
mod processes;
mod protocol;
mod scale_out;
mod shutdown;
mod signalr;
mod signalr_raw;
mod signalr_stateful;
mod soak;
mod watch_cli;
mod worker;
mod worker_outcomes;
