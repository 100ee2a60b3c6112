//! A reconnect storm: a gateway process killed and started again on the same address,
//! and all its devices reconnecting at once (each retries every 100 ms). Every device
//! resumes from its cursor with nothing lost, events published throughout.

use std::time::Duration;

use tokio::time::Instant;
use ziraai_e2e::*;

#[tokio::test]
async fn every_device_resumes_after_a_gateway_restart_with_nothing_lost() {
    // Scaled up locally with ZIRAAI_STORM_DEVICES (the process keeps under 20,000 files).
    let devices_n: usize = std::env::var("ZIRAAI_STORM_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    const RATE: u32 = 300;
    let nats = NatsServer::start().await;
    let mut gw = ServiceProcess::gateway(&nats, &[]).await;
    let addr = gw.addr().to_string();
    let users: Vec<_> = (0..devices_n).map(|_| user("storm")).collect();
    let devices: Vec<Device> = users
        .iter()
        .enumerate()
        .map(|(i, u)| Device::native(vec![gw.ws_url()], (i, u), &format!("d{i}")))
        .collect();
    wait_connected(&devices, Duration::from_secs(60)).await;
    let load = EventLoad::start(nats.publisher().await, users.clone(), RATE);
    load.wait_acked(RATE as usize, Duration::from_secs(30))
        .await;

    // A crash: no close frames, no cursor flush; the devices retry every 100 ms.
    gw.sigkill();
    let _ = gw.wait_exit(Duration::from_secs(10)).await;
    load.wait_acked(RATE as usize / 2, Duration::from_secs(30))
        .await;
    let api = |v: serde_json::Value| {
        (
            v["api"]["total"].as_u64().unwrap_or(0),
            v["api"]["errors"].as_u64().unwrap_or(0),
        )
    };
    let api_before = api(nats.monitor("/jsz").await);
    let failed_before: u64 = devices.iter().map(|d| d.reconnects()).sum();
    let restarted = Instant::now();
    let log = std::env::var("ZIRAAI_STORM_GATEWAY_LOG").ok();
    let mut vars = vec![("ZIRAAI_GATEWAY_LISTEN", addr.as_str())];
    if log.is_some() {
        vars.push((
            "RUST_LOG",
            "info,ziraai_gateway::ws=debug,ziraai_gateway::conn_limit=debug",
        ));
    }
    let gw = ServiceProcess::gateway(&nats, &vars).await;
    let ready_in = restarted.elapsed();
    within_for(Duration::from_secs(60), "every device resumed", async {
        while devices.iter().any(|d| d.connections() < 2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let resumed_in = restarted.elapsed();
    // Scaled-up runs: ZIRAAI_STORM_GATEWAY_LOG=<file> keeps the restarted gateway's log
    // with each handshake's steps (debug).
    if let Some(path) = &log {
        std::fs::write(path, gw.stderr()).expect("gateway log written");
    }
    let api_after = api(nats.monitor("/jsz").await);
    let failed: u64 = devices.iter().map(|d| d.reconnects()).sum::<u64>() - failed_before;
    let queue_drops = nats
        .log()
        .lines()
        .filter(|l| l.contains("queue limit"))
        .count();
    println!(
        "storm: {} JetStream API requests ({} errors) during the resume; {failed} failed \
         attempts; {queue_drops} API queue drops logged by nats-server",
        api_after.0 - api_before.0,
        api_after.1 - api_before.1,
    );
    // A handshake that succeeds asks nothing of nats-server's JetStream API queue
    // (direct gets and publishes only; the old listing made one STREAM.INFO per
    // attempt, 614 for 300 devices). Only keys of handshakes that failed after
    // registering are deleted through it, so a storm stays under one per device.
    let requests = api_after.0 - api_before.0;
    assert!(
        requests < devices_n as u64,
        "{devices_n} resumes made {requests} JetStream API requests"
    );
    assert_eq!(queue_drops, 0, "nats-server dropped JetStream API requests");
    load.wait_acked(RATE as usize, Duration::from_secs(30))
        .await;
    let sent = load.finish().await;
    let results =
        assert_every_device_has_everything(&devices, &sent, Duration::from_secs(60)).await;
    let repeats: usize = results.iter().map(|r| r.repeats).sum();
    println!(
        "storm: {devices_n} devices resumed {resumed_in:?} after the gateway process was started \
         again (ready after {ready_in:?}); {} events, 0 lost, {repeats} repeats dropped",
        sent.len()
    );
    assert_eq!(gw.health().await["connections"], devices_n);
    for d in devices {
        d.stop().await;
    }
}

#[tokio::test]
async fn concurrent_resumes_share_one_stream_info_each_as_fresh_as_asked() {
    const CALLS: usize = 200;
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let js = async_nats::jetstream::new(nats.client().await);
    let store = within("store", ziraai_gateway::store::EventStore::new(&js))
        .await
        .expect("NOTIFY exists");
    let u = user("bounds");
    let api_total = |v: serde_json::Value| v["api"]["total"].as_u64().unwrap_or(0);
    let before = api_total(nats.monitor("/jsz").await);
    let (_, published) = publish_completed(&publisher, &u, serde_json::json!(1)).await;
    let answers = within(
        "bounds",
        futures_util::future::join_all((0..CALLS).map(|_| store.bounds())),
    )
    .await;
    for a in &answers {
        let b = a.as_ref().expect("bounds");
        assert!(
            b.last_seq >= published.seq,
            "asked after the publish: {b:?}"
        );
    }
    let requests = api_total(nats.monitor("/jsz").await) - before;
    assert!(
        requests < 10,
        "{CALLS} concurrent calls made {requests} JetStream API requests"
    );
}

/// A draining gateway leaves its sockets' connection-limit keys to the one purge at stop:
/// its closing sockets make a handful of JetStream API requests, not a delete each (19,000
/// deletes queued in nats-server for tens of seconds, ahead of the restarted gateway's
/// start-up), and no key is left behind.
#[tokio::test]
async fn a_draining_gateway_removes_its_connection_keys_with_one_purge() {
    const SOCKETS: usize = 150;
    let nats = NatsServer::start().await;
    let gw = TestGateway::start(&nats).await;
    let mut clients = Vec::new();
    for i in 0..SOCKETS {
        clients.push(WsClient::open(&gw.ws_url(), &user(&format!("drain{i}"))).await);
    }
    assert_eq!(gw.health().await["connections"], SOCKETS);
    let js = async_nats::jetstream::new(nats.client().await);
    let conns = || async {
        let mut stream = within("KV_CONNS", js.get_stream("KV_CONNS"))
            .await
            .expect("stream exists");
        within("info", stream.info())
            .await
            .expect("info")
            .state
            .messages
    };
    assert!(
        conns().await > SOCKETS as u64,
        "a key per socket and a heartbeat"
    );
    let api_total = |v: serde_json::Value| v["api"]["total"].as_u64().unwrap_or(0);
    let before = api_total(nats.monitor("/jsz").await);
    within("graceful stop", gw.shutdown())
        .await
        .expect("the gateway stops");
    let requests = api_total(nats.monitor("/jsz").await) - before;
    assert!(
        requests < 20,
        "{SOCKETS} closing sockets made {requests} JetStream API requests"
    );
    assert_eq!(conns().await, 0, "every key of the gateway purged at stop");
    drop(clients);
}
