//! `ziraai-gateway admin` on a live 3-node cluster (the shipped authorization, every
//! stream and bucket provisioned at 3 replicas, a gateway with `ZIRAAI_NATS_REPLICAS=3`
//! and its own credential, real native and SignalR clients), given every node's URL:
//! `user` sees the devices, and after `erase` nothing of the user remains in NOTIFY,
//! CURSORS, SIGNALR, CONNS or DELIVERY, while another user's data is untouched.

use async_nats::jetstream;
use serde_json::json;
use ziraai_e2e::*;

use crate::admin_support::{
    Admin, cursor_of, records_settle, signalr_keys, stored, stored_becomes,
};
use crate::replicas::assert_replicas;

#[tokio::test]
async fn operator_cli_erases_a_user_on_a_three_node_cluster() {
    let cluster = NatsCluster::start_with_auth(3).await;
    let op = jetstream::new(cluster.client_as("operator").await);
    within(
        "provision at 3 replicas",
        ziraai_common::nats::provision(&op, None, 3, false),
    )
    .await
    .expect("operator provisions");
    for name in ["NOTIFY", "KV_CURSORS", "KV_SIGNALR", "KV_CONNS", "DELIVERY"] {
        assert_replicas(&op, name, 3).await;
    }
    let mut vars: Vec<(&str, String)> = cluster.credentials("gateway").into();
    vars.push(("ZIRAAI_NATS_REPLICAS", "3".into()));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = TestGateway::start_with(gateway_config(&cluster, &refs)).await;
    let publisher =
        ziraai_worker::Publisher::new(jetstream::new(cluster.client_as("worker").await));
    let (u, other) = (user("erase3"), user("keep3"));
    let url = gateway.ws_url();
    let (mut phone, _) = WsClient::resume(&url, &u, "deviceId=phone").await;
    let mut hub = JsClient::start(JsOptions {
        url: gateway.hub_url(),
        token: token(&u),
        protocol: "json",
        stateful: true,
        ..JsOptions::default()
    })
    .await;
    hub.expect("connected").await;
    let (mut keep, _) = WsClient::resume(&url, &other, "deviceId=keep").await;
    let mine = publish_many(&publisher, &u, 3).await;
    let theirs = publish_many(&publisher, &other, 2).await;
    assert_eq!(phone.seqs(3).await, mine);
    for _ in 0..3 {
        hub.invocation("AnalysisCompleted").await;
    }
    assert_eq!(keep.seqs(2).await, theirs);
    phone.ack(mine[2]).await;
    keep.ack(theirs[1]).await;
    // The phone's delivered and acked records, and the hub connection's deliveries.
    records_settle(&op, (&u, "phone", mine[2]), (&other, "keep", theirs[1]), 9).await;

    let admin = Admin {
        urls: cluster.urls(),
        password: cluster.password("operator").to_owned(),
    };
    let seen = admin.json(&["user", u.as_str()]).await;
    assert_eq!(seen["eventCount"], 3, "{seen}");
    assert_eq!(
        seen["devices"],
        json!([{"deviceId": "phone", "cursor": mine[2], "pending": 0}])
    );
    assert_eq!(seen["sockets"].as_array().map(Vec::len), Some(2), "{seen}");

    // The user's sessions end, then the erasure.
    phone.close().await;
    hub.command("stop").await;
    stored_becomes(&op, "KV_CONNS", &format!("$KV.CONNS.u.{u}.>"), 0).await;
    let delivery_other = stored(&op, "DELIVERY", &format!("delivery.{other}.>")).await;
    let erased = admin.json(&["erase", "--user", u.as_str(), "--yes"]).await;
    assert_eq!(erased["found"]["notify"], 3, "{erased}");
    assert_eq!(erased["found"]["cursors"], 1, "{erased}");
    assert_eq!(erased["found"]["signalr"], 1, "{erased}");
    assert!(erased["found"]["delivery"].as_u64() >= Some(9), "{erased}");
    assert_eq!(erased["removed"], erased["found"], "{erased}");
    assert_eq!(
        erased["remaining"],
        json!({"notify": 0, "cursors": 0, "signalr": 0, "conns": 0, "delivery": 0})
    );

    assert_eq!(stored(&op, "NOTIFY", &u.notify_subject()).await, 0);
    assert_eq!(
        stored(&op, "KV_CURSORS", &format!("$KV.CURSORS.{u}.>")).await,
        0
    );
    assert_eq!(
        stored(&op, "KV_CONNS", &format!("$KV.CONNS.u.{u}.>")).await,
        0
    );
    assert_eq!(stored(&op, "DELIVERY", &format!("delivery.{u}.>")).await, 0);
    assert_eq!(signalr_keys(&op, &u).await, 0);
    assert_eq!(stored(&op, "NOTIFY", &other.notify_subject()).await, 2);
    assert_eq!(cursor_of(&op, &other, "keep").await, Some(theirs[1]));
    assert_eq!(
        stored(&op, "KV_CONNS", &format!("$KV.CONNS.u.{other}.>")).await,
        1
    );
    assert_eq!(
        stored(&op, "DELIVERY", &format!("delivery.{other}.>")).await,
        delivery_other
    );
    keep.close().await;
    gateway.shutdown().await.expect("clean stop");
}
