//! The load generator's clients (`ziraai_e2e::loadclient`), each protocol against a
//! real gateway: every event arrives once (after dropping repeats), in order, through a
//! cut connection (the socket drops without a close) and a gateway restart (the
//! gateway closes every socket and the clients come back on another one).

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio_util::sync::CancellationToken;
use ziraai_e2e::loadclient::{self, ClientConfig, ClientEvent, NO_SEQ, Protocol};
use ziraai_e2e::*;
use ziraai_proto::UserId;

const CLIENTS: usize = 3;
const PER_ROUND: usize = 3;

/// What the clients reported, per client.
#[derive(Default)]
struct Seen {
    /// `resumed` of each Connected.
    connected: Vec<Vec<bool>>,
    /// (seq, analysis id) of each Delivery, in arrival order.
    got: Vec<Vec<(u64, String)>>,
    disconnects: Vec<Vec<(Option<u16>, String)>>,
}

impl Seen {
    fn new() -> Self {
        Self {
            connected: vec![Vec::new(); CLIENTS],
            got: vec![Vec::new(); CLIENTS],
            disconnects: vec![Vec::new(); CLIENTS],
        }
    }

    fn record(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Connected {
                client, resumed, ..
            } => self.connected[client].push(resumed),
            ClientEvent::Delivery {
                client,
                seq,
                analysis_id,
                unix_ns,
            } => {
                assert!(unix_ns > 0);
                self.got[client].push((seq, analysis_id));
            }
            ClientEvent::Disconnected {
                client,
                code,
                reason,
            } => self.disconnects[client].push((code, reason)),
        }
    }

    /// Deliveries of `client` with repeats (by analysis id) dropped, first kept.
    fn distinct(&self, client: usize) -> Vec<(u64, String)> {
        let mut seen = std::collections::HashSet::new();
        self.got[client]
            .iter()
            .filter(|(_, id)| seen.insert(id.clone()))
            .cloned()
            .collect()
    }

    /// Reads reports until `done` holds (bounded).
    async fn until(
        &mut self,
        rx: &mut UnboundedReceiver<ClientEvent>,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) {
        within(what, async {
            while !done(self) {
                let e = rx.recv().await.expect("the clients report");
                self.record(e);
            }
        })
        .await;
    }
}

/// Publishes `PER_ROUND` events for every user; returns (seq, analysis id) per user.
async fn round(publisher: &ziraai_worker::Publisher, users: &[UserId]) -> Vec<Vec<(u64, String)>> {
    let mut out = vec![Vec::new(); users.len()];
    for i in 0..PER_ROUND {
        for (n, u) in users.iter().enumerate() {
            let (outcome, p) = publish_completed(publisher, u, json!(i)).await;
            out[n].push((p.seq, outcome.analysis_id().to_string()));
        }
    }
    out
}

