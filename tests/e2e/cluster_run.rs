//! `make run-cluster` and the load balancer in front of the gateways cannot rot:
//! `infra/haproxy/haproxy.cfg` passes `haproxy -c` and keeps sockets longer than the
//! gateway pings; `infra/scripts/run-cluster.sh` (3 nodes of `nats/cluster/`, 2 gateways
//! behind HAProxy, worker, analyzer, demo; every port a free loopback port) prints
//! commands that work verbatim: the watch (through HAProxy) keeps printing events while
//! a node is crashed with the printed command, the printed restart brings it back, and
//! Ctrl-C stops everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ziraai_common::config::{DEFAULT_PING_INTERVAL, DEFAULT_SIGNALR_KEEPALIVE};
use ziraai_e2e::{debian_tool, within_for, workspace_dir};

use crate::run_script::{
    COMMAND, RunScript, Watch, free_ports, in_terminal, run_checked, run_once, says_stopped,
};

/// Where Debian installs haproxy (`make haproxy`); `ZIRAAI_TEST_HAPROXY` overrides.
const HAPROXY: &str = "/usr/sbin/haproxy";
/// Events the watch must print with a node down (the demo submits one a second), and
/// how long that may take: a crashed stream leader is replaced after an election.
const EVENTS_WITH_NODE_DOWN: usize = 3;
const FAILOVER: Duration = Duration::from_secs(45);

fn haproxy() -> PathBuf {
    debian_tool("ZIRAAI_TEST_HAPROXY", HAPROXY, "haproxy", "haproxy")
}

fn haproxy_cfg() -> PathBuf {
    workspace_dir().join("infra/haproxy/haproxy.cfg")
}

/// An HAProxy time (`500ms`, `30s`, `1h`; milliseconds without a unit).
fn haproxy_time(value: &str) -> Duration {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let n: u64 = value[..split]
        .parse()
        .unwrap_or_else(|e| panic!("{value}: {e}"));
    match &value[split..] {
        "us" => Duration::from_micros(n),
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        unit => panic!("{value}: unknown unit {unit}"),
    }
}

#[tokio::test]
async fn haproxy_config_passes_haproxy_check() {
    let out = within_for(
        COMMAND,
        "haproxy -c",
        in_terminal(&haproxy().display().to_string())
            .arg("-c")
            .arg("-f")
            .arg(haproxy_cfg())
            .env("ZIRAAI_LB_LISTEN", "127.0.0.1:18090")
            .env("ZIRAAI_LB_GATEWAY1", "127.0.0.1:18091")
            .env("ZIRAAI_LB_GATEWAY2", "127.0.0.1:18092")
            .output(),
    )
    .await
    .expect("haproxy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "haproxy -c failed:\n{text}");
    assert!(text.contains("Configuration file is valid"), "{text}");
    assert!(!text.contains("WARNING"), "no warnings:\n{text}");
}

#[test]
fn haproxy_keeps_sockets_longer_than_the_gateway_pings() {
    let cfg = std::fs::read_to_string(haproxy_cfg()).expect("haproxy.cfg");
    let directives: Vec<Vec<&str>> = cfg
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect()
        })
        .filter(|words: &Vec<&str>| !words.is_empty())
        .collect();
    let has = |words: &[&str]| directives.iter().any(|d| d.starts_with(words));
    let timeout = |name: &str| {
        directives
            .iter()
            .find(|d| d.starts_with(&["timeout", name]))
            .map(|d| haproxy_time(d[2]))
            .unwrap_or_else(|| panic!("haproxy.cfg sets timeout {name}"))
    };
    // After the upgrade only the tunnel timeout counts: it must outlast the longest
    // silence of a healthy socket (a ping every interval, SignalR keep-alives).
    let tunnel = timeout("tunnel");
    assert!(
        tunnel > 3 * DEFAULT_PING_INTERVAL,
        "timeout tunnel {tunnel:?}"
    );
    assert!(
        tunnel > 3 * DEFAULT_SIGNALR_KEEPALIVE,
        "timeout tunnel {tunnel:?}"
    );
    for name in ["connect", "client", "server", "http-request"] {
        assert!(timeout(name) > Duration::ZERO, "timeout {name}");
    }
    // Health from readiness (503 while draining), sockets spread by count, the client
    // address in the header the gateway trusts, refused connections retried elsewhere.
    assert!(has(&["option", "httpchk", "GET", "/health/ready"]), "{cfg}");
    assert!(has(&["balance", "leastconn"]), "{cfg}");
    assert!(has(&["option", "forwardfor"]), "{cfg}");
    assert!(has(&["option", "redispatch"]), "{cfg}");
}

