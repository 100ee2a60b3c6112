//! `admin deliveries`: who received and acknowledged an event.
//!
//! The gateway records the first delivery and the acknowledgement of each event per
//! device in the stream `DELIVERY` on `delivery.<userId>.<seq>.<deviceId>.<delivered|acked>`
//! (see `tracking`). By `--user` and `--seq`, the records are read with the filter
//! `delivery.<userId>.<seq>.>`. By `--analysis-id`, the analysis id is not in any
//! subject, so the user's retained events are scanned (`notify.<userId>`: at most
//! 10,000 by the stream's per-user limit, one direct get each) and the records of each
//! matching event are read: `--user` is required, which keeps the scan bounded (the
//! whole stream would be every user's week of events).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ziraai_common::nats::{DELIVERY_STREAM, NOTIFY_STREAM};
use ziraai_proto::UserId;

use super::admin::{Ctx, Render, all_msgs, all_msgs_as, next_msg, or_dash, refused, table};
use super::admin_user::EventRow;

/// Arguments of `admin deliveries`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("event").required(true).args(["seq", "analysis_id"])))]
pub struct DeliveriesArgs {
    /// The user whose event it is.
    #[arg(long)]
    pub user: UserId,
    /// The event's sequence in NOTIFY.
    #[arg(long)]
    pub seq: Option<u64>,
    /// The analysis id in the event's data (every retained event of the user carrying
    /// it).
    #[arg(long)]
    pub analysis_id: Option<String>,
}

/// A record as the gateway writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    device_id: String,
    event: String,
    at: Option<String>,
    connection_id: Option<String>,
    gateway_id: Option<String>,
}

/// One device's delivery of one event.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeliveryRow {
    /// The device id, or `conn-<connectionId>` for a socket without one.
    device_id: String,
    delivered_at: Option<String>,
    acked_at: Option<String>,
    /// The connection and gateway of the first delivery (else of the ack).
    connection_id: Option<String>,
    gateway_id: Option<String>,
}

/// One event and its deliveries.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventDeliveries {
    seq: u64,
    /// The event as retained in NOTIFY; `null` when it is gone (expired or erased).
    event: Option<EventRow>,
    deliveries: Vec<DeliveryRow>,
}

/// What `admin deliveries` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeliveriesReport {
    user_id: String,
    events: Vec<EventDeliveries>,
}

pub(crate) async fn run(ctx: &Ctx, args: DeliveriesArgs) -> anyhow::Result<DeliveriesReport> {
    let user = &args.user;
    let subject = user.notify_subject();
    let events: Vec<(u64, Option<EventRow>)> = match (args.seq, &args.analysis_id) {
        (Some(seq), _) => {
            let last = ctx.last_seq(NOTIFY_STREAM).await?;
            if seq == 0 || seq > last {
                return refused(format!(
                    "--seq {seq} is not a sequence of NOTIFY (its sequences run from 1 to {last})"
                ));
            }
            let event = next_msg(&ctx.notify, &subject, seq)
                .await?
                .filter(|m| m.sequence == seq)
                .map(|m| EventRow::from_msg(&m));
            vec![(seq, event)]
        }
        (None, Some(id)) => {
            let rows = all_msgs_as(&ctx.notify, &subject, EventRow::from_msg).await?;
            let scanned = rows.len();
            let found: Vec<_> = rows
                .into_iter()
                .filter(|e| e.analysis_id.as_deref() == Some(id.as_str()))
                .map(|e| (e.seq, Some(e)))
                .collect();
            if found.is_empty() {
                return refused(format!(
                    "no retained event of user {user} has analysis id {id:?} ({scanned} events scanned)"
                ));
            }
            found
        }
        (None, None) => return refused("give --seq or --analysis-id"),
    };
    let stream = Ctx::bind(&ctx.js, DELIVERY_STREAM).await?;
    let mut out = Vec::new();
    for (seq, event) in events {
        let msgs = all_msgs(&stream, &format!("delivery.{user}.{seq}.>")).await?;
        let mut by_device: BTreeMap<String, DeliveryRow> = BTreeMap::new();
        for m in msgs {
            let Ok(r) = serde_json::from_slice::<Record>(&m.payload) else {
                continue;
            };
            let row = by_device
                .entry(r.device_id.clone())
                .or_insert_with(|| DeliveryRow {
                    device_id: r.device_id.clone(),
                    ..DeliveryRow::default()
                });
            match r.event.as_str() {
                "delivered" => {
                    row.delivered_at = r.at;
                    row.connection_id = r.connection_id;
                    row.gateway_id = r.gateway_id;
                }
                "acked" => {
                    row.acked_at = r.at;
                    if row.connection_id.is_none() {
                        row.connection_id = r.connection_id;
                        row.gateway_id = r.gateway_id;
                    }
                }
                _ => {}
            }
        }
        out.push(EventDeliveries {
            seq,
            event,
            deliveries: by_device.into_values().collect(),
        });
    }
    Ok(DeliveriesReport {
        user_id: user.to_string(),
        events: out,
    })
}

impl Render for DeliveriesReport {
    fn table(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            out += &match &e.event {
                Some(ev) => format!(
                    "user {} event {} ({}, analysis {}, stored {}): {} devices\n",
                    self.user_id,
                    e.seq,
                    or_dash(ev.kind.as_ref()),
                    or_dash(ev.analysis_id.as_ref()),
                    ev.time,
                    e.deliveries.len()
                ),
                None => format!(
                    "user {} event {} (not retained in NOTIFY): {} devices\n",
                    self.user_id,
                    e.seq,
                    e.deliveries.len()
                ),
            };
            let rows: Vec<Vec<String>> = e
                .deliveries
                .iter()
                .map(|d| {
                    vec![
                        d.device_id.clone(),
                        or_dash(d.delivered_at.as_ref()),
                        or_dash(d.acked_at.as_ref()),
                        or_dash(d.connection_id.as_ref()),
                        or_dash(d.gateway_id.as_ref()),
                    ]
                })
                .collect();
            out += &table(
                &[
                    "DEVICE",
                    "DELIVERED AT",
                    "ACKED AT",
                    "CONNECTION",
                    "GATEWAY",
                ],
                &rows,
            );
            out += "\n";
        }
        out
    }
}
