//! The demo page in a real headless browser (Debian's chromium through puppeteer-core):
//! the backlog on load, a live event, a gateway restart survived with every event
//! published meanwhile shown exactly once, failed analyses set apart, event data shown as
//! text only, and the device id kept across a reload.

use std::collections::HashSet;

use serde_json::json;
use ziraai_common::GatewayServiceConfig;
use ziraai_e2e::*;
use ziraai_proto::UserId;
use ziraai_proto::analysis::{AnalysisError, AnalysisId, AnalysisOutcome};
use ziraai_worker::Publisher;

/// A development gateway whose demo page serves `demo_user`, listening on `listen`.
fn demo_gateway(nats: &NatsServer, demo_user: &UserId, listen: &str) -> GatewayServiceConfig {
    gateway_config(
        nats,
        &[
            ("ZIRAAI_DEMO_USER", demo_user.as_str()),
            ("ZIRAAI_GATEWAY_LISTEN", listen),
        ],
    )
}

async fn completed(publisher: &Publisher, user: &UserId, result: serde_json::Value) -> u64 {
    publish_completed(publisher, user, result).await.1.seq
}

async fn failed(publisher: &Publisher, user: &UserId, code: &str, message: &str) -> u64 {
    let outcome = AnalysisOutcome::failed(
        AnalysisId::Text(nuid::next().to_string()),
        user.clone(),
        AnalysisError {
            code: code.into(),
            message: message.into(),
        },
    );
    within("publish", publisher.publish_outcome(&outcome))
        .await
        .expect("published")
        .seq
}

/// Every card's sequence appears once.
fn each_once(view: &PageView) -> bool {
    let seqs = view.seqs();
    seqs.iter().collect::<HashSet<_>>().len() == seqs.len()
}

#[tokio::test]
async fn the_demo_page_shows_the_backlog_live_events_and_every_event_of_a_gateway_restart_once() {
    let nats = NatsServer::start().await;
    let publisher = nats.publisher().await;
    let u = user("demo");
    let gw = TestGateway::start_with(demo_gateway(&nats, &u, "127.0.0.1:0")).await;
    let addr = gw.addr;

    // The backlog, published before the page exists; another user's event is not shown.
    let tomato = completed(
        &publisher,
        &u,
        json!({"plant": "tomato", "disease": "early blight", "confidence": 0.9}),
    )
    .await;
    let hostile = completed(
        &publisher,
        &u,
        json!({"plant": "<img src=x onerror=alert(1)>", "disease": "<b>bold</b>", "confidence": 42}),
    )
    .await;
    completed(&publisher, &user("other"), json!({"plant": "maize"})).await;
    let broken = failed(
        &publisher,
        &u,
        "image_unreadable",
        "the image could not be decoded",
    )
    .await;
    let bare = completed(&publisher, &u, json!(7)).await;
    let backlog = [tomato, hostile, broken, bare];

    let mut page = DemoPage::open(&format!("http://{addr}/demo")).await;
    let view = page
        .wait_for("the backlog, live", |v| {
            v.status.state == "live" && v.shows_all(&backlog)
        })
        .await;
    assert_eq!(
        view.seqs(),
        [bare, broken, hostile, tomato],
        "newest first, nothing else"
    );
    assert!(view.device.starts_with("web-"), "{view:?}");
    assert_eq!(view.stored_device.as_deref(), Some(view.device.as_str()));

    let card = view.card(tomato).expect("shown");
    assert_eq!(card.kind, "analysis.completed");
    assert!(!card.failed);
    assert_eq!(card.plant.as_deref(), Some("tomato"));
    assert_eq!(card.finding.as_deref(), Some("early blight"));
    assert_eq!(card.confidence.as_deref(), Some("90% confidence"));
    let ago = card.ago.as_deref().unwrap_or_default();
    assert!(ago.ends_with(" s ago"), "relative time, got {ago:?}");
    assert!(
        card.raw
            .as_deref()
            .unwrap_or_default()
            .contains("early blight")
    );

    let card = view.card(hostile).expect("shown");
    assert_eq!(card.plant.as_deref(), Some("<img src=x onerror=alert(1)>"));
    assert_eq!(card.finding.as_deref(), Some("<b>bold</b>"));
    assert_eq!(card.confidence.as_deref(), Some("42% confidence"));
    assert_eq!(view.injected, 0, "event data was parsed as HTML");

    let card = view.card(broken).expect("shown");
    assert!(card.failed, "{card:?}");
    assert_eq!(card.kind, "analysis.failed");
    assert_eq!(card.error_code.as_deref(), Some("image_unreadable"));
    assert_eq!(
        card.error_message.as_deref(),
        Some("the image could not be decoded")
    );
    assert_eq!(card.finding, None);

    let card = view.card(bare).expect("shown");
    assert_eq!(card.finding.as_deref(), Some("result: 7"));

    // A live event appears, and the page acknowledges it (the device's cursor moves).
    let live = completed(&publisher, &u, json!({"crop": "wheat", "finding": "rust"})).await;
    let view = page
        .wait_for("the live event", |v| v.shows_all(&[live]))
        .await;
    let card = view.card(live).expect("shown");
    assert_eq!(card.source, "socket");
    assert_eq!(card.plant.as_deref(), Some("wheat"));
    assert_eq!(card.finding.as_deref(), Some("rust"));
    wait_for_cursor(&nats, &u, &view.device, live).await;
    let device = view.device.clone();

    // The gateway restarts on the same address; events published meanwhile arrive once.
    gw.shutdown().await.expect("clean shutdown");
    let view = page
        .wait_for("reconnecting", |v| v.status.state == "reconnecting")
        .await;
    assert!(view.banner.contains("the gateway restarted"), "{view:?}");
    let mut during = Vec::new();
    for disease in ["leaf mold", "healthy", "late blight"] {
        during.push(
            completed(
                &publisher,
                &u,
                json!({"plant": "tomato", "disease": disease, "confidence": 0.5}),
            )
            .await,
        );
    }
    let gw = TestGateway::start_with(demo_gateway(&nats, &u, &addr.to_string())).await;
    assert_eq!(gw.addr, addr);
    let view = page
        .wait_for("the events of the restart, live again", |v| {
            v.status.state == "live" && v.shows_all(&during)
        })
        .await;
    assert!(each_once(&view), "a repeat is shown: {:?}", view.seqs());
    let mut all: Vec<u64> = backlog
        .into_iter()
        .chain([live])
        .chain(during.clone())
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(view.seqs(), all);
    for seq in &during {
        assert_eq!(view.card(*seq).map(|c| c.source.as_str()), Some("socket"));
    }

    // A reload keeps the device id and shows everything again, each once.
    page.reload().await;
    let view = page
        .wait_for("everything after a reload", |v| {
            v.status.state == "live" && v.shows_all(&all)
        })
        .await;
    assert_eq!(view.device, device);
    assert_eq!(view.seqs(), all);

    assert!(page.problems.is_empty(), "{:?}", page.problems);
    page.close().await;
    gw.shutdown().await.expect("clean shutdown");
}