/// Running, not a zombie (a crashed node stays one until the script reaps it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn node_pid(run_dir: &Path, node: &str) -> u32 {
    let path = run_dir.join(format!("{node}.pid"));
    let text = std::fs::read_to_string(&path).expect("pid file");
    text.trim().parse().expect("a pid")
}

#[tokio::test]
async fn make_run_cluster_survives_a_crashed_node_and_ctrl_c_stops_everything() {
    let run_dir = tempfile::tempdir().expect("temp dir");
    let p = free_ports(14);
    let list = |ports: &[u16]| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let addr = |i: usize| format!("127.0.0.1:{}", p[i]);
    let lb = addr(9);
    let mut script = RunScript::spawn(
        "run-cluster.sh",
        run_dir.path(),
        &[
            ("ZIRAAI_CLUSTER_CLIENT_PORTS", list(&p[0..3])),
            ("ZIRAAI_CLUSTER_MONITOR_PORTS", list(&p[3..6])),
            ("ZIRAAI_CLUSTER_ROUTE_PORTS", list(&p[6..9])),
            ("ZIRAAI_CLUSTER_LB_LISTEN", lb.clone()),
            (
                "ZIRAAI_CLUSTER_GATEWAYS",
                format!("{},{}", addr(10), addr(11)),
            ),
            ("ZIRAAI_WORKER_LISTEN", addr(12)),
            ("ZIRAAI_DEV_ANALYZER_LISTEN", addr(13)),
            ("ZIRAAI_DEMO_INTERVAL", "1s".into()),
            ("ZIRAAI_HAPROXY_BIN", haproxy().display().to_string()),
        ],
    );
    let commands = script.commands().await;
    let find = |needle: &str| {
        commands
            .iter()
            .find(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("the banner has a command with {needle:?}: {commands:#?}"))
            .clone()
    };
    let watch_cmd = find(" watch ");
    assert!(
        watch_cmd.contains(&format!("ws://{lb}/ws")),
        "through HAProxy: {watch_cmd}"
    );
    let crash_cmd = find("n2.pid");
    let restart_cmd = find("run-cluster.sh restart n2");
    // The script's own short-lived children (`mv` of commands.txt) end by themselves.
    let kids = within_for(COMMAND, "the script's children to be its 9 services (3 nodes, 2 gateways, haproxy, analyzer, worker, demo)", async {
        loop {
            let kids = script.children();
            if kids.len() == 9 {
                return kids;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let watch = Watch::start(&watch_cmd);
    watch.events_after(0, 1, COMMAND).await;
    for command in commands
        .iter()
        .filter(|c| ![&watch_cmd, &crash_cmd, &restart_cmd].contains(c))
    {
        if command.contains(" submit ") {
            assert_eq!(
                command.matches("nats://").count(),
                3,
                "every node: {command}"
            );
        }
        run_checked(command).await;
    }

    // Crash n2 (SIGKILL) with the printed command: the pipeline goes on without it.
    let crashed = node_pid(run_dir.path(), "n2");
    let out = within_for(
        COMMAND,
        &crash_cmd,
        in_terminal("bash").args(["-c", &crash_cmd]).output(),
    )
    .await
    .expect("bash runs");
    assert!(out.status.success(), "`{crash_cmd}`: {out:?}");
    within_for(COMMAND, "n2 to die", async {
        while alive(crashed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    watch
        .events_after(watch.last_seq(), EVENTS_WITH_NODE_DOWN, FAILOVER)
        .await;

    let line = run_once(&restart_cmd).await;
    assert!(line.starts_with("restarted n2 "), "{line}");
    let restarted = node_pid(run_dir.path(), "n2");
    assert!(alive(restarted), "{line}");
    watch.events_after(watch.last_seq(), 1, COMMAND).await;
    watch.stop().await;

    let printed = script.interrupt().await;
    for name in [
        "nats n1",
        "nats n2",
        "nats n3",
        "gateway 1",
        "gateway 2",
        "haproxy",
        "analyzer",
        "worker (",
        "demo",
    ] {
        assert!(
            says_stopped(&printed, name),
            "says it stopped {name}:\n{printed}"
        );
    }
    for pid in kids.into_iter().chain([restarted]) {
        assert!(!alive(pid), "process {pid} is gone after Ctrl-C");
    }
}
