//! The gateway's `/demo` page in a real headless browser: Debian's `chromium` (installed
//! by `make browser`) driven by `puppeteer-core` (installed by `make browser-client` from
//! `tests/browser/package-lock.json`; it never downloads a browser) through
//! `tests/browser/demo.mjs`, which answers commands on stdin with JSON lines on stdout.
//! Tests read what a person would see (the DOM) and wait for it with deadlines.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::node::NodeDriver;
use crate::within_for;

/// Where Debian installs chromium; `ZIRAAI_TEST_CHROMIUM` overrides.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Bound of starting chromium and opening the page (a cold start on a busy 2-core
/// machine takes several seconds).
const OPEN: Duration = Duration::from_secs(60);
/// Bound of one command to the browser.
const COMMAND: Duration = Duration::from_secs(20);
/// Bound of a condition on the page.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// The socket status the page shows.
#[derive(Debug, Clone, Deserialize)]
pub struct PageStatus {
    /// `connecting`, `live` or `reconnecting`.
    pub state: String,
    pub text: String,
}

/// One notification card, as its text reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    pub seq: u64,
    pub kind: String,
    /// `history` (fetched by polling on load) or `socket`.
    pub source: String,
    pub failed: bool,
    pub plant: Option<String>,
    pub finding: Option<String>,
    pub confidence: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub ago: Option<String>,
    /// The collapsible raw event.
    pub raw: Option<String>,
}

/// What the page shows at one moment.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageView {
    pub status: PageStatus,
    pub banner: String,
    pub device: String,
    pub stored_device: Option<String>,
    /// HTML elements inside the cards that only parsing event data as HTML could create.
    pub injected: usize,
    pub cards: Vec<Card>,
}

impl PageView {
    /// The sequences of the cards, newest first as shown.
    pub fn seqs(&self) -> Vec<u64> {
        self.cards.iter().map(|c| c.seq).collect()
    }

    /// The card of `seq`, if shown.
    pub fn card(&self, seq: u64) -> Option<&Card> {
        self.cards.iter().find(|c| c.seq == seq)
    }

    /// Whether every one of `seqs` has a card.
    pub fn shows_all(&self, seqs: &[u64]) -> bool {
        seqs.iter().all(|s| self.card(*s).is_some())
    }
}

/// A headless chromium showing the demo page.
pub struct DemoPage {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Page errors, dialogs and failed requests (other than sockets) seen so far.
    pub problems: Vec<String>,
    _profile: tempfile::TempDir,
}

fn chromium() -> PathBuf {
    crate::debian_tool("ZIRAAI_TEST_CHROMIUM", CHROMIUM, "browser", "chromium")
}

fn script() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/puppeteer-core").exists(),
        "puppeteer-core is not installed: run `make browser-client` (make test does)"
    );
    dir.join("demo.mjs")
}

impl DemoPage {
    /// Starts chromium with a fresh profile and opens `url`.
    pub async fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().expect("temp dir for the browser profile");
        let cfg = json!({
            "url": url,
            "chromium": chromium(),
            "profile": profile.path(),
        });
        let node = NodeDriver::spawn(&script(), "ZIRAAI_DEMO_PAGE", &cfg);
        let mut page = Self {
            child: node.child,
            stdin: node.stdin,
            lines: node.lines,
            problems: Vec::new(),
            _profile: profile,
        };
        page.answer(OPEN, "opened").await;
        page
    }

    /// Reads lines until one of `event`; notes problems on the way.
    async fn answer(&mut self, limit: Duration, event: &str) -> Value {
        loop {
            let line = within_for(limit, "the browser driver", self.lines.next_line())
                .await
                .expect("readable")
                .expect("the browser driver is still running");
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            match v["event"].as_str() {
                Some(e) if e == event => return v,
                Some("pageError" | "requestFailed" | "dialog") => self.problems.push(v.to_string()),
                _ => panic!("expected {event} from the browser driver, got {v}"),
            }
        }
    }

    async fn command(&mut self, cmd: &str) {
        within_for(
            COMMAND,
            "browser command",
            self.stdin.write_all(format!("{cmd}\n").as_bytes()),
        )
        .await
        .expect("the browser driver reads commands");
    }

    /// What the page shows now.
    pub async fn view(&mut self) -> PageView {
        self.command("snapshot").await;
        let v = self.answer(COMMAND, "snapshot").await;
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("snapshot {v}: {e}"))
    }

    /// Polls the page until `cond` holds; fails with the last view after `PAGE_WAIT`.
    pub async fn wait_for(&mut self, what: &str, cond: impl Fn(&PageView) -> bool) -> PageView {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let view = self.view().await;
            if cond(&view) {
                return view;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {PAGE_WAIT:?} waiting for the page to show {what}; it shows {view:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reloads the page (same browser profile, so the same localStorage).
    pub async fn reload(&mut self) {
        self.command("reload").await;
        self.answer(COMMAND, "reloaded").await;
    }

    /// Closes the browser and waits for the driver to exit.
    pub async fn close(mut self) {
        self.command("quit").await;
        let status = within_for(COMMAND, "the browser driver to exit", self.child.wait())
            .await
            .expect("waitable");
        assert!(status.success(), "the browser driver exited with {status}");
    }
}
