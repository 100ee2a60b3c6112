//! What the operator CLI's tests share: running `ziraai-gateway admin` as a process,
//! and reading the stores directly (as the operator) to check what it did.

use std::time::Duration;

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use futures_util::TryStreamExt;
use serde_json::{Value, json};
use ziraai_e2e::{bin_path, within};
use ziraai_proto::UserId;

/// What one run printed.
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs the binary's `admin` against `urls` as the operator.
pub(crate) struct Admin {
    pub(crate) urls: String,
    pub(crate) password: String,
}

impl Admin {
    pub(crate) async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[("ZIRAAI_CONFIG_DIR", "")]).await
    }

    /// Like [`run`](Self::run) with `vars` set too (e.g. another environment).
    pub(crate) async fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Out {
        let out = tokio::process::Command::new(bin_path("ziraai-gateway"))
            .arg("admin")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().copied())
            .env("ZIRAAI_NATS_URL", &self.urls)
            .env("ZIRAAI_NATS_USER", "operator")
            .env("ZIRAAI_NATS_PASSWORD", &self.password)
            .kill_on_drop(true)
            .output();
        let out = within("admin command", out).await.expect("admin runs");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `--json` output of a successful run, parsed.
    pub(crate) async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all).await;
        assert_eq!(out.code, 0, "admin {args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("admin {args:?} printed no JSON ({e}): {}", out.stdout))
    }

    /// A refused run: exit code 2, an error on stderr containing `needle`.
    pub(crate) async fn refused(&self, args: &[&str], needle: &str) {
        let out = self.run(args).await;
        assert_eq!(out.code, 2, "admin {args:?}: {} {}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(needle),
            "admin {args:?}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    }
}

/// Messages of `stream` on `filter` (one subject-filtered stream info; 0 when none).
pub(crate) async fn stored(js: &jetstream::Context, stream: &str, filter: &str) -> usize {
    let s = within("bind stream", js.get_stream_no_info(stream))
        .await
        .expect("stream exists");
    let subjects = within("stream subjects", async {
        s.info_with_subjects(filter)
            .await
            .expect("stream info")
            .try_collect::<Vec<_>>()
            .await
            .expect("subjects")
    })
    .await;
    subjects.iter().map(|(_, n)| n).sum()
}

/// The stored cursor of (user, device).
pub(crate) async fn cursor_of(js: &jetstream::Context, user: &UserId, device: &str) -> Option<u64> {
    let kv = within("bind CURSORS", js.get_key_value("CURSORS"))
        .await
        .expect("bucket");
    let v = within("read cursor", kv.get(format!("{user}.{device}")))
        .await
        .expect("readable")?;
    std::str::from_utf8(&v).ok()?.parse().ok()
}

/// Waits until (user, device)'s cursor is `seq`.
pub(crate) async fn cursor_becomes(js: &jetstream::Context, user: &UserId, device: &str, seq: u64) {
    within(&format!("cursor {user}.{device} = {seq}"), async {
        while cursor_of(js, user, device).await != Some(seq) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until `stream` holds `n` messages on `filter`.
pub(crate) async fn stored_becomes(js: &jetstream::Context, stream: &str, filter: &str, n: usize) {
    within(&format!("{stream} {filter} holds {n}"), async {
        while stored(js, stream, filter).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until the erasure tests' stores hold what they assert: each (user, device)'s
/// cursor at its sequence, `mine`'s SignalR resume record, `theirs`' 4 delivery records
/// and at least `delivery` of `mine`'s.
pub(crate) async fn records_settle(
    js: &jetstream::Context,
    mine: (&UserId, &str, u64),
    theirs: (&UserId, &str, u64),
    delivery: usize,
) {
    let (u, other) = (mine.0, theirs.0);
    cursor_becomes(js, u, mine.1, mine.2).await;
    cursor_becomes(js, other, theirs.1, theirs.2).await;
    within("the SignalR connection's resume record", async {
        while signalr_keys(js, u).await == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stored_becomes(js, "DELIVERY", &format!("delivery.{other}.>"), 4).await;
    within("the user's delivery records", async {
        while stored(js, "DELIVERY", &format!("delivery.{u}.>")).await < delivery {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The SIGNALR keys whose record names `user`.
pub(crate) async fn signalr_keys(js: &jetstream::Context, user: &UserId) -> usize {
    let s = within("bind KV_SIGNALR", js.get_stream_no_info("KV_SIGNALR"))
        .await
        .expect("stream");
    let subjects = within("SIGNALR subjects", async {
        s.info_with_subjects("$KV.SIGNALR.>")
            .await
            .expect("info")
            .try_collect::<Vec<_>>()
            .await
            .expect("subjects")
    })
    .await;
    let mut n = 0;
    for (subject, _) in subjects {
        match within("SIGNALR value", s.direct_get_last_for_subject(&subject)).await {
            Ok(m) => {
                let v: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                n += usize::from(v["user"] == json!(user.as_str()));
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {}
            Err(e) => panic!("reading {subject}: {e}"),
        }
    }
    n
}
