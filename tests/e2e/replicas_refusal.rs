//! Replicas the deployment cannot give are refused (exit 2, one line), and replicas the
//! server has beyond the configured number are kept until an operator lowers them.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use ziraai_e2e::{
    NatsCluster, NatsServer, NatsUrls, ServiceProcess, gateway_vars, within, within_for,
    worker_vars,
};

use crate::replicas::{STREAMS, assert_replicas, stream_info, wait_replicas};

const NO_ANALYZER: &str = "http://127.0.0.1:9/analyze";

/// The variables of `bin` on `nats` with `replicas`, logging JSON.
fn vars(bin: &str, nats: &impl NatsUrls, replicas: &str) -> HashMap<String, String> {
    let extra = [
        ("ZIRAAI_NATS_REPLICAS", replicas),
        ("ZIRAAI_LOG_FORMAT", "json"),
    ];
    match bin {
        "ziraai-gateway" => gateway_vars(nats, &extra),
        _ => worker_vars(nats, NO_ANALYZER, &extra),
    }
}

/// The stderr lines that are not JSON log records (what a person reads).
fn plain_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect()
}

/// The messages of JSON log records at `level`.
fn logged(stderr: &str, level: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == level)
        .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Asserts a refusal: exit 2, exactly one plain line (`line`), no error logged.
