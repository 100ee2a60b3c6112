//! The shipped binaries (`ziraai-gateway`, `ziraai-worker run`) as child processes of a
//! test: an explicit environment (nothing inherited but `PATH`), stdout and stderr
//! captured by reader tasks, the bound address read from the JSON start-up log line,
//! readiness awaited with a deadline, and signals (SIGTERM, SIGKILL) sent on demand.
//! A process still running when its handle drops is killed.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `make test`
//! does it and points `ZIRAAI_TEST_BIN_DIR` at them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::{NatsUrls, STEP, within};

/// Where the tests look for the shipped binaries: `ZIRAAI_TEST_BIN_DIR`, else
/// `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`. Panics with the command
/// to run when the binary is not there.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match (
        std::env::var_os("ZIRAAI_TEST_BIN_DIR"),
        std::env::var_os("CARGO_TARGET_DIR"),
    ) {
        (Some(d), _) if !d.is_empty() => PathBuf::from(d),
        (_, Some(t)) if !t.is_empty() => PathBuf::from(t).join("debug"),
        _ => workspace_dir().join("target").join("debug"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first (`make test` does it), \
         or set ZIRAAI_TEST_BIN_DIR to the directory holding the binaries",
        path.display()
    );
    path
}

/// Sends `signal` (e.g. `-TERM`) to `target` (a pid, or `-<pgid>` for a group).
pub async fn send_signal(signal: &str, target: &str) {
    let status = within(
        "kill",
        Command::new("kill").args([signal, "--", target]).status(),
    )
    .await
    .expect("kill runs");
    assert!(status.success(), "kill {signal} {target} failed");
}

/// A tool from a Debian package that the Makefile installs with `apt-get` when missing
/// (`make <make_target>`): at `default`, or where the variable `env_var` says. Fails the
/// test with how to install it.
pub fn debian_tool(env_var: &str, default: &str, make_target: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env_var).map_or_else(|| default.into(), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run `make {make_target}` (make test does; it runs \
         `apt-get install {package}`)",
        path.display()
    );
    path
}

/// The repository's root.
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The shipped configuration files (`infra/config`).
pub fn shipped_config_dir() -> PathBuf {
    workspace_dir().join("infra").join("config")
}

/// What a process wrote, line by line, as it arrives.
#[derive(Default)]
struct Captured {
    stdout: Mutex<String>,
    stderr: Mutex<String>,
}

/// A shipped binary running as a child process of the test.
pub struct ServiceProcess {
    name: String,
    child: Child,
    captured: Arc<Captured>,
    readers: Vec<JoinHandle<()>>,
    addr: Option<SocketAddr>,
    _cwd: tempfile::TempDir,
}

fn drain(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    captured: Arc<Captured>,
    stderr: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let buf = if stderr {
                        &captured.stderr
                    } else {
                        &captured.stdout
                    };
                    buf.lock().expect("capture lock").push_str(&text);
                }
            }
        }
    })
}

impl ServiceProcess {
    /// Starts `bin args…` with only `PATH` and `vars` in its environment, in an empty
    /// working directory. `ZIRAAI_CONFIG_DIR` is empty (no file layer) unless `vars`
    /// sets it.
    pub fn spawn(bin: &str, args: &[&str], vars: &HashMap<String, String>) -> Self {
        Self::spawn_limited(bin, args, vars, None)
    }

