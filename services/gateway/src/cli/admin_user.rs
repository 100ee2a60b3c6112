//! `admin user <userId>`: the user's retained events, devices (cursor and pending
//! count) and open sockets.
//!
//! Events: every message on `notify.<userId>` by direct get (bounded by the stream's
//! 10,000 messages per user), the newest `--limit` shown. Devices: the keys
//! `<userId>.*` of the bucket `CURSORS` (one subject-filtered stream-info request and
//! one read per device). Sockets: the keys `u.<userId>.<gatewayId>.<connectionId>` of
//! `CONNS`, and whether their gateway's heartbeat `gw.<gatewayId>` is there.

use async_nats::jetstream::{kv, message::StreamMessage};
use serde::Serialize;
use ziraai_common::nats::{CONNS_BUCKET, CURSORS_BUCKET};
use ziraai_proto::{Envelope, PayloadEncoding, UserId, headers};

use super::admin::{Ctx, Render, all_msgs_as, bounded, next_msg, or_dash, subjects, table};

/// Arguments of `admin user`.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// The user id (`[A-Za-z0-9_-]{1,64}`).
    pub user: UserId,
    /// Events to show, newest first kept (all of them are counted).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// One stored event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventRow {
    pub(crate) seq: u64,
    /// When the stream stored it (RFC 3339).
    pub(crate) time: String,
    /// The envelope's kind, `null` for a malformed message.
    pub(crate) kind: Option<String>,
    /// `data.analysisId` (as text), when the event has one.
    pub(crate) analysis_id: Option<String>,
    /// The producer's `Nats-Msg-Id`.
    pub(crate) id: Option<String>,
}

impl EventRow {
    /// Reads a `NOTIFY` message.
    pub(crate) fn from_msg(m: &StreamMessage) -> Self {
        let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
        let envelope = PayloadEncoding::from_content_type(header(headers::CONTENT_TYPE).as_deref())
            .and_then(|enc| Envelope::decode(&m.payload, enc))
            .ok();
        let analysis_id = envelope
            .as_ref()
            .and_then(|e| match e.data.get("analysisId") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            });
        Self {
            seq: m.sequence,
            time: ziraai_proto::envelope::rfc3339(m.time),
            kind: envelope.map(|e| e.kind),
            analysis_id,
            id: header("Nats-Msg-Id"),
        }
    }
}

/// One device of the user.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceRow {
    pub(crate) device_id: String,
    /// The last acknowledged sequence.
    pub(crate) cursor: u64,
    /// Retained events of the user after the cursor.
    pub(crate) pending: usize,
}

/// One open socket of the user.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SocketRow {
    pub(crate) gateway_id: String,
    pub(crate) connection_id: String,
    pub(crate) opened_at: Option<String>,
    /// Whether the gateway's heartbeat exists (a dead gateway's entries are stale).
    pub(crate) gateway_alive: bool,
}

/// What `admin user` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserReport {
    user_id: String,
    /// Every retained event of the user.
    event_count: usize,
    /// The newest `--limit` events, oldest first.
    events: Vec<EventRow>,
    devices: Vec<DeviceRow>,
    sockets: Vec<SocketRow>,
}

pub(crate) async fn run(ctx: &Ctx, args: UserArgs) -> anyhow::Result<UserReport> {
    let user = &args.user;
    let rows = all_msgs_as(&ctx.notify, &user.notify_subject(), EventRow::from_msg).await?;
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    let skip = rows.len().saturating_sub(args.limit);
    let events = rows.into_iter().skip(skip).collect();
    let devices = devices(ctx, user)
        .await?
        .into_iter()
        .map(|(device_id, cursor)| DeviceRow {
            pending: seqs.iter().filter(|s| **s > cursor).count(),
            device_id,
            cursor,
        })
        .collect();
    Ok(UserReport {
        user_id: user.to_string(),
        event_count: seqs.len(),
        events,
        devices,
        sockets: sockets(ctx, user).await?,
    })
}

