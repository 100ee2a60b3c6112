//! HTTP API beside the sockets: polling, acknowledgement by HTTP, and the delivery
//! records of a user for operators (Admin role).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use ziraai_common::nats::DELIVERY_STREAM;
use ziraai_proto::{DeviceId, UserId};

use crate::AppState;
use crate::error::{ApiError, refuse, unavailable};
use crate::request_auth::authenticate;

/// Events per poll when `limit` is not given.
pub(crate) const DEFAULT_POLL_LIMIT: usize = 100;
/// Largest `limit` honoured (larger values are capped).
pub(crate) const MAX_POLL_LIMIT: usize = 1000;
/// Bound of one read from the `DELIVERY` stream.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

fn limit(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(DEFAULT_POLL_LIMIT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(MAX_POLL_LIMIT)),
            _ => Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                format!("limit={raw:?} is not a positive integer"),
            )),
        },
    }
}

fn sequence(query: &HashMap<String, String>, key: &str) -> Result<u64, ApiError> {
    match query.get(key) {
        None => Ok(0),
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                &format!("bad_{key}"),
                format!("{key}={raw:?} is not a sequence number"),
            )
        }),
    }
}

/// `GET /api/v1/notifications?since=<seq>&limit=<n>`: the caller's events after
/// `since`, oldest first, as the socket sends them; `next` is the `since` of the next
/// poll, never beyond the stream's last sequence.
pub(crate) async fn poll(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = authenticate(&app, &headers, &query)?;
    let (since, limit) = (sequence(&query, "since")?, limit(&query)?);
    let mut events = Vec::new();
    let mut next = since;
    while events.len() < limit {
        let event = app
            .store
            .next_after(&identity.user_id, next)
            .await
            .map_err(|e| unavailable(&e))?;
        let Some(event) = event else { break };
        next = event.seq;
        if let Some(frame) = event.frame {
            events.push(frame);
        }
    }
    if next == since && since > 0 {
        // Nothing after `since`: a `since` beyond the stream's end (a client number up
        // to u64::MAX) comes back as the end, so the next poll sees new events.
        let bounds = app.store.bounds().await.map_err(|e| unavailable(&e))?;
        next = since.min(bounds.last_seq);
    }
    Ok(Json(json!({ "events": events, "next": next })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AckBody {
    device_id: String,
    seq: u64,
}

/// `POST /api/v1/notifications/ack` with `{"deviceId": …, "seq": …}`: advances the
/// device's cursor (the same one socket acks advance), never backwards and never past
/// the user's latest event: a `seq` beyond it (up to u64::MAX) is clamped to it, so the
/// cursor never exceeds the stream's last sequence.
/// Largest HTTP ack body: a device id and a sequence.
const MAX_ACK_BODY: usize = 1024;

pub(crate) async fn ack(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // Authenticate before reading the body, and read it bounded in size and time: a
    // client that announces a body and never sends it is not held past the header
    // timeout (the slowloris of request bodies).
    let identity = authenticate(&app, &headers, &query)?;
    let read = axum::body::to_bytes(body, MAX_ACK_BODY);
    let bytes = match tokio::time::timeout(app.cfg.header_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("the body could not be read (at most {MAX_ACK_BODY} bytes): {e}"),
            ));
        }
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            ));
        }
    };
    let body: AckBody = serde_json::from_slice(&bytes).map_err(|e| {
        let hint = "expected {\"deviceId\": \"…\", \"seq\": n}";
        refuse(StatusCode::BAD_REQUEST, "bad_body", format!("{hint}: {e}"))
    })?;
    let device = DeviceId::parse(&body.device_id).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_device_id",
            format!("deviceId {e}"),
        )
    })?;
    let user = identity.user_id;
    let latest = app.store.latest(&user).await.map_err(|e| unavailable(&e))?;
    let cursor = app
        .cursors
        .advance(&user, &device, body.seq.min(latest))
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(json!({ "deviceId": device, "cursor": cursor })).into_response())
}

/// `GET /api/v1/admin/deliveries?userId=…[&seq=…][&after=…][&limit=…]` (Admin role):
/// the user's delivery records, oldest first; `next` pages (pass it as `after`).
pub(crate) async fn deliveries(
    State(app): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = authenticate(&app, &headers, &query)?;
    if !identity.is_admin() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the Admin role is required",
        ));
    }
    let user = query
        .get("userId")
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "bad_user_id", "userId is required"))?;
    let user = UserId::parse(user).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_user_id",
            format!("userId {e}"),
        )
    })?;
    let (seq, after, limit) = (
        sequence(&query, "seq")?,
        sequence(&query, "after")?,
        limit(&query)?,
    );
    let filter = if seq > 0 {
        format!("delivery.{user}.{seq}.>")
    } else {
        format!("delivery.{user}.>")
    };
    let stream = app
        .js
        .get_stream_no_info(DELIVERY_STREAM)
        .await
        .map_err(|e| unavailable(&e))?;
    let mut records = Vec::new();
    let mut next = after;
    while records.len() < limit {
        // No record is above u64::MAX: an `after` there reads nothing.
        let Some(from) = next.checked_add(1) else {
            break;
        };
        let read = stream.direct_get_next_for_subject(filter.clone(), Some(from));
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(m)) => {
                next = m.sequence;
                records.push(serde_json::from_slice::<Value>(&m.payload).unwrap_or(Value::Null));
            }
            Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => break,
            Ok(Err(e)) => return Err(unavailable(&e)),
            Err(_) => return Err(unavailable(&"reading DELIVERY timed out")),
        }
    }
    Ok(Json(json!({ "userId": user, "records": records, "next": next })).into_response())
}