async fn loses_nothing_through_a_cut_and_a_restart(protocol: Protocol) {
    let nats = NatsServer::start().await;
    let gw_a = TestGateway::start(&nats).await;
    let gw_b = TestGateway::start(&nats).await;
    let publisher = nats.publisher().await;
    let proxy = Proxy::start(gw_a.addr).await;
    let users: Vec<UserId> = (0..CLIENTS).map(|_| user("load")).collect();
    let (tx, mut rx) = unbounded_channel();
    let cancel = CancellationToken::new();
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(n, u)| {
            let cfg = ClientConfig {
                gateway: proxy.addr,
                // One client from another loopback address, the others as the OS picks.
                source: (n == 0).then_some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
                protocol,
                token: token(u),
                device: format!("load-{n}"),
                reconnect: true,
            };
            loadclient::spawn(n, cfg, tx.clone(), cancel.child_token())
        })
        .collect();
    let mut seen = Seen::new();
    seen.until(&mut rx, "every client connected", |s| {
        s.connected.iter().all(|c| c.len() == 1)
    })
    .await;
    assert!(seen.connected.iter().all(|c| c == &[false]));

    let mut expected = round(&publisher, &users).await;
    let count = |want: &Vec<Vec<(u64, String)>>| {
        let want: Vec<usize> = want.iter().map(Vec::len).collect();
        move |s: &Seen| (0..CLIENTS).all(|c| s.distinct(c).len() >= want[c])
    };
    seen.until(&mut rx, "the first round", count(&expected))
        .await;

    // The sockets drop without a close, and events happen meanwhile.
    proxy.hold(true);
    proxy.cut();
    for (n, more) in round(&publisher, &users).await.into_iter().enumerate() {
        expected[n].extend(more);
    }
    proxy.hold(false);
    seen.until(&mut rx, "the round missed while cut", count(&expected))
        .await;
    seen.until(&mut rx, "every client reconnected", |s| {
        s.connected.iter().all(|c| c.len() >= 2)
    })
    .await;
    if protocol.is_signalr() {
        // A stateful resume: the server replays what was not acknowledged and the
        // client drops by message number what it had already processed.
        for c in 0..CLIENTS {
            assert_eq!(seen.got[c].len(), seen.distinct(c).len(), "no repeats");
            assert!(
                !seen.disconnects[c]
                    .iter()
                    .any(|(_, r)| r.contains("resume")),
                "resumed: {:?}",
                seen.disconnects[c]
            );
        }
    }

    // A gateway restart: new connections go to B, A closes every socket.
    proxy.retarget(gw_b.addr);
    let stopping = tokio::spawn(gw_a.shutdown());
    for (n, more) in round(&publisher, &users).await.into_iter().enumerate() {
        expected[n].extend(more);
    }
    seen.until(
        &mut rx,
        "the round published during the restart",
        count(&expected),
    )
    .await;
    within("gateway A stopped", stopping)
        .await
        .expect("joined")
        .expect("clean shutdown");
    seen.until(&mut rx, "every client reconnected to B", |s| {
        s.connected.iter().all(|c| c.len() >= 3)
    })
    .await;
    // Nothing more arrives after the last round (bounded look for stray repeats).
    let last = round(&publisher, &users).await;
    for (n, more) in last.into_iter().enumerate() {
        expected[n].extend(more);
    }
    seen.until(&mut rx, "the last round", count(&expected))
        .await;

    for (c, expected) in expected.iter().enumerate() {
        let got = seen.distinct(c);
        let want_ids: Vec<&String> = expected.iter().map(|(_, id)| id).collect();
        let got_ids: Vec<&String> = got.iter().map(|(_, id)| id).collect();
        assert_eq!(got_ids, want_ids, "client {c}: each event once, in order");
        if protocol.is_signalr() {
            assert!(got.iter().all(|(seq, _)| *seq == NO_SEQ));
        } else {
            let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
            let want: Vec<u64> = expected.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, want, "client {c}: the stream sequences");
        }
        let connected = &seen.connected[c];
        assert!(
            !connected[0] && connected[1..].iter().all(|r| *r),
            "{connected:?}"
        );
        assert!(
            seen.disconnects[c].len() >= 2,
            "client {c}: {:?}",
            seen.disconnects[c]
        );
    }
    let repeats: usize = (0..CLIENTS)
        .map(|c| seen.got[c].len() - seen.distinct(c).len())
        .sum();
    eprintln!(
        "{protocol}: {} deliveries, {repeats} repeats; disconnects {:?}",
        seen.got.iter().map(Vec::len).sum::<usize>(),
        seen.disconnects
    );

    cancel.cancel();
    for t in tasks {
        within("client stopped", t).await.expect("client task");
    }
    drop(gw_b);
}

#[tokio::test]
async fn native_json_clients_lose_nothing() {
    loses_nothing_through_a_cut_and_a_restart(Protocol::Json).await;
}

#[tokio::test]
async fn native_msgpack_clients_lose_nothing() {
    loses_nothing_through_a_cut_and_a_restart(Protocol::MsgPack).await;
}

#[tokio::test]
async fn signalr_json_clients_lose_nothing() {
    loses_nothing_through_a_cut_and_a_restart(Protocol::SignalrJson).await;
}

#[tokio::test]
async fn signalr_msgpack_clients_lose_nothing() {
    loses_nothing_through_a_cut_and_a_restart(Protocol::SignalrMsgPack).await;
}
