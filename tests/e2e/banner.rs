//! `make run`'s banner cannot rot: start `infra/scripts/run-dev.sh` as a process (every
//! port a free loopback port, its own pinned nats-server and run dir in a temp dir),
//! run each command it wrote to `commands.txt` verbatim with `bash -c` from the repo
//! root, as a reader would paste it into a second terminal, then Ctrl-C the script:
//! it exits 0, says what it stopped, and leaves no child behind.

use std::path::Path;

use crate::run_script::{COMMAND, RunScript, Watch, free_ports, run_checked, says_stopped};

/// Runs a long-running command (`watch`) until it prints an event line, then SIGTERM:
/// it must exit 0.
async fn run_until_event(command: &str) {
    let watch = Watch::start(command);
    watch.events_after(0, 1, COMMAND).await;
    watch.stop().await;
}

#[tokio::test]
async fn make_run_banner_commands_work_verbatim_and_ctrl_c_stops_everything() {
    let run_dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports(5);
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mut script = RunScript::spawn(
        "run-dev.sh",
        run_dir.path(),
        &[
            ("ZIRAAI_NATS_URL", format!("nats://{}", addr(0))),
            ("ZIRAAI_NATS_MONITOR_PORT", ports[1].to_string()),
            ("ZIRAAI_GATEWAY_LISTEN", addr(2)),
            ("ZIRAAI_WORKER_LISTEN", addr(3)),
            ("ZIRAAI_DEV_ANALYZER_LISTEN", addr(4)),
            ("ZIRAAI_DEMO_INTERVAL", "1s".into()),
        ],
    );
    let commands = script.commands().await;
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
    for command in &commands {
        if command.contains(" watch ") {
            run_until_event(command).await;
            continue;
        }
        run_checked(command).await;
    }

    let kids = script.children();
    assert_eq!(
        kids.len(),
        5,
        "nats-server, gateway, analyzer, worker, demo: {kids:?}"
    );
    let printed = script.interrupt().await;
    for name in ["nats-server", "gateway", "worker", "analyzer", "demo"] {
        assert!(
            says_stopped(&printed, name),
            "says it stopped the {name}:\n{printed}"
        );
    }
    for pid in kids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} is gone after Ctrl-C"
        );
    }
}
