//! `admin set-cursor` and `admin replay`: move a device's cursor in the bucket
//! `CURSORS` (key `<userId>.<deviceId>`, the last acknowledged sequence).
//!
//! A socket that connects with `deviceId=<id>` and no `since` resumes after that
//! cursor (`since` wins over it; see `socket::resume_point`). So `replay` rewinds the
//! cursor to just before `--from` (default: the user's first retained event; never
//! forward, so no pending event is skipped), and the device's next resume by device id
//! receives every retained event from there. A socket that is connected meanwhile keeps
//! its position: the gateway has no message that rewinds a live session (its requests
//! on `ziraai.gateway.>` only evict, and an evicted client must not reconnect), so a
//! connected device receives the replay at its next resume; an ack it sends before
//! then moves the cursor forward again (cursors only move forward in the gateway).
//!
//! Both refuse (exit 2, nothing written) a device without a cursor (it never connected
//! with a device id) and a sequence beyond the stream's end. The write is a
//! compare-and-set on the key's revision: a concurrent ack makes it fail, not vanish.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::Serialize;
use ziraai_common::nats::NOTIFY_STREAM;
use ziraai_proto::{DeviceId, UserId};

use super::admin::{Ctx, OP_TIMEOUT, Render, all_msgs_as, refused};
use super::admin_user::{cursor_entry, devices, sockets};

/// Arguments of `admin set-cursor`.
#[derive(Debug, clap::Args)]
pub struct SetCursorArgs {
    #[arg(long)]
    pub user: UserId,
    #[arg(long)]
    pub device: DeviceId,
    /// The new cursor: the device's next resume by device id starts after it (0: from
    /// the first retained event). At most the stream's last sequence.
    #[arg(long)]
    pub seq: u64,
}

/// Arguments of `admin replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[arg(long)]
    pub user: UserId,
    #[arg(long)]
    pub device: DeviceId,
    /// First sequence to replay [default: the user's first retained event].
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
}

/// What `set-cursor` and `replay` print.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CursorReport {
    user_id: String,
    device_id: String,
    /// The cursor before.
    previous: u64,
    /// The cursor now.
    cursor: u64,
    /// Retained events of the user after the new cursor: what the device's next
    /// resume by device id receives.
    pending: usize,
    /// Open sockets of the user (CONNS): a connected device receives the events only
    /// at its next resume.
    open_sockets: usize,
}

pub(crate) async fn set(ctx: &Ctx, args: SetCursorArgs) -> anyhow::Result<CursorReport> {
    let (previous, revision) = known_device(ctx, &args.user, &args.device).await?;
    let last = ctx.last_seq(NOTIFY_STREAM).await?;
    if args.seq > last {
        return refused(format!(
            "--seq {} is beyond the last sequence of stream NOTIFY ({last}); nothing changed",
            args.seq
        ));
    }
    write(ctx, &args.user, &args.device, args.seq, previous, revision).await
}

pub(crate) async fn replay(ctx: &Ctx, args: ReplayArgs) -> anyhow::Result<CursorReport> {
    let (previous, revision) = known_device(ctx, &args.user, &args.device).await?;
    let seqs = all_msgs_as(&ctx.notify, &args.user.notify_subject(), |m| m.sequence).await?;
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return refused(format!(
            "user {} has no retained events to replay; nothing changed",
            args.user
        ));
    };
    let from = args.from.unwrap_or(first);
    if from > last {
        return refused(format!(
            "--from {from} is after the last retained event of user {} ({}); nothing changed",
            args.user, last
        ));
    }
    // Never forward: events still pending before --from stay pending.
    let target = from.saturating_sub(1).min(previous);
    write(ctx, &args.user, &args.device, target, previous, revision).await
}

/// The device's cursor and key revision, or a refusal naming the user's devices.
async fn known_device(ctx: &Ctx, user: &UserId, device: &DeviceId) -> anyhow::Result<(u64, u64)> {
    if let Some(found) = cursor_entry(ctx, user, device.as_str()).await? {
        return Ok(found);
    }
    let known: Vec<String> = devices(ctx, user)
        .await?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    refused(format!(
        "device {device} of user {user} has no cursor (it never connected with deviceId={device}); \
         devices with a cursor: {known}; nothing changed"
    ))
}

async fn write(
    ctx: &Ctx,
    user: &UserId,
    device: &DeviceId,
    seq: u64,
    previous: u64,
    revision: u64,
) -> anyhow::Result<CursorReport> {
    let key = format!("{user}.{device}");
    if seq != previous {
        let update = ctx
            .cursors
            .update(&key, Bytes::from(seq.to_string()), revision);
        match tokio::time::timeout(OP_TIMEOUT, update).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => anyhow::bail!(
                "cursor {key} changed while writing it (the device acknowledged meanwhile?); nothing changed, run again"
            ),
            Ok(Err(e)) => anyhow::bail!("writing cursor {key}: {e}"),
            Err(_) => anyhow::bail!("writing cursor {key}: no answer within {OP_TIMEOUT:?}"),
        }
    }
    let seqs = all_msgs_as(&ctx.notify, &user.notify_subject(), |m| m.sequence).await?;
    Ok(CursorReport {
        user_id: user.to_string(),
        device_id: device.to_string(),
        previous,
        cursor: seq,
        pending: seqs.iter().filter(|s| **s > seq).count(),
        open_sockets: sockets(ctx, user).await?.len(),
    })
}

impl Render for CursorReport {
    fn table(&self) -> String {
        let unchanged = if self.previous == self.cursor {
            " (unchanged)"
        } else {
            ""
        };
        let mut out = format!(
            "user {} device {}: cursor {} -> {}{unchanged}\n\
             its next resume with deviceId={} (and no since) receives {} retained events\n",
            self.user_id, self.device_id, self.previous, self.cursor, self.device_id, self.pending
        );
        if self.open_sockets > 0 {
            out += &format!(
                "note: user {} has {} open sockets; a connected device keeps its position and \
                 gets these events at its next resume (an ack it sends before then moves the \
                 cursor forward again)\n",
                self.user_id, self.open_sockets
            );
        }
        out
    }
}
