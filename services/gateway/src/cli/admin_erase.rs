//! `admin erase --user U [--yes]`: delete everything stored for a user (the right to
//! erasure), then check that nothing is left.
//!
//! | store | what is the user's | removed with |
//! |---|---|---|
//! | `NOTIFY` | subject `notify.<U>` | stream purge, filter `notify.<U>` |
//! | `CURSORS` (`KV_CURSORS`) | keys `<U>.<deviceId>` | stream purge, filter `$KV.CURSORS.<U>.>` |
//! | `SIGNALR` (`KV_SIGNALR`) | keys are connection ids; the value's `user` names the user | every key is read (the bucket keeps 1 h of connections), each of the user's keys purged by its subject |
//! | `CONNS` (`KV_CONNS`) | keys `u.<U>.<gatewayId>.<connectionId>` | stream purge, filter `$KV.CONNS.u.<U>.>` |
//! | `DELIVERY` | subjects `delivery.<U>.<seq>.<deviceId>.<kind>` | stream purge, filter `delivery.<U>.>` |
//!
//! Stream purges, not KV deletes: a KV delete or purge leaves a marker message whose
//! subject still names the user; a stream purge leaves nothing. Every stream allows it
//! (`deny_purge: false` in `nats/streams/`). Without `--yes` nothing is removed and the
//! counts found are printed. A user with open sockets keeps being served: the gateway
//! writes new cursors, socket entries and delivery records, and the check after the
//! purge reports them (exit 1); close the user's sessions (e.g. revoke their tokens)
//! first.

use serde::Serialize;
use ziraai_common::nats::{CONNS_BUCKET, CURSORS_BUCKET, DELIVERY_STREAM, SIGNALR_BUCKET};
use ziraai_proto::UserId;

use super::admin::{Ctx, Render, next_msg, purge, subjects, table};

/// Arguments of `admin erase`.
#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// The user to erase.
    #[arg(long)]
    pub user: UserId,
    /// Remove (without it: print what would be removed, change nothing).
    #[arg(long)]
    pub yes: bool,
}

/// Messages per store.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Counts {
    notify: u64,
    cursors: u64,
    signalr: u64,
    conns: u64,
    delivery: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.notify + self.cursors + self.signalr + self.conns + self.delivery
    }

    fn cells(&self) -> [(&'static str, u64); 5] {
        [
            ("NOTIFY", self.notify),
            ("CURSORS", self.cursors),
            ("SIGNALR", self.signalr),
            ("CONNS", self.conns),
            ("DELIVERY", self.delivery),
        ]
    }
}

/// What `admin erase` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EraseReport {
    user_id: String,
    /// False for a dry run (no --yes).
    erased: bool,
    /// Messages of the user found before.
    found: Counts,
    /// Messages removed.
    removed: Counts,
    /// Messages of the user found after (all zero after a complete erasure).
    remaining: Counts,
}

impl EraseReport {
    /// An erasure that left something fails the command (exit 1).
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.erased && self.remaining.total() > 0 {
            anyhow::bail!(
                "user {} is not fully erased: {:?} remain (a connected session writes new records; close it and run again)",
                self.user_id,
                self.remaining
            );
        }
        Ok(())
    }
}

/// The stores, bound once.
struct Stores {
    signalr: async_nats::jetstream::stream::Stream<()>,
    delivery: async_nats::jetstream::stream::Stream<()>,
}

pub(crate) async fn run(ctx: &Ctx, args: EraseArgs) -> anyhow::Result<EraseReport> {
    let user = &args.user;
    let stores = Stores {
        signalr: Ctx::bind(&ctx.js, &format!("KV_{SIGNALR_BUCKET}")).await?,
        delivery: Ctx::bind(&ctx.js, DELIVERY_STREAM).await?,
    };
    let found = count(ctx, &stores, user).await?;
    if !args.yes {
        return Ok(EraseReport {
            user_id: user.to_string(),
            erased: false,
            found,
            removed: Counts::default(),
            remaining: found,
        });
    }
    let mut removed = Counts {
        notify: purge(&ctx.notify, &user.notify_subject()).await?,
        cursors: purge(&ctx.cursors_stream, &cursor_filter(user)).await?,
        signalr: 0,
        conns: purge(&ctx.conns, &conns_filter(user)).await?,
        delivery: purge(&stores.delivery, &delivery_filter(user)).await?,
    };
    for subject in signalr_subjects(&stores.signalr, user).await? {
        removed.signalr += purge(&stores.signalr, &subject).await?;
    }
    let remaining = count(ctx, &stores, user).await?;
    Ok(EraseReport {
        user_id: user.to_string(),
        erased: true,
        found,
        removed,
        remaining,
    })
}

