//! End-to-end tests: real nats-server, real gateways, real WebSocket clients.

mod auth;
mod delivery;
mod lifecycle;
mod protocol;
mod scale_out;
