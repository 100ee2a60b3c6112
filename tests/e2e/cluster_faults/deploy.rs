//! A rolling deploy under load: behind a balancer, each gateway process in turn is
//! replaced (the new one started and put in rotation first, as a Deployment with
//! `maxUnavailable: 0` does, then the old one taken out and sent SIGTERM).

use std::time::Duration;

use tokio::time::Instant;
use ziraai_e2e::*;

use super::*;

#[tokio::test]
async fn a_rolling_gateway_deploy_under_load_loses_nothing() {
    let started = Instant::now();
    let cluster = NatsCluster::start_with_auth(3).await;
    provision(&cluster).await;
    let mut old = [gateway(&cluster, 0).await, gateway(&cluster, 1).await];
    let lb = Balancer::start(old.iter().map(ServiceProcess::addr).collect()).await;
    let users: Vec<_> = (0..USERS).map(|_| user("deploy")).collect();
    let devices = devices(&users, &[lb.ws_url()], &[lb.hub_url()]);
    wait_connected(&devices, Duration::from_secs(30)).await;
    let load = EventLoad::start(publisher(&cluster).await, users.clone(), RATE);
    load.wait_acked(200, Duration::from_secs(20)).await;

    let mut new: Vec<ServiceProcess> = Vec::new();
    let mut drains = Vec::new();
    for k in 0..old.len() {
        new.push(gateway(&cluster, k + 2).await);
        let mut rotation: Vec<_> = old[k + 1..].iter().map(ServiceProcess::addr).collect();
        rotation.extend(new.iter().map(ServiceProcess::addr));
        lb.set_backends(rotation);
        let leaving = &mut old[k];
        let term = Instant::now();
        leaving.sigterm();
        let status = leaving.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "a drained gateway exits 0: {status}");
        drains.push(term.elapsed());
        load.wait_acked(150, Duration::from_secs(20)).await;
    }
    let sent = load.finish().await;
    let results =
        assert_every_device_has_everything(&devices, &sent, Duration::from_secs(30)).await;
    let duplicates = assert_stream_holds_each_once(cluster.client().await, &sent).await;
    let repeats: usize = results.iter().map(|r| r.repeats).sum();
    let reconnects: u64 = devices.iter().map(Device::reconnects).sum();
    assert!(
        devices.iter().all(|d| d.reconnects() >= 1),
        "every device was moved off a terminated gateway"
    );
    eprintln!(
        "FIGURES rolling deploy: events={} devices={} gateways restarted={} lost=0 \
         duplicates_in_stream={duplicates} repeats_dropped_by_clients={repeats} \
         device_reconnects={reconnects} drain_times={drains:?} wall={:?}",
        sent.len(),
        devices.len(),
        old.len(),
        started.elapsed(),
    );
    for d in devices {
        d.stop().await;
    }
}
