//! A Node.js driver script as a child of the test: its configuration in one
//! environment variable (JSON), commands on stdin, one JSON line per report on stdout.
//! Used by the SignalR client driver and the demo-page browser driver.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A running driver: the process (killed on drop), its stdin and its stdout lines.
pub(crate) struct NodeDriver {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) lines: Lines<BufReader<ChildStdout>>,
}

impl NodeDriver {
    /// Runs `node <script>` with `cfg` as JSON in the variable `var`.
    pub(crate) fn spawn(script: &Path, var: &str, cfg: &Value) -> Self {
        let mut child = Command::new("node")
            .arg(script)
            .env(var, cfg.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }
}