fn assert_refused(what: &str, status: ExitStatus, stderr: &str, line: &str) {
    assert_eq!(
        status.code(),
        Some(2),
        "{what}: {status}; stderr:\n{stderr}"
    );
    assert_eq!(plain_lines(stderr), [line], "{what}: stderr:\n{stderr}");
    assert!(
        logged(stderr, "ERROR").is_empty(),
        "{what}: stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn three_replicas_on_a_single_server_are_refused_in_one_line_by_both_services() {
    let nats = NatsServer::start().await;
    let commands: [(&str, &[&str]); 4] = [
        ("ziraai-gateway", &[]),
        ("ziraai-gateway", &["serve"]),
        ("ziraai-worker", &["run"]),
        ("ziraai-worker", &["provision"]),
    ];
    let runs = commands.map(|(bin, args)| {
        let vars = vars(bin, &nats, "3");
        async move {
            (
                bin,
                args,
                ServiceProcess::run_to_exit(bin, args, &vars).await,
            )
        }
    });
    for (bin, args, (status, _, stderr)) in futures_util::future::join_all(runs).await {
        let line = format!(
            "{bin}: NATS at {} has 1 JetStream server(s); ZIRAAI_NATS_REPLICAS=3 needs at least 3 \
             (set ZIRAAI_NATS_REPLICAS=1 for a single server)",
            nats.url()
        );
        assert_refused(&format!("{bin} {args:?}"), status, &stderr, &line);
    }
    // Refused before applying anything.
    let js = jetstream::new(nats.client().await);
    let names: Vec<_> = within("stream names", js.stream_names().collect::<Vec<_>>()).await;
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test]
async fn replicas_are_never_lowered_silently_and_provision_lowers_them_when_asked() {
    let cluster = NatsCluster::start(3).await;
    let provision = |replicas: &str, args: &'static [&'static str]| {
        let vars = vars("ziraai-worker", &cluster, replicas);
        async move { ServiceProcess::run_to_exit("ziraai-worker", args, &vars).await }
    };
    // 5 replicas on 3 servers: the cluster cannot place them.
    let (status, _, stderr) = provision("5", &["provision"]).await;
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    let lines = plain_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(
            "ziraai-worker: NATS cluster ziraai-test cannot place stream NOTIFY on 5 JetStream servers ("
        ) && lines[0].contains("no suitable peers for placement")
            && lines[0].ends_with("ZIRAAI_NATS_REPLICAS=5 needs at least 5 JetStream servers in the cluster"),
        "{}",
        lines[0]
    );

    let (status, stdout, stderr) = provision("3", &["provision"]).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "streams and consumers applied\n");
    let js = jetstream::new(cluster.client().await);
    for name in STREAMS {
        assert_replicas(&js, name, 3).await;
    }

    // A gateway asking for one replica starts, keeps three and says so per stream.
    let gateway = ServiceProcess::gateway(&cluster, &[("ZIRAAI_NATS_REPLICAS", "1")]).await;
    let warnings = logged(&gateway.stderr(), "WARN");
    for name in ["NOTIFY", "KV_CURSORS", "KV_SIGNALR", "KV_CONNS", "DELIVERY"] {
        let expected = format!(
            "stream {name} has 3 replicas on the server, more than the 1 configured \
             (ZIRAAI_NATS_REPLICAS); keeping 3. To lower it on purpose: ziraai-worker provision \
             --lower-replicas (with the operator credential)"
        );
        assert!(warnings.contains(&expected), "{name}: {warnings:?}");
        assert_replicas(&js, name, 3).await;
    }
    drop(gateway);

    // Lowering on purpose: one line per stream lowered.
    let (status, stdout, stderr) = provision("1", &["provision", "--lower-replicas"]).await;
    assert!(status.success(), "{stderr}");
    let mut expected: Vec<String> = [
        "NOTIFY",
        "KV_CURSORS",
        "KV_SIGNALR",
        "KV_CONNS",
        "DELIVERY",
        "ADVISORIES",
        "JOBS",
    ]
    .iter()
    .map(|s| format!("lowered {s} from 3 to 1 replica(s)"))
    .collect();
    expected.push("streams and consumers applied".into());
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    for name in STREAMS {
        within_for(Duration::from_secs(20), "one replica", async {
            loop {
                let info = stream_info(&js, name).await;
                let followers = info.cluster.map(|c| c.replicas.len());
                if info.config.num_replicas == 1 && followers == Some(0) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

#[tokio::test]
async fn authenticated_services_only_check_replicas_and_say_when_provision_must_raise_them() {
    let cluster = NatsCluster::start_with_auth(3).await;
    let as_user = |bin: &str, user: &'static str, replicas: &str| {
        let mut v = vars(bin, &cluster, replicas);
        v.extend(cluster.credentials(user).map(|(k, v)| (k.to_owned(), v)));
        v
    };
    let provision = |replicas: &str| {
        let v = as_user("ziraai-worker", "operator", replicas);
        async move { ServiceProcess::run_to_exit("ziraai-worker", &["provision"], &v).await }
    };
    let (status, _, stderr) = provision("1").await;
    assert!(status.success(), "{stderr}");

    // The gateway's credential may not raise NOTIFY to 3: it says which and how.
    let (status, _, stderr) = ServiceProcess::run_to_exit(
        "ziraai-gateway",
        &[],
        &as_user("ziraai-gateway", "gateway", "3"),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines = plain_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(
        lines[0],
        "ziraai-gateway: stream NOTIFY has 1 replica(s) on the server and ZIRAAI_NATS_REPLICAS=3; \
         raising it failed: no answer within 5s (a credential that may not manage streams gets \
         none) (raise it with `ziraai-worker provision` and the operator credential)"
    );

    // Provisioned with 3, both services start with only reads of the definitions.
    let (status, _, stderr) = provision("3").await;
    assert!(status.success(), "{stderr}");
    let gateway = as_user("ziraai-gateway", "gateway", "3");
    let worker = as_user("ziraai-worker", "worker", "3");
    let mut g = ServiceProcess::spawn("ziraai-gateway", &[], &gateway);
    let mut w = ServiceProcess::spawn("ziraai-worker", &["run"], &worker);
    g.logged_addr("gateway listening", "addr").await;
    w.logged_addr("worker consuming jobs", "health").await;
    let js = jetstream::new(cluster.client().await);
    for name in STREAMS {
        wait_replicas(&js, name, 3).await;
    }
}
