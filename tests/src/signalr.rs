//! The official `@microsoft/signalr` JavaScript client, run under Node by
//! `tests/signalr/client.mjs` (installed by `make signalr-client` from its lock file).
//! It prints one JSON line per observation and takes commands on stdin.

use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::node::NodeDriver;
use crate::within;

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct JsOptions {
    /// `http://…/hubs/plantanalysis` with any extra query parameters.
    pub url: String,
    pub token: String,
    /// `json` or `messagepack`.
    pub protocol: &'static str,
    pub skip_negotiation: bool,
    pub reconnect: bool,
    pub stateful: bool,
}

/// A running JS client.
pub struct JsClient {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

fn script() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("signalr");
    assert!(
        dir.join("node_modules/@microsoft/signalr").exists(),
        "the SignalR JS client is not installed: run `make signalr-client` (make test does)"
    );
    dir.join("client.mjs")
}

impl JsClient {
    /// Starts the client; it connects at once.
    pub async fn start(opts: JsOptions) -> Self {
        let cfg = json!({
            "url": opts.url,
            "token": opts.token,
            "protocol": if opts.protocol.is_empty() { "json" } else { opts.protocol },
            "skipNegotiation": opts.skip_negotiation,
            "reconnect": opts.reconnect,
            "stateful": opts.stateful,
        });
        let node = NodeDriver::spawn(&script(), "ZIRAAI_SIGNALR_CLIENT", &cfg);
        Self {
            _child: node.child,
            stdin: node.stdin,
            lines: node.lines,
        }
    }

    /// The next observation.
    pub async fn next(&mut self) -> Value {
        let line = within("JS client output", self.lines.next_line())
            .await
            .expect("readable")
            .expect("the JS client is still running");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    }

    /// The next observation, without a time limit (the caller bounds it); `None` once
    /// the client has exited.
    pub async fn next_unbounded(&mut self) -> Option<Value> {
        let line = self.lines.next_line().await.ok().flatten()?;
        serde_json::from_str(&line).ok()
    }

    /// Reads observations until one of kind `event`; fails on a `closed` or
    /// `startFailed` that was not asked for.
    pub async fn expect(&mut self, event: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["event"] == event {
                return v;
            }
            assert!(
                v["event"] != "startFailed" && v["event"] != "closed",
                "expected {event}, got {v}"
            );
        }
    }

    /// The data of the next invocation of `target`.
    pub async fn invocation(&mut self, target: &str) -> Value {
        let v = self.expect("invocation").await;
        assert_eq!(v["target"], target, "{v}");
        v["data"].clone()
    }

    /// The token the client's `accessTokenFactory` returns from now on (reconnects).
    pub async fn set_token(&mut self, token: &str) {
        self.command(&format!("token {token}")).await;
    }

    /// Sends a command line (`invoke <method>`, `stop`, `token <jwt>`).
    pub async fn command(&mut self, cmd: &str) {
        within(
            "JS client command",
            self.stdin.write_all(format!("{cmd}\n").as_bytes()),
        )
        .await
        .expect("stdin open");
    }
}