fn cursor_filter(user: &UserId) -> String {
    format!("$KV.{CURSORS_BUCKET}.{user}.>")
}

fn conns_filter(user: &UserId) -> String {
    format!("$KV.{CONNS_BUCKET}.u.{user}.>")
}

fn delivery_filter(user: &UserId) -> String {
    format!("delivery.{user}.>")
}

/// The user's messages in every store.
async fn count(ctx: &Ctx, stores: &Stores, user: &UserId) -> anyhow::Result<Counts> {
    let sum = |v: Vec<(String, usize)>| v.iter().map(|(_, n)| *n as u64).sum::<u64>();
    let mut signalr = 0;
    for subject in signalr_subjects(&stores.signalr, user).await? {
        signalr += sum(subjects(&stores.signalr, &subject).await?);
    }
    Ok(Counts {
        notify: sum(subjects(&ctx.notify, &user.notify_subject()).await?),
        cursors: sum(subjects(&ctx.cursors_stream, &cursor_filter(user)).await?),
        signalr,
        conns: sum(subjects(&ctx.conns, &conns_filter(user)).await?),
        delivery: sum(subjects(&stores.delivery, &delivery_filter(user)).await?),
    })
}

/// The `SIGNALR` keys (subjects) whose record names `user`: every key's latest value
/// is read (the bucket holds the connections of the last hour).
async fn signalr_subjects(
    stream: &async_nats::jetstream::stream::Stream<()>,
    user: &UserId,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (subject, _) in subjects(stream, &format!("$KV.{SIGNALR_BUCKET}.>")).await? {
        // One message per key (`max_msgs_per_subject: 1`).
        let Some(m) = next_msg(stream, &subject, 1).await? else {
            continue;
        };
        let named = serde_json::from_slice::<serde_json::Value>(&m.payload)
            .ok()
            .is_some_and(|v| v["user"].as_str() == Some(user.as_str()));
        if named {
            out.push(subject);
        }
    }
    Ok(out)
}

impl Render for EraseReport {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .found
            .cells()
            .iter()
            .zip(self.removed.cells())
            .zip(self.remaining.cells())
            .map(|(((store, found), (_, removed)), (_, remaining))| {
                vec![
                    (*store).to_owned(),
                    found.to_string(),
                    removed.to_string(),
                    remaining.to_string(),
                ]
            })
            .collect();
        let head = if self.erased {
            format!("user {}: erased\n", self.user_id)
        } else {
            format!(
                "user {}: dry run, nothing removed (run again with --yes to erase)\n",
                self.user_id
            )
        };
        head + &table(&["STORE", "FOUND", "REMOVED", "REMAINING"], &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(erased: bool, remaining: Counts) -> EraseReport {
        EraseReport {
            user_id: "u1".into(),
            erased,
            found: Counts {
                notify: 2,
                ..Counts::default()
            },
            removed: Counts::default(),
            remaining,
        }
    }

    #[test]
    fn an_erasure_that_left_something_fails_and_a_dry_run_does_not() {
        let left = Counts {
            delivery: 1,
            ..Counts::default()
        };
        assert!(report(true, Counts::default()).check().is_ok());
        let e = report(true, left).check().expect_err("something remains");
        assert!(e.to_string().contains("not fully erased"), "{e}");
        assert!(report(false, left).check().is_ok(), "a dry run only counts");
        let table = report(false, left).table();
        assert!(table.contains("dry run"), "{table}");
        assert!(table.contains("NOTIFY    2      0        0"), "{table}");
    }
}
