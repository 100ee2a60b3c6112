//! `ziraai-gateway admin` run as a process, as the `operator` user of the shipped
//! `nats/auth.conf`, against a real gateway (with the `gateway` credential) and real
//! WebSocket and SignalR clients: what it prints (table and `--json`), that a cursor it
//! sets and a replay it asks for are what the device's next resume gets, that bad input
//! changes nothing, and that an erasure leaves nothing of the user in any store while
//! another user's data stays. The erasure on a 3-node cluster: `admin_cluster`.

use async_nats::jetstream;
use serde_json::json;
use ziraai_e2e::*;
use ziraai_proto::ServerFrame;

use crate::admin_support::{
    Admin, cursor_becomes, cursor_of, records_settle, signalr_keys, stored, stored_becomes,
};

/// A server with the shipped authorization, provisioned by the operator, and a gateway
/// with its own credential.
async fn setup() -> (NatsServer, TestGateway, Admin, jetstream::Context) {
    let nats = NatsServer::start_with_auth().await;
    let op = jetstream::new(nats.client_as("operator").await);
    within(
        "provision",
        ziraai_common::nats::provision(&op, None, 1, false),
    )
    .await
    .expect("operator provisions");
    let creds: Vec<(&str, String)> = nats.credentials("gateway").into();
    let refs: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = TestGateway::start_with(gateway_config(&nats, &refs)).await;
    let admin = Admin {
        urls: nats.url(),
        password: nats.password("operator").to_owned(),
    };
    (nats, gateway, admin, op)
}

async fn worker_publisher(nats: &NatsServer) -> ziraai_worker::Publisher {
    ziraai_worker::Publisher::new(jetstream::new(nats.client_as("worker").await))
}

fn resumed_after(welcome: &ServerFrame) -> u64 {
    match welcome {
        ServerFrame::Welcome { resumed_after, .. } => *resumed_after,
        other => panic!("not a welcome: {other:?}"),
    }
}

/// The row of `table` whose first cell is `first`, split on whitespace.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{table}"))
}

