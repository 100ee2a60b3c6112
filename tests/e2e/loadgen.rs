//! The load generator's smoke run (`ziraai-loadgen run --scenarios smoke`) as a
//! process: a debug gateway process, a few hundred sockets of each client protocol in
//! a client process, paced JetStream publishes; it must lose nothing and deliver
//! nothing twice. No timing is asserted (benchmarks are not tests).
//! Needs the binaries built (`cargo build --workspace --bins`; `make test` does it).

use std::time::Duration;

use ziraai_e2e::*;

/// Protocols of the smoke run.
const PROTOCOLS: &str = "json,msgpack,signalr-json,signalr-msgpack";

#[tokio::test]
async fn loadgen_smoke_run_loses_nothing_and_duplicates_nothing() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = tokio::process::Command::new(bin_path("ziraai-loadgen"))
        .args(["run", "--scenarios", "smoke", "--smoke-sockets", "200"])
        .args(["--smoke-protocols", PROTOCOLS, "--out"])
        .arg(out.path())
        .env("ZIRAAI_TEST_NATS_SERVER", nats_server_binary())
        .current_dir(out.path())
        .kill_on_drop(true)
        .output();
    let output = within_for(Duration::from_secs(180), "the smoke run", run)
        .await
        .expect("ziraai-loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ziraai-loadgen failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report = std::fs::read_dir(out.path())
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a JSON report");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("readable")).expect("JSON");
    let rows = v["rows"].as_array().expect("rows");
    let protocols: Vec<&str> = rows.iter().filter_map(|r| r["protocol"].as_str()).collect();
    assert_eq!(protocols.join(","), PROTOCOLS, "{stdout}");
    for r in rows {
        assert_eq!(r["sockets"], 200, "{r}");
        assert!(r["acked"].as_u64().unwrap_or(0) > 0, "published: {r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["duplicates"], 0, "{r}");
        assert_eq!(r["delivered"], r["expected"], "{r}");
    }
    assert!(v["errors"].as_array().is_some_and(Vec::is_empty), "{v}");
    assert!(v["machine"]["cores"].as_u64().unwrap_or(0) > 0);
    assert!(stdout.contains("| smoke | json |"), "{stdout}");
}
