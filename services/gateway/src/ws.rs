//! `GET /ws`: admit, pick the subprotocol, find the resume point, subscribe, upgrade,
//! and run the session with the native dialect.
//!
//! Every refusal is decided before the upgrade, so a refused client never gets a
//! socket (or a subscription).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use ziraai_proto::{Protocol, ServerFrame};

use crate::AppState;
use crate::error::{ApiError, handshake_timeout, refuse, unavailable};
use crate::event::Encoding;
use crate::session::native::NativeDialect;
use crate::session::refresh::Refresh;
use crate::socket::{Admitted, HANDSHAKE_DEADLINE, admit, ms, resume_params, resume_point, sized};

pub(crate) async fn upgrade(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let identity = admit(&app, &headers, &query)?;
    let chosen = subprotocol(&headers)?;
    let (since, device) = resume_params(&query)?;
    let ws = ws.map_err(|e| refuse(e.status(), "not_a_websocket", e.body_text()))?;
    let user = identity.user_id.clone();
    let started = tokio::time::Instant::now();
    let steps = async {
        let resume = resume_point(&app, &user, since, device.as_ref()).await?;
        let resumed = started.elapsed();
        let start = Admitted::new(app.clone(), user.clone(), device.clone())?
            .until_expiry_of(&identity)
            .start(
                Encoding::Native(chosen.unwrap_or(Protocol::Json)),
                None,
                resume.start_after,
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let subscribed = started.elapsed();
        let start = start.limited().await?;
        tracing::debug!(
            user = %user,
            resume_ms = ms(resumed),
            subscribe_ms = ms(subscribed - resumed),
            limit_ms = ms(started.elapsed() - subscribed),
            "handshake steps"
        );
        Ok::<_, ApiError>((resume, start))
    };
    let (resume, start) = match tokio::time::timeout(HANDSHAKE_DEADLINE, steps).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            tracing::debug!(user = %user, ms = ms(started.elapsed()), error = ?e, "handshake refused");
            return Err(e);
        }
        Err(_) => {
            tracing::debug!(user = %user, "handshake timed out");
            return Err(handshake_timeout(HANDSHAKE_DEADLINE));
        }
    };
    let protocol = chosen.unwrap_or(Protocol::Json);
    let device_id = device.as_ref().map(ToString::to_string);
    let ping_interval = app.cfg.ping_interval;
    let mut ws = sized(ws, app.cfg.max_client_frame);
    if let Some(p) = chosen {
        ws = ws.protocols([p.subprotocol()]);
    }
    let user_id = user.to_string();
    let refresh = Refresh {
        auth: app.auth.clone(),
        user: user.clone(),
    };
    let welcome = ServerFrame::Welcome {
        connection_id: start.connection_id().to_string(),
        user_id,
        resumed_after: resume.start_after,
        gap: resume.gap,
        oldest_available: resume.oldest_available,
        device_id,
    };
    let dialect = NativeDialect {
        protocol,
        welcome,
        ping_interval,
        refresh: Some(refresh),
    };
    // Boxed: axum's upgrade task keeps its callback for the socket's whole life.
    let started = Box::new((start, dialect));
    Ok(ws.on_upgrade(move |socket: WebSocket| {
        let (start, dialect) = *started;
        start.serve(socket, dialect)
    }))
}

/// The subprotocol the client offered and this gateway speaks; `None` when it
/// offered none (JSON without a `Sec-WebSocket-Protocol` answer).
fn subprotocol(headers: &HeaderMap) -> Result<Option<Protocol>, ApiError> {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    Protocol::negotiate(offered.iter().copied()).map_err(|names| {
        refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_subprotocol",
            format!("offered {names}; this gateway speaks ziraai.v1.json and ziraai.v1.msgpack"),
        )
    })
}
