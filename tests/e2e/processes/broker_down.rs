//! SIGTERM while the broker is unreachable: both binaries still exit 0 within their
//! grace, and the gateway's sockets get 1012. Found by this test: a final NATS flush or
//! drain waited for a reconnect that never came (a `ziraai-worker run` stopped during
//! an outage ran on for minutes), and a socket whose replay read was waiting on the
//! broker ignored the drain, so the client saw no close frame at all.

use std::time::{Duration, Instant};

use ziraai_e2e::*;

/// Bound on a service's exit after SIGTERM: its grace (2 s) plus the bounded final
/// NATS flush or drain (2 s), with room for a loaded machine.
const EXIT_WITHIN: Duration = Duration::from_secs(8);

/// Waits until the service reports `nats` missing from its readiness.
async fn wait_not_ready(p: &ServiceProcess) {
    within("the service to notice the broker is gone", async {
        loop {
            let (status, body) = http_get(p.addr(), "/health/ready").await;
            if status == 503 && body.contains("nats") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn assert_exits_0(mut p: ServiceProcess) {
    let started = Instant::now();
    p.sigterm();
    let status = p.wait_exit(EXIT_WITHIN).await;
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        p.stderr()
    );
    assert!(
        started.elapsed() < EXIT_WITHIN,
        "exited after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_during_a_broker_outage_still_exits_0() {
    let mut nats = NatsServer::start().await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let gw = ServiceProcess::gateway(&nats, &[("ZIRAAI_GATEWAY_SHUTDOWN_GRACE", "2s")]).await;
    let worker = ServiceProcess::worker(
        &nats,
        &analyzer.url,
        &[("ZIRAAI_WORKER_SHUTDOWN_GRACE", "2s")],
    )
    .await;
    let u = user("outage");
    let mut client = WsClient::open(&gw.ws_url(), &u).await;

    nats.stop().await;
    wait_not_ready(&gw).await;
    wait_not_ready(&worker).await;

    tokio::join!(assert_exits_0(gw), assert_exits_0(worker));
    let (_, code) = client.until_close().await;
    assert_eq!(code, Some(1012), "the socket was drained, not dropped");
}
