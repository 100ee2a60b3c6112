//! `ziraai-gateway admin erase` on a live 3-node cluster (the shipped authorization,
//! every stream and bucket at 3 replicas), given every node's URL: afterwards nothing
//! of the user remains in NOTIFY, CURSORS, SIGNALR, CONNS or DELIVERY, and another
//! user's data is untouched.
//!
//! The records are written with the services' own credentials in the gateway's
//! formats (events by the worker's publisher; cursor, SignalR resume record, socket
//! entry and delivery records as the `gateway` user), not by a running gateway: the
//! gateway applies its definitions at start-up, and until it takes the replicas from
//! its configuration it would want these streams at the definitions' 1 replica.

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde_json::json;
use ziraai_common::nats;
use ziraai_e2e::*;
use ziraai_proto::UserId;

use crate::admin_support::{Admin, cursor_of, signalr_keys, stored, stored_becomes};

/// Every stream of the notification path, from its definition, at 3 replicas.
async fn provision_r3(js: &jetstream::Context) {
    for json in [
        nats::NOTIFY_STREAM_JSON,
        nats::CURSORS_STREAM_JSON,
        nats::SIGNALR_STREAM_JSON,
        nats::CONNS_STREAM_JSON,
        nats::DELIVERY_STREAM_JSON,
    ] {
        let mut config: stream::Config = serde_json::from_str(json).expect("a definition");
        config.num_replicas = 3;
        let name = config.name.clone();
        within(&format!("create {name}"), js.create_stream(config))
            .await
            .unwrap_or_else(|e| panic!("operator creates {name} at R3: {e}"));
    }
}

/// What a gateway stores for `user`'s device `device` that received and acked `seq`.
async fn gateway_records(gw: &jetstream::Context, user: &UserId, device: &str, seq: u64) {
    let put = |bucket: &'static str, key: String, value: String| async move {
        let kv = within("bind bucket", gw.get_key_value(bucket))
            .await
            .expect("gateway binds its bucket");
        within("put", kv.put(key, Bytes::from(value)))
            .await
            .expect("gateway writes its bucket");
    };
    put("CURSORS", format!("{user}.{device}"), seq.to_string()).await;
    let record = json!({"user": user, "protocol": "json", "acked": 1, "seq": seq, "dirty": false});
    put("SIGNALR", format!("cid-{device}"), record.to_string()).await;
    let entry = json!({"gatewayId": "gw1", "openedAt": "2026-01-01T00:00:00Z"});
    put(
        "CONNS",
        format!("u.{user}.gw1.c-{device}"),
        entry.to_string(),
    )
    .await;
    for kind in ["delivered", "acked"] {
        let body = json!({"userId": user, "seq": seq, "deviceId": device, "event": kind,
            "at": "2026-01-01T00:00:00Z", "connectionId": format!("c-{device}"), "gatewayId": "gw1"});
        let ack = gw.publish(
            format!("delivery.{user}.{seq}.{device}.{kind}"),
            body.to_string().into(),
        );
        within("delivery record", async { ack.await?.await })
            .await
            .expect("stored");
    }
}

#[tokio::test]
async fn operator_cli_erases_a_user_on_a_three_node_cluster() {
    let cluster = NatsCluster::start_with_auth(3).await;
    let op = jetstream::new(cluster.client_as("operator").await);
    provision_r3(&op).await;
    let info = within("NOTIFY info", op.get_stream("NOTIFY"))
        .await
        .expect("NOTIFY");
    assert_eq!(info.cached_info().config.num_replicas, 3);
    let publisher =
        ziraai_worker::Publisher::new(jetstream::new(cluster.client_as("worker").await));
    let gw = jetstream::new(cluster.client_as("gateway").await);
    let (u, other) = (user("erase3"), user("keep3"));
    let mine = publish_many(&publisher, &u, 3).await;
    let theirs = publish_many(&publisher, &other, 2).await;
    gateway_records(&gw, &u, "phone", mine[2]).await;
    gateway_records(&gw, &other, "keep", theirs[1]).await;
    stored_becomes(&op, "DELIVERY", &format!("delivery.{u}.>"), 2).await;

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
    let erased = admin.json(&["erase", "--user", u.as_str(), "--yes"]).await;
    let all = json!({"notify": 3, "cursors": 1, "signalr": 1, "conns": 1, "delivery": 2});
    assert_eq!(erased["found"], all, "{erased}");
    assert_eq!(erased["removed"], all, "{erased}");
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
    assert_eq!(signalr_keys(&op, &other).await, 1);
    assert_eq!(
        stored(&op, "KV_CONNS", &format!("$KV.CONNS.u.{other}.>")).await,
        1
    );
    assert_eq!(
        stored(&op, "DELIVERY", &format!("delivery.{other}.>")).await,
        2
    );
}
