//! The `clients` role: a child process of the load generator holding up to ~19,000
//! sockets (the open-file limit is 20,000 per process).
//!
//! The parent writes one [`ChildSpec`] JSON line on stdin, then [`Command`] lines; the
//! child answers each command with one [`Reply`] JSON line on stdout. It opens its
//! sockets with at most `connect_window` handshakes in flight, counts connects,
//! resumes and disconnects, and tallies deliveries by phase ([`Tallies`]). End of
//! stdin (the parent gone) stops it like [`Command::Stop`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ziraai_common::GatewayServiceConfig;
use ziraai_e2e::loadclient::{self, ClientConfig, ClientEvent, Protocol};

use crate::tally::{Tallies, WireTally};

/// Lifetime of the clients' tokens: longer than any run (a 10-minute hold included).
const TOKEN_TTL_SECS: i64 = 4 * 3600;

/// What one client process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildSpec {
    pub(crate) protocol: String,
    pub(crate) reconnect: bool,
    pub(crate) connect_window: usize,
    pub(crate) clients: Vec<ChildClient>,
}

/// One socket of a client process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildClient {
    pub(crate) gateway: SocketAddr,
    pub(crate) source: Option<IpAddr>,
    pub(crate) user: String,
    pub(crate) device: String,
}

/// What the parent asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Command {
    Status,
    /// Distinct deliveries of a phase so far (cheap: for waiting).
    Count {
        phase: String,
    },
    /// The full tally of a phase.
    Tally {
        phase: String,
    },
    Stop,
}

/// Connection counters of a client process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Status {
    /// Clients whose first attempt finished (connected or failed).
    pub(crate) first_done: usize,
    pub(crate) connected_now: usize,
    pub(crate) connects: u64,
    pub(crate) resumed_connects: u64,
    pub(crate) disconnects: u64,
    /// Unix ns of the latest connect (0: none yet).
    pub(crate) last_connect_ns: u64,
    pub(crate) foreign_deliveries: u64,
}

/// The answer to a command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub(crate) enum Reply {
    Status {
        status: Status,
        last_disconnect: String,
    },
    Count {
        distinct: u64,
    },
    Tally {
        tally: WireTally,
    },
    Stopped,
}

/// Per-client connection state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conn {
    Pending,
    Up,
    Down,
}

struct State {
    conns: Vec<Conn>,
    status: Status,
    last_disconnect: String,
    tallies: Tallies,
}

impl State {
    fn apply(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Connected {
                client,
                unix_ns,
                resumed,
            } => {
                let Some(c) = self.conns.get_mut(client) else {
                    return;
                };
                if *c == Conn::Pending {
                    self.status.first_done += 1;
                }
                if *c != Conn::Up {
                    self.status.connected_now += 1;
                }
                *c = Conn::Up;
                self.status.connects += 1;
                self.status.resumed_connects += u64::from(resumed);
                self.status.last_connect_ns = self.status.last_connect_ns.max(unix_ns);
            }
            ClientEvent::Delivery {
                client,
                analysis_id,
                unix_ns,
                ..
            } => self.tallies.record(client, &analysis_id, unix_ns),
            ClientEvent::Disconnected {
                client,
                code,
                reason,
            } => {
                let Some(c) = self.conns.get_mut(client) else {
                    return;
                };
                match *c {
                    Conn::Pending => self.status.first_done += 1,
                    Conn::Up => self.status.connected_now -= 1,
                    Conn::Down => {}
                }
                *c = Conn::Down;
                self.status.disconnects += 1;
                self.last_disconnect = match code {
                    Some(code) => format!("{code} {reason}"),
                    None => reason,
                };
            }
        }
    }
}

