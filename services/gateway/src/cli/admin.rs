//! `ziraai-gateway admin`: the operator CLI, for the questions the `nats` CLI answers
//! awkwardly (a user's events, devices and cursors; who received an event; moving a
//! cursor; replaying to a device; erasing a user).
//!
//! It connects like the services (`ZIRAAI_NATS_URL`, `ZIRAAI_NATS_USER`,
//! `ZIRAAI_NATS_PASSWORD(_FILE)`, …) as the `operator` user of `nats/auth.conf`, and
//! reads only the shared configuration section, so it works in every environment.
//! Each command prints a table, or with `--json` one JSON document on one line of
//! stdout (pipe it to `jq` to read it).
//! Exit codes: 0 done, 2 refused input (bad id, unknown device, sequence beyond the
//! stream; nothing was changed), 1 anything else (NATS unreachable, a store failed).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{
    self, kv, message::StreamMessage, stream::DirectGetErrorKind, stream::Stream,
};
use futures_util::TryStreamExt;
use serde::Serialize;
use ziraai_common::config::SharedConfig;
use ziraai_common::nats::{CONNS_BUCKET, CURSORS_BUCKET, NOTIFY_STREAM};

use super::{admin_cursor, admin_deliveries, admin_erase, admin_user};

/// Bound of one request to NATS.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of one subject listing (paged by the server: a user's delivery records can be
/// tens of thousands of subjects).
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `ziraai-gateway admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Print one JSON document on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The operator's commands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// A user's retained events, devices (cursor, pending count) and open sockets.
    User(admin_user::UserArgs),
    /// Who received and acknowledged an event (by --user and --seq, or --analysis-id).
    Deliveries(admin_deliveries::DeliveriesArgs),
    /// Set a device's cursor (the last acknowledged sequence) to --seq.
    SetCursor(admin_cursor::SetCursorArgs),
    /// Rewind a device's cursor so its next resume by device id replays the user's
    /// retained events from --from (default: the first retained one).
    Replay(admin_cursor::ReplayArgs),
    /// Delete everything stored for a user (events, cursors, SignalR resume records,
    /// socket entries, delivery records); a dry run without --yes.
    Erase(admin_erase::EraseArgs),
}

/// Input the command refuses (exit 2; nothing was changed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Refuses with `msg`.
pub(crate) fn refused<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Refused(msg.into()).into())
}

/// Runs `args` and prints its result; the process's exit code.
pub async fn main(args: AdminArgs, config: &SharedConfig) -> std::process::ExitCode {
    match run(args, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            eprintln!("ziraai-gateway admin: {e}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ziraai-gateway admin: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: AdminArgs, config: &SharedConfig) -> anyhow::Result<()> {
    let ctx = Ctx::connect(config).await?;
    let json = args.json;
    match args.command {
        AdminCommand::User(a) => print(json, &admin_user::run(&ctx, a).await?),
        AdminCommand::Deliveries(a) => print(json, &admin_deliveries::run(&ctx, a).await?),
        AdminCommand::SetCursor(a) => print(json, &admin_cursor::set(&ctx, a).await?),
        AdminCommand::Replay(a) => print(json, &admin_cursor::replay(&ctx, a).await?),
        AdminCommand::Erase(a) => {
            let report = admin_erase::run(&ctx, a).await?;
            print(json, &report)?;
            report.check()
        }
    }
}

/// What a command prints: itself as JSON, or as a table.
pub(crate) trait Render: Serialize {
    fn table(&self) -> String;
}

fn print(json: bool, report: &impl Render) -> anyhow::Result<()> {
    let text = if json {
        serde_json::to_string(report).context("encoding the JSON answer")?
    } else {
        report.table()
    };
    println!("{}", text.trim_end());
    Ok(())
}

/// A text table: a header row, then one row per entry, columns padded to fit.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `-` for nothing.
pub(crate) fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Bounds `fut` by [`OP_TIMEOUT`], naming `what` in the error.
pub(crate) async fn bounded<T, E>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r.with_context(|| what.to_owned()),
        Err(_) => anyhow::bail!("{what}: no answer within {OP_TIMEOUT:?}"),
    }
}

/// The connection and the streams the commands use.
pub(crate) struct Ctx {
    pub(crate) js: jetstream::Context,
    pub(crate) notify: Stream<()>,
    pub(crate) cursors: kv::Store,
    pub(crate) cursors_stream: Stream<()>,
    pub(crate) conns: Stream<()>,
}

impl Ctx {
    async fn connect(config: &SharedConfig) -> anyhow::Result<Self> {
        // The CLI applies no definition, so the configured replicas do not matter here:
        // an operator may inspect any deployment, a single server included.
        let nats = ziraai_common::config::NatsConfig {
            replicas: 1,
            ..config.nats.clone()
        };
        let client = ziraai_common::nats::connect(&nats, "ziraai-gateway admin").await?;
        let js = jetstream::new(client);
        let notify = Self::bind(&js, NOTIFY_STREAM).await?;
        let cursors = bounded("binding bucket CURSORS", js.get_key_value(CURSORS_BUCKET)).await?;
        let cursors_stream = Self::bind(&js, &format!("KV_{CURSORS_BUCKET}")).await?;
        let conns = Self::bind(&js, &format!("KV_{CONNS_BUCKET}")).await?;
        Ok(Self {
            js,
            notify,
            cursors,
            cursors_stream,
            conns,
        })
    }

    pub(crate) async fn bind(js: &jetstream::Context, name: &str) -> anyhow::Result<Stream<()>> {
        bounded(
            &format!("binding stream {name}"),
            js.get_stream_no_info(name),
        )
        .await
    }

    /// The stream's current last sequence.
    pub(crate) async fn last_seq(&self, name: &str) -> anyhow::Result<u64> {
        let s = bounded(&format!("stream info {name}"), self.js.get_stream(name)).await?;
        Ok(s.cached_info().state.last_sequence)
    }
}

/// The subjects of `stream` matching `filter`, with their message counts (one
/// subject-filtered stream-info request, paged by the server).
pub(crate) async fn subjects(
    stream: &Stream<()>,
    filter: &str,
) -> anyhow::Result<Vec<(String, usize)>> {
    let what = format!("listing subjects {filter}");
    let read = async {
        let info = stream.info_with_subjects(filter).await?;
        info.try_collect::<Vec<_>>()
            .await
            .map_err(async_nats::Error::from)
    };
    match tokio::time::timeout(LIST_TIMEOUT, read).await {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("{what}: {e}")),
        Err(_) => anyhow::bail!("{what}: no answer within {LIST_TIMEOUT:?}"),
    }
}

/// The first message of `stream` on `filter` at or after `from`, by direct get.
pub(crate) async fn next_msg(
    stream: &Stream<()>,
    filter: &str,
    from: u64,
) -> anyhow::Result<Option<StreamMessage>> {
    let read = stream.direct_get_next_for_subject(filter, Some(from));
    match tokio::time::timeout(OP_TIMEOUT, read).await {
        Ok(Ok(m)) => Ok(Some(m)),
        Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Ok(Err(e)) => Err(anyhow::anyhow!("reading {filter} from {from}: {e}")),
        Err(_) => anyhow::bail!("reading {filter} from {from}: no answer within {OP_TIMEOUT:?}"),
    }
}

/// Every message of `stream` on `filter`, oldest first (the caller bounds the
/// filter: one user's subjects).
pub(crate) async fn all_msgs(
    stream: &Stream<()>,
    filter: &str,
) -> anyhow::Result<Vec<StreamMessage>> {
    all_msgs_as(stream, filter, StreamMessage::clone).await
}

/// [`all_msgs`], keeping only what `keep` takes from each message (not its body): a
/// user's 10,000 events of up to 64 KiB each never sit in memory at once.
pub(crate) async fn all_msgs_as<T>(
    stream: &Stream<()>,
    filter: &str,
    mut keep: impl FnMut(&StreamMessage) -> T,
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    let mut from = 1;
    while let Some(m) = next_msg(stream, filter, from).await? {
        from = m.sequence + 1;
        out.push(keep(&m));
    }
    Ok(out)
}

/// Removes every message of `stream` on `filter`; how many were removed.
pub(crate) async fn purge(stream: &Stream<()>, filter: &str) -> anyhow::Result<u64> {
    let r = bounded(
        &format!("purging {filter}"),
        stream.purge().filter(filter).into_future(),
    )
    .await?;
    Ok(r.purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["phone".to_owned(), "17".to_owned()],
            vec!["a-much-longer-device".to_owned(), "3".to_owned()],
        ];
        assert_eq!(
            table(&["DEVICE", "CURSOR"], &rows),
            "DEVICE                CURSOR\n\
             phone                 17\n\
             a-much-longer-device  3\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
        assert_eq!(or_dash(None::<u64>), "-");
        assert_eq!(or_dash(Some(5)), "5");
    }

    #[test]
    fn refusals_are_told_apart_from_failures() {
        let e: anyhow::Error = refused::<()>("bad").expect_err("refused");
        assert!(e.downcast_ref::<Refused>().is_some());
        assert!(anyhow::anyhow!("down").downcast_ref::<Refused>().is_none());
    }
}