    /// Like [`Self::spawn`], with the open-file limit (soft and hard) set to
    /// `open_files` when given (through util-linux's `prlimit`).
    pub fn spawn_limited(
        bin: &str,
        args: &[&str],
        vars: &HashMap<String, String>,
        open_files: Option<u64>,
    ) -> Self {
        let cwd = tempfile::tempdir().expect("working dir");
        let mut cmd = match open_files {
            None => Command::new(bin_path(bin)),
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(bin_path(bin));
                c
            }
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ZIRAAI_CONFIG_DIR", "")
            .envs(vars)
            .current_dir(cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let captured = Arc::new(Captured::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(drain(out, captured.clone(), false));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(drain(err, captured.clone(), true));
        }
        Self {
            name: format!("{bin} {}", args.join(" ")).trim().to_owned(),
            child,
            captured,
            readers,
            addr: None,
            _cwd: cwd,
        }
    }

    /// `ziraai-gateway` on `nats` (test settings of [`crate::gateway_vars`] plus
    /// `extra`, JSON logs), started and ready.
    pub async fn gateway(nats: &impl NatsUrls, extra: &[(&str, &str)]) -> Self {
        Self::gateway_limited(nats, None, extra).await
    }

    /// [`Self::gateway`] with an open-file limit of `open_files` descriptors.
    pub async fn gateway_limited(
        nats: &impl NatsUrls,
        open_files: Option<u64>,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::gateway_with_vars(crate::gateway_vars(nats, extra), open_files).await
    }

    /// `ziraai-gateway` with exactly `vars` (JSON logs unless set), started and ready.
    pub async fn gateway_with_vars(
        mut vars: HashMap<String, String>,
        open_files: Option<u64>,
    ) -> Self {
        vars.entry("ZIRAAI_LOG_FORMAT".into())
            .or_insert_with(|| "json".into());
        let mut p = Self::spawn_limited("ziraai-gateway", &[], &vars, open_files);
        let addr = p.logged_addr("gateway listening", "addr").await;
        p.addr = Some(addr);
        p.wait_ready().await;
        p
    }

    /// `ziraai-worker run` on `nats` against `analyzer_url` (test settings of
    /// [`crate::worker_vars`] plus `extra`, JSON logs), started and ready.
    pub async fn worker(nats: &impl NatsUrls, analyzer_url: &str, extra: &[(&str, &str)]) -> Self {
        Self::worker_with_vars(crate::worker_vars(nats, analyzer_url, extra)).await
    }

    /// `ziraai-worker run` with exactly `vars` (JSON logs unless set), started and ready.
    pub async fn worker_with_vars(mut vars: HashMap<String, String>) -> Self {
        vars.entry("ZIRAAI_LOG_FORMAT".into())
            .or_insert_with(|| "json".into());
        let mut p = Self::spawn("ziraai-worker", &["run"], &vars);
        let addr = p.logged_addr("worker consuming jobs", "health").await;
        p.addr = Some(addr);
        p.wait_ready().await;
        p
    }

    /// The address the service logged at start-up (its listener or health port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| panic!("{} was not started as a service", self.name))
    }

    /// `ws://…/ws` of a gateway process.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr())
    }

    /// `http://…/hubs/plantanalysis` of a gateway process.
    pub fn hub_url(&self) -> String {
        format!(
            "http://{}{}",
            self.addr(),
            ziraai_gateway::signalr::HUB_PATH
        )
    }

    /// `GET /health` as JSON (null when the body is not JSON).
    pub async fn health(&self) -> serde_json::Value {
        let (_, body) = crate::http_get(self.addr(), "/health").await;
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.captured.stdout.lock().expect("capture lock").clone()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.captured.stderr.lock().expect("capture lock").clone()
    }

    /// Waits for the JSON log line whose message is `message` and returns its `field`
    /// parsed as an address. Fails early if the process exits.
    pub async fn logged_addr(&mut self, message: &str, field: &str) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let found = self.stderr().lines().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                if v["message"] != message {
                    return None;
                }
                v[field].as_str()?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            self.fail_if_exited(&format!("logging {message:?}"));
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not log {message:?} with {field} within {STEP:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&mut self) {
        let addr = self.addr();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if ready_status(addr).await == Some(200) {
                return;
            }
            self.fail_if_exited("becoming ready");
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} not ready within {STEP:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn fail_if_exited(&mut self, while_doing: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) while {while_doing}; stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// The child's process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM (through `kill(1)`: no extra dependency for one signal).
    pub fn sigterm(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} already exited", self.name));
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
    }

    /// Sends SIGHUP (the gateway re-reads its public key file).
    pub fn sighup(&self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} already exited", self.name));
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -HUP {pid} failed: {status}");
    }

    /// Sends SIGKILL: no drain, no flush, every socket cut by the kernel.
    pub fn sigkill(&mut self) {
        self.child
            .start_kill()
            .unwrap_or_else(|e| panic!("cannot kill {}: {e}", self.name));
    }

    /// Runs `bin args` with `vars` to its exit (within [`STEP`]): status, stdout, stderr.
    pub async fn run_to_exit(
        bin: &str,
        args: &[&str],
        vars: &HashMap<String, String>,
    ) -> (ExitStatus, String, String) {
        let mut p = Self::spawn(bin, args, vars);
        let status = p.wait_exit(STEP).await;
        (status, p.stdout(), p.stderr())
    }

    /// Waits for the process to exit (failing the test after `limit`), then for its
    /// output to be read to the end.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "{} still running after {limit:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        };
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(STEP, reader).await;
        }
        status
    }
}

/// Status of `GET /health/ready`, or `None` if nothing answers.
async fn ready_status(addr: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req =
            format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // `kill_on_drop` ends the child; on a failing test, show what it said.
        if std::thread::panicking() {
            let err = self.stderr();
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            eprintln!("--- last stderr lines of {} ---", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
