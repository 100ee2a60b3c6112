//! What the banner tests of `make run` (`banner.rs`) and `make run-cluster`
//! (`cluster_run.rs`) share: start a run script as a process (every port a free loopback
//! port, its own pinned nats-server and run dir in a temp dir, the built binaries), read
//! the commands it printed and wrote, run them as a reader pastes them into a second
//! terminal, and Ctrl-C it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use ziraai_e2e::{bin_path, nats_server_binary, send_signal, within, within_for, workspace_dir};

/// Start-up of the whole stack (NATS, gateways, worker, analyzer) from built binaries.
pub(crate) const START: Duration = Duration::from_secs(60);
/// A pasted command that talks to the stack (the worker's publish retries for a while).
pub(crate) const COMMAND: Duration = Duration::from_secs(30);

/// `n` distinct free loopback ports (all bound at once, then released).
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// A command with a clean environment, as in a new terminal at the repo root.
pub(crate) fn in_terminal(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .current_dir(workspace_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs a one-shot command; it must exit 0 and print one line of result.
pub(crate) async fn run_once(command: &str) -> String {
    let out = within_for(
        COMMAND,
        &format!("`{command}`"),
        in_terminal("bash").args(["-c", command]).output(),
    )
    .await
    .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{command}` failed with {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "`{command}` prints one line: {stdout:?}");
    // The producer CLIs log at warn: a printed command that warns (say, about the
    // streams' replicas) is not one a user should paste.
    if command.contains("ziraai-worker ") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "`{command}` warns: {stderr}");
    }
    lines[0].to_owned()
}

/// Runs a one-shot banner command with [`run_once`] and checks its line: `submit`
/// says what it submitted, a `curl` answers JSON (the admin endpoint its records).
pub(crate) async fn run_checked(command: &str) {
    let line = run_once(command).await;
    if command.contains(" submit ") {
        assert!(line.starts_with("submitted job "), "{line}");
    } else if command.starts_with("curl") {
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("`{command}` answers JSON ({e}): {line}"));
        if command.contains("/admin/deliveries") {
            assert!(v["records"].is_array(), "{line}");
        }
    } else if command.contains(" admin user ") {
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("`{command}` prints JSON ({e}): {line}"));
        assert!(v["events"].is_array() && v["devices"].is_array(), "{line}");
    }
}

/// A run script (`infra/scripts/run-*.sh`) running in the background. Dropped before
/// [`RunScript::interrupt`], it is sent SIGTERM: the script stops its children itself
/// (a SIGKILL of the script would orphan them).
pub(crate) struct RunScript {
    name: &'static str,
    child: Child,
    pid: Option<u32>,
    printed: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    log: PathBuf,
    run_dir: PathBuf,
}

impl RunScript {
    /// Starts `infra/scripts/<name>` with `vars` and the run dir, binaries and nats-server
    /// of this test run; its stdout is kept, its stderr (the services' logs) goes to
    /// `services.log` in the run dir.
    pub(crate) fn spawn(name: &'static str, run_dir: &Path, vars: &[(&str, String)]) -> Self {
        let log = run_dir.join("services.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        // `env --default-signal=INT`: a shell that starts this test in the background
        // ignores SIGINT for it, and bash cannot trap a signal ignored on entry.
        let mut command = in_terminal("env");
        command
            .arg("--default-signal=INT")
            .arg("bash")
            .arg(workspace_dir().join("infra/scripts").join(name))
            .env("ZIRAAI_RUN_DIR", run_dir)
            .env("ZIRAAI_SKIP_BUILD", "1")
            .env(
                "ZIRAAI_BIN_DIR",
                bin_path("ziraai-gateway").parent().expect("dir"),
            )
            .env("ZIRAAI_NATS_SERVER_BIN", nats_server_binary())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(false);
        for (k, v) in vars {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("run script starts");
        let printed = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let sink = printed.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("not poisoned").push_str(&text);
            }
        });
        Self {
            name,
            pid: child.id(),
            child,
            printed,
            reader: Some(reader),
            log,
            run_dir: run_dir.to_owned(),
        }
    }

    /// The commands of `commands.txt`, once the banner shows every one of them.
    pub(crate) async fn commands(&mut self) -> Vec<String> {
        let path = self.run_dir.join("commands.txt");
        let text = within_for(
            START,
            &format!("{} to write its commands", self.name),
            async {
                loop {
                    if let Ok(text) = std::fs::read_to_string(&path) {
                        return text;
                    }
                    if let Ok(Some(status)) = self.child.try_wait() {
                        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                        panic!("{} exited early with {status}:\n{log}", self.name);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
        let commands: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        within_for(COMMAND, "the banner to show every command", async {
            while !commands.iter().all(|c| self.printed().contains(c)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            path.exists(),
            "commands.txt is where the banner says: {}",
            self.printed()
        );
        commands
    }

    /// What the script printed so far.
    pub(crate) fn printed(&self) -> String {
        self.printed.lock().expect("not poisoned").clone()
    }

    /// The script's direct children (from `/proc`).
    pub(crate) fn children(&self) -> Vec<u32> {
        let pid = self.pid.expect("running");
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Ctrl-C: the script must exit 0, say it stopped everything and remove
    /// `commands.txt`. Returns everything it printed.
    pub(crate) async fn interrupt(mut self) -> String {
        let pid = self.pid.expect("running");
        send_signal("-INT", &pid.to_string()).await;
        let status = within_for(START, &format!("{} to stop", self.name), self.child.wait())
            .await
            .expect("wait");
        self.pid = None; // exited: its pid may be reused
        if let Some(reader) = self.reader.take() {
            let _ = within("the script's output to end", reader).await;
        }
        let printed = self.printed();
        assert!(status.success(), "Ctrl-C exits 0, got {status}:\n{printed}");
        assert!(printed.contains("all stopped."), "{printed}");
        assert!(!printed.contains("on its own"), "{printed}");
        assert!(
            !self.run_dir.join("commands.txt").exists(),
            "commands.txt removed on stop"
        );
        printed
    }
}

impl Drop for RunScript {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            // Wait (bounded) until it has stopped its children: its run dir, with their
            // pid files, is deleted right after this (a failed test must leave nothing).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
                    _ => break,
                }
            }
        }
    }
}

/// Whether `printed` says the script stopped a process whose name contains `name`.
pub(crate) fn says_stopped(printed: &str, name: &str) -> bool {
    printed
        .lines()
        .any(|l| l.starts_with("stopped ") && l.contains(name))
}

/// A long-running `watch` command from a banner, in its own process group, whose
/// stdout (one JSON event a line) is collected as it comes.
pub(crate) struct Watch {
    command: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    pub(crate) fn start(command: &str) -> Self {
        let mut child = in_terminal("bash")
            .args(["-c", command])
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let (sink, done) = (lines.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().expect("not poisoned").push(line);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Self {
            command: command.to_owned(),
            child,
            lines,
            ended,
        }
    }

    /// The sequences printed so far; every line must be an event with one.
    pub(crate) fn seqs(&self) -> Vec<u64> {
        let lines = self.lines.lock().expect("not poisoned");
        lines
            .iter()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("`{}` printed a non-JSON line ({e}): {line}", self.command)
                });
                assert_eq!(v["type"], "event", "stdout carries events only: {line}");
                v["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("an event without seq: {line}"))
            })
            .collect()
    }

    /// Waits (up to `limit`) until `n` events after sequence `after` are printed.
    pub(crate) async fn events_after(&self, after: u64, n: usize, limit: Duration) {
        let what = format!("{n} events after seq {after} from `{}`", self.command);
        within_for(limit, &what, async {
            while self.seqs().iter().filter(|&&s| s > after).count() < n {
                assert!(
                    !self.ended.load(std::sync::atomic::Ordering::SeqCst),
                    "`{}` ended; it printed {:?}",
                    self.command,
                    self.seqs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// The highest sequence printed so far (0 before the first event).
    pub(crate) fn last_seq(&self) -> u64 {
        self.seqs().into_iter().max().unwrap_or(0)
    }

    /// SIGTERM (as Ctrl-C in its terminal would): it must exit 0.
    pub(crate) async fn stop(mut self) {
        let group = format!("-{}", self.child.id().expect("running"));
        send_signal("-TERM", &group).await;
        let status = within("watch to exit", self.child.wait())
            .await
            .expect("wait");
        assert!(
            status.success(),
            "`{}` exits 0 on SIGTERM, got {status}",
            self.command
        );
    }
}
