//! Node faults under load: the NOTIFY leader (the node one gateway is connected to)
//! is SIGKILLed and restarted, then every node is restarted in turn with SIGTERM.

use std::time::Duration;

use tokio::time::Instant;
use ziraai_e2e::*;

use super::*;

#[tokio::test]
async fn leader_kill_and_rolling_node_restarts_under_load_lose_and_repeat_nothing() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start_with_auth(3).await;
    provision(&cluster).await;
    // Each gateway is given every node, starting with a different one.
    let (gw_a, gw_b) = (gateway(&cluster, 0).await, gateway(&cluster, 1).await);
    let users: Vec<_> = (0..USERS).map(|_| user("fault")).collect();
    let ws = [gw_a.ws_url(), gw_b.ws_url()];
    let hubs = [gw_a.hub_url(), gw_b.hub_url()];
    let devices = devices(&users, &ws, &hubs);
    wait_connected(&devices, Duration::from_secs(30)).await;
    let load = EventLoad::start(publisher(&cluster).await, users.clone(), RATE);
    load.wait_acked(200, Duration::from_secs(20)).await;

    // The NOTIFY leader is the node gateway A is connected to; it dies mid-run.
    let victim = within_for(Duration::from_secs(20), "gateway A on a node", async {
        loop {
            if let Some(i) = node_of(&cluster, &gw_a).await {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    move_leader(&cluster, "NOTIFY", victim).await;
    load.wait_acked(100, Duration::from_secs(20)).await;
    // Still there, so "moved to another node" below cannot hold by itself.
    assert_eq!(
        node_of(&cluster, &gw_a).await,
        Some(victim),
        "gateway A is on the node about to die"
    );
    let killed_at = Instant::now();
    cluster.kill(victim).await;
    load.wait_acked(300, Duration::from_secs(40)).await;
    let publish_recovery = load
        .first_ack_of_a_publish_sent_after(killed_at)
        .expect("a publish sent after the kill was acknowledged");
    // Gateway A moved to another node by itself.
    let moved_to = within_for(
        Duration::from_secs(30),
        "gateway A on another node",
        async {
            loop {
                match node_of(&cluster, &gw_a).await {
                    Some(i) if i != victim => return i,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        },
    )
    .await;
    assert_eq!(gw_a.health().await["nats"]["connected"], true);
    cluster.restart(victim).await;
    load.wait_acked(100, Duration::from_secs(20)).await;

    // Every node in turn: SIGTERM, start, cluster healthy (the node current) again.
    for i in 0..cluster.len() {
        cluster.restart(i).await;
        load.wait_acked(100, Duration::from_secs(30)).await;
    }
    let sent = load.finish().await;
    let results =
        assert_every_device_has_everything(&devices, &sent, Duration::from_secs(30)).await;
    let delivery_recovery = first_delivery_after(&devices, &sent, killed_at)
        .expect("an event published after the kill was delivered");
    let duplicates = assert_stream_holds_each_once(cluster.client().await, &sent).await;
    let repeats: usize = results.iter().map(|r| r.repeats).sum();
    let reconnects: u64 = devices.iter().map(Device::reconnects).sum();
    eprintln!(
        "FIGURES node faults: events={} users={USERS} devices={} kills=1 (n{} = NOTIFY leader, \
         gateway A moved to n{}) rolling node restarts={} lost=0 duplicates_in_stream={duplicates} \
         repeats_dropped_by_clients={repeats} device_reconnects={reconnects} \
         first_ack_after_kill={publish_recovery:?} first_delivery_after_kill={delivery_recovery:?} \
         wall={:?}",
        sent.len(),
        devices.len(),
        victim + 1,
        moved_to + 1,
        cluster.len(),
        started.elapsed(),
    );
    for d in devices {
        d.stop().await;
    }
}
