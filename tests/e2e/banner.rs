//! `make run`'s banner cannot rot: start `infra/scripts/run-dev.sh` as a process (every
//! port a free loopback port, its own pinned nats-server and run dir in a temp dir),
//! run each command it wrote to `commands.txt` verbatim with `bash -c` from the repo
//! root, as a reader would paste it into a second terminal, then Ctrl-C the script:
//! it exits 0, says what it stopped, and leaves no child behind.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use ziraai_e2e::{nats_server_binary, within, within_for};

use ziraai_e2e::{bin_path, send_signal, workspace_dir as workspace_root};

/// Start-up of the whole stack (NATS, gateway, worker, analyzer) from built binaries.
const START: Duration = Duration::from_secs(60);
/// A pasted command that talks to the stack (the worker's publish retries for a while).
const COMMAND: Duration = Duration::from_secs(30);

/// `n` distinct free loopback ports (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

/// A command with a clean environment, as in a new terminal at the repo root.
fn in_terminal(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Stops the stack if the test fails half-way: on SIGTERM the script stops its
/// children itself (a SIGKILL of the script would orphan them).
struct StopOnDrop(Option<u32>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// The script's direct children (from `/proc`).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

async fn wait_for_file(path: &Path, script: &mut Child, log: &Path) -> String {
    within_for(START, "run-dev.sh to write its commands", async {
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                return text;
            }
            if let Ok(Some(status)) = script.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("run-dev.sh exited early with {status}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Runs a long-running command (`watch`) until it prints an event line, then SIGTERM:
/// it must exit 0.
async fn run_until_event(command: &str) {
    let mut child = in_terminal("bash")
        .args(["-c", command])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    within_for(COMMAND, &format!("an event line from `{command}`"), async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("stdout readable")
                .unwrap_or_else(|| panic!("`{command}` ended without printing an event"));
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("`{command}` printed a non-JSON line ({e}): {line}"));
            assert_eq!(v["type"], "event", "stdout carries events only: {line}");
            if v["seq"].as_u64().is_some() {
                return;
            }
        }
    })
    .await;
    let group = format!("-{}", child.id().expect("running"));
    send_signal("-TERM", &group).await;
    let status = within("watch to exit", child.wait()).await.expect("wait");
    assert!(
        status.success(),
        "`{command}` exits 0 on SIGTERM, got {status}"
    );
}

/// Runs a one-shot command; it must exit 0 and print one line of result.
async fn run_once(command: &str) -> String {
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
    lines[0].to_owned()
}

#[tokio::test]
async fn make_run_banner_commands_work_verbatim_and_ctrl_c_stops_everything() {
    let run_dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(5);
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let log_path = run_dir.path().join("services.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // `env --default-signal=INT`: a shell that starts this test in the background
    // ignores SIGINT for it, and bash cannot trap a signal ignored on entry.
    let mut script = in_terminal("env")
        .arg("--default-signal=INT")
        .arg("bash")
        .arg(workspace_root().join("infra/scripts/run-dev.sh"))
        .env("ZIRAAI_NATS_URL", format!("nats://{}", addr(0)))
        .env("ZIRAAI_NATS_MONITOR_PORT", ports[1].to_string())
        .env("ZIRAAI_GATEWAY_LISTEN", addr(2))
        .env("ZIRAAI_WORKER_LISTEN", addr(3))
        .env("ZIRAAI_DEV_ANALYZER_LISTEN", addr(4))
        .env("ZIRAAI_DEMO_INTERVAL", "1s")
        .env("ZIRAAI_RUN_DIR", run_dir.path())
        .env("ZIRAAI_SKIP_BUILD", "1")
        .env(
            "ZIRAAI_BIN_DIR",
            bin_path("ziraai-gateway").parent().expect("dir"),
        )
        .env("ZIRAAI_NATS_SERVER_BIN", nats_server_binary())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(false)
        .spawn()
        .expect("run-dev.sh starts");
    let mut guard = StopOnDrop(script.id());
    let printed = Arc::new(Mutex::new(String::new()));
    let mut stdout = script.stdout.take().expect("piped");
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

    let commands_file = run_dir.path().join("commands.txt");
    let text = wait_for_file(&commands_file, &mut script, &log_path).await;
    let commands: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for needle in [
        " watch ",
        " submit ",
        " publish ",
        " token ",
        " admin user ",
        "/health",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(needle)),
            "the banner has a{needle}command: {commands:#?}"
        );
    }
    within_for(COMMAND, "the banner to show every command", async {
        let shown = || {
            let banner = printed.lock().expect("not poisoned");
            commands.iter().all(|c| banner.contains(c))
        };
        while !shown() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for command in &commands {
        if command.contains(" watch ") {
            run_until_event(command).await;
            continue;
        }
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

    let kids = children(script.id().expect("running"));
    assert_eq!(
        kids.len(),
        5,
        "nats-server, gateway, analyzer, worker, demo: {kids:?}"
    );
    send_signal("-INT", &script.id().expect("running").to_string()).await;
    let status = within_for(START, "run-dev.sh to stop", script.wait())
        .await
        .expect("wait");
    guard.0 = None; // exited: its pid may be reused
    let _ = within("the script's output to end", reader).await;
    let printed = printed.lock().expect("not poisoned").clone();
    assert!(status.success(), "Ctrl-C exits 0, got {status}:\n{printed}");
    for name in ["nats-server", "gateway", "worker", "analyzer", "demo"] {
        assert!(
            printed.contains(&format!("stopped {name}"))
                || printed
                    .lines()
                    .any(|l| l.starts_with("stopped ") && l.contains(name)),
            "says it stopped the {name}:\n{printed}"
        );
    }
    assert!(!printed.contains("on its own"), "{printed}");
    for pid in kids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} is gone after Ctrl-C"
        );
    }
    assert!(!commands_file.exists(), "commands.txt removed on stop");
}