#[tokio::test]
async fn operator_cli_shows_sets_and_replays_cursors_and_refuses_bad_input() {
    let (nats, gateway, admin, op) = setup().await;
    let publisher = worker_publisher(&nats).await;
    let u = user("adm");
    let url = gateway.ws_url();
    let (mut phone, _) = WsClient::resume(&url, &u, "deviceId=phone").await;
    let (mut tablet, _) = WsClient::resume(&url, &u, "deviceId=tablet").await;
    let mut published = Vec::new();
    for i in 0..3 {
        let (outcome, p) = publish_completed(&publisher, &u, json!(i)).await;
        published.push((p.seq, outcome.analysis_id().to_string()));
    }
    let seqs: Vec<u64> = published.iter().map(|(s, _)| *s).collect();
    assert_eq!(phone.seqs(3).await, seqs);
    assert_eq!(tablet.seqs(3).await, seqs);
    phone.ack(seqs[2]).await;
    tablet.ack(seqs[0]).await;
    cursor_becomes(&op, &u, "phone", seqs[2]).await;
    cursor_becomes(&op, &u, "tablet", seqs[0]).await;
    // Tracking: delivered + acked for both devices on seqs[0], the tablet's ack missing
    // on seqs[1].
    stored_becomes(&op, "DELIVERY", &format!("delivery.{u}.{}.>", seqs[0]), 4).await;
    stored_becomes(&op, "DELIVERY", &format!("delivery.{u}.{}.>", seqs[1]), 3).await;

    // `user`: events, devices with cursor and pending count, open sockets.
    let report = admin.json(&["user", u.as_str()]).await;
    assert_eq!(report["eventCount"], 3, "{report}");
    let shown: Vec<u64> = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(shown, seqs);
    assert_eq!(report["events"][1]["kind"], "analysis.completed");
    assert_eq!(report["events"][1]["analysisId"], json!(published[1].1));
    assert_eq!(
        report["devices"],
        json!([
            {"deviceId": "phone", "cursor": seqs[2], "pending": 0},
            {"deviceId": "tablet", "cursor": seqs[0], "pending": 2},
        ])
    );
    assert_eq!(report["sockets"].as_array().expect("sockets").len(), 2);
    assert!(report["sockets"][0]["gatewayAlive"] == true, "{report}");
    let table = admin.run(&["user", u.as_str()]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert_eq!(
        row(&table.stdout, "tablet"),
        ["tablet", &seqs[0].to_string(), "2"]
    );
    let event_row = row(&table.stdout, &seqs[1].to_string());
    assert_eq!(
        event_row[2..],
        ["analysis.completed", published[1].1.as_str()]
    );

    // Every environment: the shipped production configuration, without the gateway's
    // JWT secret (the operator CLI reads only the shared section).
    let config_dir = shipped_config_dir();
    let prod = admin
        .run_with(
            &["user", u.as_str(), "--json"],
            &[
                ("ZIRAAI_ENV", "production"),
                (
                    "ZIRAAI_CONFIG_DIR",
                    config_dir.to_str().expect("UTF-8 path"),
                ),
            ],
        )
        .await;
    assert_eq!(prod.code, 0, "{}", prod.stderr);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&prod.stdout).expect("JSON")["eventCount"],
        3
    );

    // `deliveries` by sequence and by analysis id: who got it, who acked it.
    let by_seq = admin
        .json(&[
            "deliveries",
            "--user",
            u.as_str(),
            "--seq",
            &seqs[1].to_string(),
        ])
        .await;
    let by_id = admin
        .json(&[
            "deliveries",
            "--user",
            u.as_str(),
            "--analysis-id",
            &published[1].1,
        ])
        .await;
    assert_eq!(by_seq, by_id, "the same event either way");
    let event = &by_seq["events"][0];
    assert_eq!(event["seq"], seqs[1]);
    let devices = event["deliveries"].as_array().expect("deliveries");
    assert_eq!(devices.len(), 2, "{by_seq}");
    assert_eq!(devices[0]["deviceId"], "phone");
    assert!(devices[0]["deliveredAt"].is_string() && devices[0]["ackedAt"].is_string());
    assert_eq!(devices[1]["deviceId"], "tablet");
    assert!(devices[1]["deliveredAt"].is_string() && devices[1]["ackedAt"].is_null());
    let table = admin
        .run(&[
            "deliveries",
            "--user",
            u.as_str(),
            "--seq",
            &seqs[1].to_string(),
        ])
        .await;
    assert!(
        row(&table.stdout, "tablet").contains(&"-"),
        "{}",
        table.stdout
    );

    // Bad input: exit 2, a clear line, nothing changed.
    admin.refused(&["user", "a.b"], "contains '.'").await;
    admin
        .refused(
            &[
                "set-cursor",
                "--user",
                u.as_str(),
                "--device",
                "ghost",
                "--seq",
                "1",
            ],
            "device ghost of user",
        )
        .await;
    admin
        .refused(
            &[
                "set-cursor",
                "--user",
                u.as_str(),
                "--device",
                "phone",
                "--seq",
                "999999",
            ],
            "beyond the last sequence of stream NOTIFY",
        )
        .await;
    admin
        .refused(
            &[
                "replay",
                "--user",
                u.as_str(),
                "--device",
                "phone",
                "--from",
                "999999",
            ],
            "after the last retained event",
        )
        .await;
    for seq in ["0", "999999"] {
        admin
            .refused(
                &["deliveries", "--user", u.as_str(), "--seq", seq],
                "is not a sequence of NOTIFY",
            )
            .await;
    }
    assert_eq!(cursor_of(&op, &u, "phone").await, Some(seqs[2]));
    assert_eq!(cursor_of(&op, &u, "tablet").await, Some(seqs[0]));
    assert_eq!(cursor_of(&op, &u, "ghost").await, None);

    // `set-cursor`, then the phone's resume by device id gets what follows.
    phone.close().await;
    let set = admin
        .json(&[
            "set-cursor",
            "--user",
            u.as_str(),
            "--device",
            "phone",
            "--seq",
            &seqs[0].to_string(),
        ])
        .await;
    assert_eq!(set["previous"], seqs[2]);
    assert_eq!(set["cursor"], seqs[0]);
    assert_eq!(set["pending"], 2);
    let (mut phone, welcome) = WsClient::resume(&url, &u, "deviceId=phone").await;
    assert_eq!(resumed_after(&welcome), seqs[0]);
    assert_eq!(phone.seqs(2).await, seqs[1..]);
    phone.close().await;

    // `replay`: the phone gets every retained event again at its next resume; the
    // tablet, still connected, is what the note is about.
    let out = admin
        .run(&["replay", "--user", u.as_str(), "--device", "phone"])
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("cursor {} -> {}", seqs[0], seqs[0] - 1))
            && out.stdout.contains("receives 3 retained events")
            && out.stdout.contains("1 open sockets"),
        "{}",
        out.stdout
    );
    let (mut phone, welcome) = WsClient::resume(&url, &u, "deviceId=phone").await;
    assert_eq!(resumed_after(&welcome), seqs[0] - 1);
    assert_eq!(phone.seqs(3).await, seqs, "every retained event again");
    phone.close().await;
    tablet.close().await;
    gateway.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn operator_cli_erases_a_user_from_every_store_and_nothing_else() {
    let (nats, gateway, admin, op) = setup().await;
    let publisher = worker_publisher(&nats).await;
    let (u, other) = (user("erase"), user("keep"));
    let url = gateway.ws_url();
    // The user: a native device, a socket without device id, a stateful SignalR
    // connection; the other user: one device.
    let (mut phone, _) = WsClient::resume(&url, &u, "deviceId=phone").await;
    let mut anon = WsClient::open(&url, &u).await;
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
    let mine = publish_many(&publisher, &u, 2).await;
    let theirs = publish_many(&publisher, &other, 2).await;
    assert_eq!(phone.seqs(2).await, mine);
    assert_eq!(anon.seqs(2).await, mine);
    hub.invocation("AnalysisCompleted").await;
    hub.invocation("AnalysisCompleted").await;
    assert_eq!(keep.seqs(2).await, theirs);
    phone.ack(mine[1]).await;
    anon.ack(mine[1]).await;
    keep.ack(theirs[1]).await;
    // Delivered and acked per socket: phone, anon and keep; the hub's deliveries.
    records_settle(&op, (&u, "phone", mine[1]), (&other, "keep", theirs[1]), 10).await;
    // The dry run finds every store's records (sockets still open) and removes none.
    let dry = admin.json(&["erase", "--user", u.as_str()]).await;
    assert_eq!(dry["erased"], false);
    assert_eq!(dry["found"]["notify"], 2, "{dry}");
    assert_eq!(dry["found"]["cursors"], 1, "{dry}");
    assert_eq!(dry["found"]["signalr"], 1, "{dry}");
    assert!(dry["found"]["conns"].as_u64() >= Some(1), "{dry}");
    assert!(dry["found"]["delivery"].as_u64() >= Some(10), "{dry}");
    assert_eq!(
        dry["removed"],
        json!({"notify":0,"cursors":0,"signalr":0,"conns":0,"delivery":0})
    );
    assert_eq!(stored(&op, "NOTIFY", &u.notify_subject()).await, 2);

    // The user's sessions end, then the erasure.
    phone.close().await;
    anon.close().await;
    hub.command("stop").await;
    stored_becomes(&op, "KV_CONNS", &format!("$KV.CONNS.u.{u}.>"), 0).await;
    let before_other = stored(&op, "DELIVERY", &format!("delivery.{other}.>")).await;
    let out = admin.run(&["erase", "--user", u.as_str(), "--yes"]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        row(&out.stdout, "NOTIFY"),
        ["NOTIFY", "2", "2", "0"],
        "{}",
        out.stdout
    );
    assert_eq!(row(&out.stdout, "CURSORS")[1..], ["1", "1", "0"]);
    assert_eq!(row(&out.stdout, "SIGNALR")[1..], ["1", "1", "0"]);
    assert_eq!(row(&out.stdout, "DELIVERY")[3], "0");
    assert_eq!(row(&out.stdout, "CONNS")[3], "0");

    // Nothing of the user remains (direct stream queries); the other user is untouched.
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
        stored(&op, "DELIVERY", &format!("delivery.{other}.>")).await,
        before_other
    );
    let again = admin.json(&["erase", "--user", u.as_str()]).await;
    assert_eq!(
        again["found"],
        json!({"notify":0,"cursors":0,"signalr":0,"conns":0,"delivery":0})
    );
    keep.close().await;
    gateway.shutdown().await.expect("clean stop");
}
