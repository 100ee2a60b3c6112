//! SignalR compatibility: `/hubs/plantanalysis` for the platform's existing web and
//! mobile SignalR clients, which switch to a gateway by changing only the base URL.
//!
//! Negotiate hands out a connection token signed by the gateway, so the WebSocket may
//! land on any gateway (no sticky sessions, nothing stored). After the hub handshake
//! the socket runs the same session as `/ws` with the SignalR dialect: events
//! become invocations (`analysis.completed` → `AnalysisCompleted(data)`), keep-alive
//! pings every 15 s, Close messages with `allowReconnect`. A `deviceId` query parameter
//! gives the same per-device cursor as `/ws`; as SignalR clients send no acks, a
//! written event counts as acknowledged.

mod connect;
mod dialect;
mod negotiate;
mod stateful;
mod token;

pub(crate) use stateful::Resumes;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

/// The hub path the platform's clients use.
pub const HUB_PATH: &str = "/hubs/plantanalysis";

/// Routes of the hub: negotiate (with its CORS preflight) and the WebSocket.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route(HUB_PATH, get(connect::upgrade)).route(
        &format!("{HUB_PATH}/negotiate"),
        post(negotiate::negotiate).options(negotiate::preflight),
    )
}

/// The size of a hub socket's future after the upgrade (see `sizes_tests`).
#[cfg(test)]
pub(crate) fn serve_future_size() -> usize {
    connect::serve_future_size()
}