/// The user's devices with a cursor, by device id.
pub(crate) async fn devices(ctx: &Ctx, user: &UserId) -> anyhow::Result<Vec<(String, u64)>> {
    let prefix = format!("$KV.{CURSORS_BUCKET}.{user}.");
    let mut out = Vec::new();
    for (subject, _) in subjects(&ctx.cursors_stream, &format!("{prefix}*")).await? {
        let Some(device) = subject.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(cursor) = cursor(ctx, user, device).await? {
            out.push((device.to_owned(), cursor));
        }
    }
    out.sort();
    Ok(out)
}

/// A device's stored cursor (`None`: no cursor, or a deleted key).
pub(crate) async fn cursor(ctx: &Ctx, user: &UserId, device: &str) -> anyhow::Result<Option<u64>> {
    Ok(cursor_entry(ctx, user, device)
        .await?
        .map(|(value, _)| value))
}

/// A device's cursor and its key's revision.
pub(crate) async fn cursor_entry(
    ctx: &Ctx,
    user: &UserId,
    device: &str,
) -> anyhow::Result<Option<(u64, u64)>> {
    let key = format!("{user}.{device}");
    let entry = bounded(
        &format!("reading cursor {key}"),
        ctx.cursors.entry(key.clone()),
    )
    .await?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| {
            let v = std::str::from_utf8(&e.value).ok()?.trim().parse().ok()?;
            Some((v, e.revision))
        }))
}

/// The user's entries in `CONNS`.
pub(crate) async fn sockets(ctx: &Ctx, user: &UserId) -> anyhow::Result<Vec<SocketRow>> {
    let prefix = format!("$KV.{CONNS_BUCKET}.u.{user}.");
    let mut out = Vec::new();
    for (subject, _) in subjects(&ctx.conns, &format!("{prefix}*.*")).await? {
        let Some((gateway, connection)) = subject
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('.'))
        else {
            continue;
        };
        let opened_at = next_msg(&ctx.conns, &subject, 1).await?.and_then(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
            v["openedAt"].as_str().map(str::to_owned)
        });
        let heartbeat = format!("$KV.{CONNS_BUCKET}.gw.{gateway}");
        out.push(SocketRow {
            gateway_id: gateway.to_owned(),
            connection_id: connection.to_owned(),
            opened_at,
            gateway_alive: next_msg(&ctx.conns, &heartbeat, 1).await?.is_some(),
        });
    }
    Ok(out)
}

impl Render for UserReport {
    fn table(&self) -> String {
        let shown = self.events.len();
        let mut out = format!(
            "user {}: {} retained events{}\n\n",
            self.user_id,
            self.event_count,
            if shown < self.event_count {
                format!(" (the newest {shown} shown; --limit)")
            } else {
                String::new()
            }
        );
        let rows: Vec<Vec<String>> = self
            .events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.time.clone(),
                    or_dash(e.kind.as_ref()),
                    or_dash(e.analysis_id.as_ref()),
                ]
            })
            .collect();
        out += &table(&["SEQ", "TIME", "KIND", "ANALYSIS ID"], &rows);
        let rows: Vec<Vec<String>> = self
            .devices
            .iter()
            .map(|d| {
                vec![
                    d.device_id.clone(),
                    d.cursor.to_string(),
                    d.pending.to_string(),
                ]
            })
            .collect();
        out += &format!("\ndevices: {}\n", self.devices.len());
        out += &table(&["DEVICE", "CURSOR", "PENDING"], &rows);
        let rows: Vec<Vec<String>> = self
            .sockets
            .iter()
            .map(|s| {
                vec![
                    s.gateway_id.clone(),
                    s.connection_id.clone(),
                    or_dash(s.opened_at.as_ref()),
                    if s.gateway_alive { "yes" } else { "no (stale)" }.to_owned(),
                ]
            })
            .collect();
        out += &format!("\nopen sockets: {}\n", self.sockets.len());
        out += &table(
            &["GATEWAY", "CONNECTION", "OPENED AT", "GATEWAY ALIVE"],
            &rows,
        );
        out
    }
}
