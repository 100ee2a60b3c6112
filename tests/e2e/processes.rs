//! The shipped binaries as child processes of the test: configuration refusals, the
//! SIGTERM drain, SIGKILL of a gateway while events flow and of a worker mid-job.
//! Needs the binaries built (`cargo build --workspace --bins`; `make test` does it).

mod bad_config;
mod broker_down;
mod worker_kill;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ziraai_e2e::*;

#[tokio::test]
async fn sigterm_closes_native_clients_with_1012_and_exits_0_within_the_grace() {
    const GRACE: Duration = Duration::from_secs(5);
    let nats = NatsServer::start().await;
    let mut gw = ServiceProcess::gateway(&nats, &[("ZIRAAI_GATEWAY_SHUTDOWN_GRACE", "5s")]).await;
    let publisher = nats.publisher().await;
    let u = user("term");
    let mut clients = vec![
        WsClient::open(&gw.ws_url(), &u).await,
        WsClient::open_with(&gw.ws_url(), &u, Some("ziraai.v1.msgpack")).await,
        WsClient::resume(&gw.ws_url(), &u, "deviceId=tablet")
            .await
            .0,
    ];
    let seqs = publish_many(&publisher, &u, 1).await;
    for c in &mut clients {
        assert_eq!(c.seqs(1).await, seqs, "served before the signal");
    }

    let started = Instant::now();
    gw.sigterm();
    let closes = clients.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let (_, code) = c.until_close().await;
            // Reading on sends the client's close reply, as a real client does.
            c.drain_events().await;
            code
        })
    });
    for close in closes {
        assert_eq!(within("close", close).await.expect("joined"), Some(1012));
    }
    let status = gw.wait_exit(GRACE).await;
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
    assert!(
        started.elapsed() < GRACE,
        "drained in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_with_a_client_that_never_answers_still_exits_0_after_the_grace() {
    let nats = NatsServer::start().await;
    let mut gw = ServiceProcess::gateway(&nats, &[("ZIRAAI_GATEWAY_SHUTDOWN_GRACE", "1s")]).await;
    let u = user("mute");
    // Connected, then never read again: it never answers the close frame.
    let _mute = WsClient::open(&gw.ws_url(), &u).await;
    let started = Instant::now();
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_secs(4)).await;
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the grace (1 s) bounds the drain: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigkill_of_a_gateway_while_events_flow_loses_nothing_for_a_device_resuming_elsewhere() {
    const BEFORE_KILL: usize = 40;
    const AFTER_KILL: usize = 60;
    let nats = NatsServer::start().await;
    let mut a = ServiceProcess::gateway(&nats, &[]).await;
    let b = ServiceProcess::gateway(&nats, &[]).await;
    let publisher = nats.publisher().await;
    let u = user("kill");
    let (mut client, _) = WsClient::resume(&a.ws_url(), &u, "deviceId=phone").await;

    // Publishes every 5 ms until AFTER_KILL events went out after the kill.
    let killed = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (u, killed) = (u.clone(), killed.clone());
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut stop_at: Option<usize> = None;
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while stop_at.is_none_or(|n| seqs.len() < n) {
                if stop_at.is_none() && killed.load(Ordering::SeqCst) {
                    stop_at = Some(seqs.len() + AFTER_KILL);
                }
                tick.tick().await;
                let (_, p) = publish_completed(&publisher, &u, serde_json::json!(seqs.len())).await;
                seqs.push(p.seq);
            }
            seqs
        })
    };

    let mut received = Vec::new();
    while received.len() < BEFORE_KILL {
        let e = client.next_event_or_end().await.expect("gateway A serves");
        client.ack(e.seq).await;
        received.push(e.seq);
    }
    a.sigkill();
    killed.store(true, Ordering::SeqCst);
    let status = a.wait_exit(STEP).await;
    assert!(!status.success(), "killed: {status}");
    // Whatever was already in flight to the client arrives, then the socket ends.
    while let Some(e) = client.next_event_or_end().await {
        received.push(e.seq);
    }

    let (mut client, _) = WsClient::resume(&b.ws_url(), &u, "deviceId=phone").await;
    let mut publishing = publishing;
    let mut all: Option<Vec<u64>> = None;
    within_for(Duration::from_secs(20), "every event on gateway B", async {
        loop {
            if let Some(last) = all.as_ref().and_then(|s| s.last())
                && received.contains(last)
            {
                break;
            }
            tokio::select! {
                e = client.next_event_or_end() => {
                    let e = e.expect("gateway B serves");
                    client.ack(e.seq).await;
                    received.push(e.seq);
                }
                seqs = &mut publishing, if all.is_none() => all = Some(seqs.expect("publisher")),
            }
        }
    })
    .await;
    let all = all.expect("publisher done");
    assert!(
        all.len() >= BEFORE_KILL + AFTER_KILL,
        "published {}",
        all.len()
    );

    // Drop repeats (a sequence not above the highest seen), as the README tells clients.
    let mut highest = 0;
    let unique: Vec<u64> = received
        .iter()
        .copied()
        .filter(|s| {
            let new = *s > highest;
            highest = highest.max(*s);
            new
        })
        .collect();
    println!(
        "sigkill: {} events published, {} received, {} repeats dropped",
        all.len(),
        received.len(),
        received.len() - unique.len()
    );
    assert_eq!(unique, all, "every event once, in order");
}