/// Runs the `clients` role until stopped.
pub(crate) async fn run() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let Some(first) = lines.next_line().await? else {
        return Ok(());
    };
    let spec: ChildSpec = serde_json::from_str(&first)?;
    let protocol: Protocol = spec.protocol.parse().map_err(anyhow::Error::msg)?;
    let secret = GatewayServiceConfig::development().auth.jwt_secret;
    let n = spec.clients.len();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let mut handles = Vec::with_capacity(n);
    let mut state = State {
        conns: vec![Conn::Pending; n],
        status: Status::default(),
        last_disconnect: String::new(),
        tallies: Tallies::new(n),
    };
    let mut out = tokio::io::stdout();
    let window = spec.connect_window.max(1);
    let mut next = 0;
    loop {
        while next < n && next - state.status.first_done < window {
            let c = &spec.clients[next];
            let cfg = ClientConfig {
                gateway: c.gateway,
                source: c.source,
                protocol,
                token: ziraai_gateway::auth::mint(&secret, &c.user, TOKEN_TTL_SECS),
                device: c.device.clone(),
                reconnect: spec.reconnect,
            };
            handles.push(loadclient::spawn(
                next,
                cfg,
                tx.clone(),
                cancel.child_token(),
            ));
            next += 1;
        }
        tokio::select! {
            Some(ev) = rx.recv() => state.apply(ev),
            line = lines.next_line() => {
                let cmd = match line? {
                    None => Command::Stop,
                    Some(l) => serde_json::from_str(&l)?,
                };
                let reply = match cmd {
                    Command::Status => {
                        let mut status = state.status;
                        status.foreign_deliveries = state.tallies.foreign;
                        Reply::Status { status, last_disconnect: state.last_disconnect.clone() }
                    }
                    Command::Count { phase } => Reply::Count { distinct: state.tallies.distinct(&phase) },
                    Command::Tally { phase } => Reply::Tally { tally: state.tallies.phase(&phase) },
                    Command::Stop => break,
                };
                send(&mut out, &reply).await?;
            }
        }
    }
    cancel.cancel();
    // Each client closes its socket within loadclient's close bound.
    let closing = async {
        for h in handles {
            let _ = h.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(15), closing).await;
    send(&mut out, &Reply::Stopped).await
}

async fn send(out: &mut tokio::io::Stdout, reply: &Reply) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::event_id;

    fn state(n: usize) -> State {
        State {
            conns: vec![Conn::Pending; n],
            status: Status::default(),
            last_disconnect: String::new(),
            tallies: Tallies::new(n),
        }
    }

    fn connected(client: usize, unix_ns: u64, resumed: bool) -> ClientEvent {
        ClientEvent::Connected {
            client,
            unix_ns,
            resumed,
        }
    }

    fn closed(client: usize, code: Option<u16>) -> ClientEvent {
        ClientEvent::Disconnected {
            client,
            code,
            reason: "gateway restarting".into(),
        }
    }

    #[test]
    fn counts_first_attempts_connections_and_resumes() {
        let mut s = state(3);
        s.apply(connected(0, 10, false));
        s.apply(closed(1, None)); // first attempt failed
        assert_eq!((s.status.first_done, s.status.connected_now), (2, 1));
        s.apply(closed(0, Some(1012)));
        s.apply(closed(0, Some(1012))); // a second report changes nothing but the count
        assert_eq!(s.status.connected_now, 0);
        assert_eq!(s.status.disconnects, 3);
        assert_eq!(s.last_disconnect, "1012 gateway restarting");
        s.apply(connected(0, 30, true));
        s.apply(connected(1, 20, true));
        s.apply(connected(2, 25, false));
        s.apply(connected(7, 99, false)); // not a client of this process
        let st = s.status;
        assert_eq!((st.first_done, st.connected_now), (3, 3));
        assert_eq!((st.connects, st.resumed_connects), (4, 2));
        assert_eq!(st.last_connect_ns, 30);
    }

    #[test]
    fn deliveries_go_to_their_phase() {
        let mut s = state(2);
        s.apply(ClientEvent::Delivery {
            client: 1,
            seq: 4,
            analysis_id: event_id("a", 1_000, 3),
            unix_ns: 2_000_000,
        });
        assert_eq!(s.tallies.distinct("a"), 1);
        assert_eq!(s.tallies.phase("a").distinct, vec![0, 1]);
    }

    #[test]
    fn commands_and_replies_are_json_lines() {
        let c: Command =
            serde_json::from_str(r#"{"cmd":"tally","phase":"d5000"}"#).expect("parses");
        assert!(matches!(c, Command::Tally { phase } if phase == "d5000"));
        let r = serde_json::to_string(&Reply::Count { distinct: 3 }).expect("serialises");
        assert_eq!(r, r#"{"reply":"count","distinct":3}"#);
    }
}
