//! `ziraai-gateway watch` run as a process: across a graceful gateway restart (1012)
//! and a crash, each time on the same address, it prints every event published
//! before, during and after, exactly once and in order; stopped with SIGTERM it exits
//! 0, and a new run with the same device resumes from the cursor its acks advanced.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use ziraai_e2e::{
    NatsServer, STEP, TestGateway, bin_path, gateway_config, publish_many, send_signal, token,
    user, wait_for_cursor, within,
};

struct Watch {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Watch {
    /// `watch --url url --token token` plus `mode` (`--device D` or `--live-only`).
    fn spawn(url: &str, token: &str, mode: &[&str]) -> Self {
        let mut child = Command::new(bin_path("ziraai-gateway"))
            .args(["watch", "--url", url, "--token", token])
            .args(mode)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ZIRAAI_CONFIG_DIR", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("watch starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Reads stderr until a line contains `needle`.
    async fn note(&mut self, needle: &str) {
        within(&format!("watch to say {needle:?}"), async {
            loop {
                match self.stderr.next_line().await.expect("stderr readable") {
                    Some(line) if line.contains(needle) => return,
                    Some(_) => {}
                    None => panic!("watch ended before saying {needle:?}"),
                }
            }
        })
        .await;
    }

    /// The sequences of the next `n` stdout lines, each of which must be an event.
    async fn events(&mut self, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let line = within("an event line from watch", self.stdout.next_line())
                .await
                .expect("stdout readable")
                .expect("watch still running");
            seqs.push(event_seq(&line));
        }
        seqs
    }

    /// SIGTERM; asserts exit status 0 and returns whatever stdout still held.
    async fn stop(mut self) -> Vec<u64> {
        let pid = self.child.id().expect("running").to_string();
        send_signal("-TERM", &pid).await;
        let status = within("watch to exit", self.child.wait())
            .await
            .expect("wait");
        assert!(status.success(), "watch exits 0 on SIGTERM, got {status}");
        let mut rest = Vec::new();
        while let Some(line) = within("stdout to end", self.stdout.next_line())
            .await
            .expect("stdout readable")
        {
            rest.push(event_seq(&line));
        }
        rest
    }
}

/// The `seq` of an event line; panics on anything else (stdout carries events only).
fn event_seq(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
    assert_eq!(v["type"], "event", "stdout carries events only: {line}");
    v["seq"].as_u64().expect("events carry seq")
}

#[tokio::test]
async fn watch_prints_every_event_once_across_gateway_restarts() {
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let gw = TestGateway::start(&nats).await;
    let addr = gw.addr.to_string();
    let same_address = [("ZIRAAI_GATEWAY_LISTEN", addr.as_str())];
    let farmer = user("watch");
    let device = "cli-test";
    let mut watch = Watch::spawn(&gw.ws_url(), &token(&farmer), &["--device", device]);
    watch.note("device id cli-test").await;
    watch.note("connected").await;

    // A new device starts live; a restart before its first event must not make the
    // next connection start live again (the events in between would be skipped).
    within("gateway drain", gw.shutdown())
        .await
        .expect("clean shutdown");
    let first = publish_many(&publisher, &farmer, 2).await;
    let gw = TestGateway::start_with(gateway_config(&nats, &same_address)).await;
    watch.note("connected").await;
    let before = publish_many(&publisher, &farmer, 3).await;
    let expected: Vec<u64> = first.iter().chain(&before).copied().collect();
    assert_eq!(watch.events(5).await, expected);

    // Graceful restart: the socket closes with 1012; events published while no
    // gateway listens, then after it is back on the same address.
    within("gateway drain", gw.shutdown())
        .await
        .expect("clean shutdown");
    let during = publish_many(&publisher, &farmer, 3).await;
    let gw = TestGateway::start_with(gateway_config(&nats, &same_address)).await;
    watch.note("connected").await;
    let after = publish_many(&publisher, &farmer, 3).await;
    let expected: Vec<u64> = during.iter().chain(&after).copied().collect();
    assert_eq!(watch.events(6).await, expected);

    // Crash: no close frame, no cursor flush; the connection is cut.
    gw.kill();
    let during_crash = publish_many(&publisher, &farmer, 2).await;
    let gw = TestGateway::start_with(gateway_config(&nats, &same_address)).await;
    watch.note("connected").await;
    let after_crash = publish_many(&publisher, &farmer, 2).await;
    let expected: Vec<u64> = during_crash.iter().chain(&after_crash).copied().collect();
    assert_eq!(watch.events(4).await, expected);

    let rest = watch.stop().await;
    assert!(rest.is_empty(), "no event printed twice: {rest:?}");

    // A new run with the same device resumes from the cursor the acks advanced.
    let last = *after_crash.last().expect("published");
    wait_for_cursor(&nats, &farmer, device, last).await;
    let offline = publish_many(&publisher, &farmer, 2).await;
    let mut watch = Watch::spawn(&gw.ws_url(), &token(&farmer), &["--device", device]);
    assert_eq!(watch.events(2).await, offline);
    let rest = watch.stop().await;
    assert!(rest.is_empty(), "only the missed events: {rest:?}");
    let _ = tokio::time::timeout(STEP, gw.shutdown()).await;
}

#[tokio::test]
async fn live_only_watch_keeps_its_place_across_a_restart_before_its_first_event() {
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let gw = TestGateway::start(&nats).await;
    let addr = gw.addr.to_string();
    let farmer = user("watch-live");
    publish_many(&publisher, &farmer, 2).await; // before the run: not shown
    let mut watch = Watch::spawn(&gw.ws_url(), &token(&farmer), &["--live-only"]);
    watch.note("live only").await;
    watch.note("connected").await;
    within("gateway drain", gw.shutdown())
        .await
        .expect("clean shutdown");
    let during = publish_many(&publisher, &farmer, 2).await;
    let gw =
        TestGateway::start_with(gateway_config(&nats, &[("ZIRAAI_GATEWAY_LISTEN", &addr)])).await;
    watch.note("connected").await;
    let after = publish_many(&publisher, &farmer, 1).await;
    let expected: Vec<u64> = during.iter().chain(&after).copied().collect();
    assert_eq!(watch.events(3).await, expected);
    assert!(watch.stop().await.is_empty());
    let _ = tokio::time::timeout(STEP, gw.shutdown()).await;
}
