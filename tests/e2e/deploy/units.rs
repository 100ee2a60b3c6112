//! The systemd units of `infra/systemd`: they pass `systemd-analyze verify` (Debian's
//! systemd; `make systemd-analyze`), stop with SIGTERM and wait longer than the
//! service's drain, restart on failure but not on a configuration error (exit 2),
//! run hardened, and keep secrets out of their environment files.

use std::path::PathBuf;
use std::time::Duration;

use ziraai_e2e::{bin_path, within_for};

use super::invariants::{GATEWAY_FINAL_STEPS, WORKER_FINAL_STEPS, gateway_config, worker_config};
use super::spec::{systemd_dir, systemd_launch, unit_settings, unit_value};

const UNITS: &[&str] = &["ziraai-gateway.service", "ziraai-worker.service"];

/// Settings every unit has, exactly.
const REQUIRED: &[(&str, &str)] = &[
    ("KillSignal", "SIGTERM"),
    ("Restart", "on-failure"),
    ("RestartPreventExitStatus", "2"),
    ("DynamicUser", "yes"),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("CapabilityBoundingSet", ""),
];

/// Where Debian installs it (`make systemd-analyze`); `ZIRAAI_TEST_SYSTEMD_ANALYZE` overrides.
fn systemd_analyze() -> PathBuf {
    std::env::var_os("ZIRAAI_TEST_SYSTEMD_ANALYZE")
        .map_or_else(|| PathBuf::from("/usr/bin/systemd-analyze"), PathBuf::from)
}

#[tokio::test]
async fn units_pass_systemd_analyze_verify() {
    let bin = systemd_analyze();
    assert!(
        bin.exists(),
        "systemd-analyze is not installed at {}: run `make systemd-analyze` (make test does)",
        bin.display()
    );
    for unit in UNITS {
        // The same unit, with ExecStart on the binary this test built (verify checks
        // that the program exists and is executable).
        let text = std::fs::read_to_string(systemd_dir().join(unit)).expect("read the unit");
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = dir.path().join(unit);
        let program = if unit.contains("gateway") {
            "ziraai-gateway"
        } else {
            "ziraai-worker"
        };
        let shipped = format!("/usr/local/bin/{program}");
        assert!(
            text.contains(&format!("ExecStart={shipped} ")),
            "{unit}: ExecStart"
        );
        let local = bin_path(program);
        std::fs::write(&copy, text.replace(&shipped, &local.to_string_lossy())).expect("write");
        let out = within_for(
            Duration::from_secs(60),
            "systemd-analyze verify",
            tokio::process::Command::new(&bin)
                .arg("verify")
                .arg(&copy)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Unknown or misspelt settings are only warnings: any output is a failure.
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {unit} ({}):\n{stderr}",
            out.status
        );
    }
}

#[test]
fn units_stop_with_sigterm_after_the_drain_and_run_hardened() {
    for unit in UNITS {
        let text = std::fs::read_to_string(systemd_dir().join(unit)).expect("read the unit");
        let settings = unit_settings(&text);
        for (key, value) in REQUIRED {
            assert_eq!(unit_value(&settings, key), Some(*value), "{unit}: {key}");
        }
        let nofile: u64 = unit_value(&settings, "LimitNOFILE")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: LimitNOFILE"));
        assert!(nofile >= 4096, "{unit}: LimitNOFILE={nofile}");
        let launch = systemd_launch(unit, None);
        let (grace, final_steps) = match launch.program.as_str() {
            "ziraai-gateway" => (
                gateway_config(&launch).gateway.shutdown_grace,
                GATEWAY_FINAL_STEPS,
            ),
            _ => (
                worker_config(&launch).worker.shutdown_grace,
                WORKER_FINAL_STEPS,
            ),
        };
        assert!(
            launch.stop_limit > grace + final_steps,
            "{unit}: TimeoutStopSec {:?} <= shutdown grace {grace:?} + {final_steps:?}",
            launch.stop_limit
        );
        // Secrets are credentials (files), never values in the environment.
        for var in launch.env.keys() {
            let secret = ["PASSWORD", "SECRET", "TOKEN"]
                .iter()
                .any(|s| var.ends_with(s));
            assert!(!secret, "{unit}: {var} puts a secret in the environment");
        }
        assert_eq!(
            launch.env.get("ZIRAAI_NATS_REPLICAS").map(String::as_str),
            Some("3")
        );
    }
}
