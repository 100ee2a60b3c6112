//! `POST /hubs/plantanalysis/negotiate`: authenticates, and answers which transports
//! exist (WebSockets only, `Text` and `Binary`) with a connection id and token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::token;
use crate::AppState;
use crate::error::ApiError;
use crate::request_auth::{authenticate, check_origin};

/// Headers the browser client sends with negotiate (they trigger a CORS preflight).
const ALLOWED_HEADERS: &str = "authorization, x-requested-with, x-signalr-user-agent, content-type";

/// CORS headers for `origin` if it is allowed; `Err` (403) if it is not.
fn cors(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<Vec<(header::HeaderName, HeaderValue)>, ApiError> {
    let origin = headers.get(header::ORIGIN);
    check_origin(
        &app.cfg.allowed_origins,
        origin,
        app.env == ziraai_common::Environment::Production,
    )?;
    let Some(origin) = origin else {
        return Ok(Vec::new());
    };
    // Credentials are included by the client: echo the origin, never `*`.
    Ok(vec![
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
        (
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ),
        (header::VARY, HeaderValue::from_static("Origin")),
    ])
}

/// `OPTIONS …/negotiate`: the browser's CORS preflight.
pub(crate) async fn preflight(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut r = StatusCode::NO_CONTENT.into_response();
    for (k, v) in cors(&app, &headers)? {
        r.headers_mut().insert(k, v);
    }
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Ok(r)
}

pub(crate) async fn negotiate(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cors = cors(&app, &headers)?;
    let identity = authenticate(&app, &headers, &query)?;
    // The .NET server reads these keys case-insensitively.
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body = match param("negotiateVersion").map(str::parse::<u64>) {
        Some(Err(_)) => json!({"error": "The client requested a non-integer protocol version."}),
        version => {
            let version = version.and_then(Result::ok).unwrap_or(0).min(1);
            let cid = nuid::next().to_string();
            let stateful =
                param("useStatefulReconnect").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let token = token::issue(&app.auth_secret, &cid, identity.user_id.as_str(), stateful);
            let transports =
                json!([{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]);
            if version == 0 {
                // Version 0 has no separate token: the client sends `id=connectionId`.
                json!({"connectionId": token, "availableTransports": transports})
            } else {
                let mut body = json!({
                    "negotiateVersion": 1,
                    "connectionId": cid,
                    "connectionToken": token,
                    "availableTransports": transports,
                });
                // Only when asked: the client aborts if it did not ask and sees it.
                if stateful {
                    body["useStatefulReconnect"] = json!(true);
                }
                body
            }
        }
    };
    let mut r = Json(body).into_response();
    for (k, v) in cors {
        r.headers_mut().insert(k, v);
    }
    Ok(r)
}
