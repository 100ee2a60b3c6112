//! The real binaries started as each manifest and unit says (program, arguments,
//! environment, mounted files; only the NATS URL and the listen address are the test's),
//! against a 3-node test cluster (the manifests ask for 3 replicas) enforcing
//! `nats/auth.conf`, each service as its own user:
//! the provisioning Job completes, every service answers its readiness and liveness
//! paths with 200, and SIGTERM makes it exit 0 well within its stop limit (a gateway
//! after closing a connected client's socket with 1012).

use std::net::SocketAddr;

use ziraai_e2e::{NatsCluster, STEP, ServiceProcess, WsClient, http_get, user, within};

use super::spec::{Launch, k8s_launch, systemd_launch};

/// NATS servers of the test cluster: the replicas the manifests and units ask for.
const REPLICAS: usize = 3;

/// The JSON start-up line that carries the listen address, and its field.
fn listening_line(launch: &Launch) -> (&'static str, &'static str) {
    match launch.program.as_str() {
        "ziraai-gateway" => ("gateway listening", "addr"),
        "ziraai-worker" => ("worker consuming jobs", "health"),
        other => panic!("{}: unknown program {other}", launch.what),
    }
}

/// Runs a one-shot command (the provisioning Job) to completion: exit 0.
async fn run_to_completion(launch: &Launch, nats: &NatsCluster) {
    let args: Vec<&str> = launch.args.iter().map(String::as_str).collect();
    let mut p = ServiceProcess::spawn(&launch.program, &args, &launch.test_env(nats));
    let status = p.wait_exit(STEP).await;
    assert!(
        status.success(),
        "{} exited with {status}; stderr:\n{}",
        launch.what,
        p.stderr()
    );
}

/// GET `path` until it answers 200 (failing after `STEP`).
async fn answers_200(addr: SocketAddr, path: &str, what: &str) {
    within(&format!("{what}: {path} answering 200"), async {
        loop {
            let (status, _) = http_get(addr, path).await;
            if status == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A native client of the gateway at `addr`, authenticated with a token signed by the
/// JWT secret file the launch mounts, past its welcome frame.
async fn connected_client(launch: &Launch, addr: SocketAddr) -> WsClient {
    let path = launch
        .env
        .get("ZIRAAI_JWT_SECRET_FILE")
        .expect("a JWT secret file");
    let secret = std::fs::read_to_string(path).expect("read the JWT secret");
    let u = user("deploy");
    let token = ziraai_gateway::auth::mint(&secret.trim_end().to_owned().into(), u.as_str(), 600);
    let mut c = WsClient::connect(&format!("ws://{addr}/ws"), Some(&token), None)
        .await
        .unwrap_or_else(|r| panic!("{}: upgrade refused: {r:?}", launch.what));
    let welcome = c.frame().await;
    assert!(
        matches!(welcome, ziraai_proto::ServerFrame::Welcome { .. }),
        "{}: expected a welcome, got {welcome:?}",
        launch.what
    );
    c
}

/// Starts a service as `launch` says, checks its probes, stops it with SIGTERM.
async fn serve_probe_and_stop(launch: &Launch, nats: &NatsCluster) -> std::time::Duration {
    let args: Vec<&str> = launch.args.iter().map(String::as_str).collect();
    let mut p = ServiceProcess::spawn(&launch.program, &args, &launch.test_env(nats));
    let (message, field) = listening_line(launch);
    let addr = p.logged_addr(message, field).await;
    let ready = launch.ready_path.as_deref().unwrap_or("/health/ready");
    let live = launch.live_path.as_deref().unwrap_or("/health/live");
    answers_200(addr, ready, &launch.what).await;
    answers_200(addr, live, &launch.what).await;
    // A gateway drains its sockets: a client with a token signed by the mounted secret
    // is told 1012 (restart) and the process still exits 0.
    let client = match launch.program.as_str() {
        "ziraai-gateway" => Some(connected_client(launch, addr).await),
        _ => None,
    };
    let stopping = std::time::Instant::now();
    p.sigterm();
    if let Some(mut c) = client {
        let (_, code) = c.until_close().await;
        assert_eq!(
            code,
            Some(1012),
            "{}: close code of a drained socket",
            launch.what
        );
    }
    let status = p.wait_exit(launch.stop_limit).await;
    let took = stopping.elapsed();
    assert!(
        status.success(),
        "{}: SIGTERM ended it with {status}; stderr:\n{}",
        launch.what,
        p.stderr()
    );
    took
}

#[tokio::test]
async fn kubernetes_containers_start_ready_and_stop_on_sigterm() {
    let nats = NatsCluster::start_with_auth(REPLICAS).await;
    // The Job first: the services only read the streams it creates.
    run_to_completion(&k8s_launch("Job", "ziraai-provision", Some(&nats)), &nats).await;
    for name in ["ziraai-gateway", "ziraai-worker"] {
        let launch = k8s_launch("Deployment", name, Some(&nats));
        let took = serve_probe_and_stop(&launch, &nats).await;
        eprintln!("{}: ready, stopped by SIGTERM in {took:?}", launch.what);
    }
}

#[tokio::test]
async fn systemd_services_start_ready_and_stop_on_sigterm() {
    let nats = NatsCluster::start_with_auth(REPLICAS).await;
    // The units have no provisioning of their own: the operator runs it (README).
    run_to_completion(&k8s_launch("Job", "ziraai-provision", Some(&nats)), &nats).await;
    for unit in ["ziraai-gateway.service", "ziraai-worker.service"] {
        let launch = systemd_launch(unit, Some(&nats));
        let took = serve_probe_and_stop(&launch, &nats).await;
        eprintln!("{unit}: ready, stopped by SIGTERM in {took:?}");
    }
}
