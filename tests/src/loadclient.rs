//! Load-test clients: one small task per socket that connects (from a chosen
//! `127.0.0.x` source address), authenticates, receives and acknowledges events like a
//! real lossless client, reconnects with its device id after any close, and reports
//! what happened as [`ClientEvent`]s on a channel. Used by `ziraai-loadgen`.
//!
//! Four protocols: the native `/ws` in JSON or MessagePack (acks every event; resumes
//! from the device cursor) and the SignalR hub in JSON or MessagePack (stateful
//! reconnect with coalesced Acks, falling back to a full reconnect with the device id).
//! See [`native`] and [`signalr`] for what each does on the wire.
//!
//! Built to hold ~19k sockets in one process: small tungstenite buffers, no per-socket
//! buffers besides them, one timer per socket, and no panic on anything the network
//! sends (a frame that cannot be parsed ends the connection with a reason).

mod conn;
mod frames;
mod native;
mod signalr;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The wire protocol a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/ws`, subprotocol `ziraai.v1.json`.
    Json,
    /// `/ws`, subprotocol `ziraai.v1.msgpack`.
    MsgPack,
    /// `/hubs/plantanalysis`, hub protocol `json`.
    SignalrJson,
    /// `/hubs/plantanalysis`, hub protocol `messagepack`.
    SignalrMsgPack,
}

impl Protocol {
    /// Every protocol, in the order of [`Protocol::as_str`]'s names.
    pub const ALL: [Protocol; 4] = [
        Protocol::Json,
        Protocol::MsgPack,
        Protocol::SignalrJson,
        Protocol::SignalrMsgPack,
    ];

    /// `json`, `msgpack`, `signalr-json` or `signalr-msgpack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MsgPack => "msgpack",
            Self::SignalrJson => "signalr-json",
            Self::SignalrMsgPack => "signalr-msgpack",
        }
    }

    /// A SignalR hub protocol (else native `/ws`).
    pub fn is_signalr(self) -> bool {
        matches!(self, Self::SignalrJson | Self::SignalrMsgPack)
    }

    /// Binary MessagePack frames (else JSON text).
    pub fn is_msgpack(self) -> bool {
        matches!(self, Self::MsgPack | Self::SignalrMsgPack)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown protocol {s:?}: json, msgpack, signalr-json or signalr-msgpack")
            })
    }
}

/// How one client connects.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// A gateway's HTTP listen address.
    pub gateway: SocketAddr,
    /// Bind the local end to this address (a `127.0.0.x`); `None`: the OS picks.
    pub source: Option<IpAddr>,
    pub protocol: Protocol,
    /// JWT of the user (see [`crate::token`]).
    pub token: String,
    /// Device id: every (re)connect resumes with it (lossless).
    pub device: String,
    /// After a close or error, reconnect (same device id) until cancelled.
    pub reconnect: bool,
}

/// What a client reports.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    /// Authenticated and ready to receive (after the welcome / SignalR handshake).
    /// `resumed`: this connection continues an earlier one of the same client task
    /// (every connection after the first: the gateway resumed from the device's cursor,
    /// or a SignalR stateful resume).
    Connected {
        client: usize,
        unix_ns: u64,
        resumed: bool,
    },
    /// One event delivered (already acked to the gateway by the client, see the
    /// protocol modules). `seq`: native, the event frame's stream sequence; SignalR
    /// invocations carry no sequence, so it is [`NO_SEQ`] (identify events by
    /// `analysis_id` there). `analysis_id`: the event data's `analysisId` (a number as
    /// its decimal text; native events without one: the event id; else empty).
    Delivery {
        client: usize,
        seq: u64,
        analysis_id: String,
        unix_ns: u64,
    },
    /// A connection ended, or an attempt to open one failed (`code` is `None` for
    /// anything but a WebSocket close frame; an upgrade refusal's reason starts with
    /// `http <status>`). Not reported when the client is cancelled.
    Disconnected {
        client: usize,
        code: Option<u16>,
        reason: String,
    },
}

/// The `seq` of a SignalR delivery: the hub protocol carries no event sequence.
pub const NO_SEQ: u64 = 0;

/// Shortest and longest pause before a reconnect attempt. The pause is drawn uniformly
/// from `[0, min(MAX, MIN·2^failures)]` ("full jitter"), so clients cut at the same
/// instant (a gateway restart) spread out instead of retrying in lockstep.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bound of one connection attempt (TCP connect, upgrade, welcome or handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the close exchange when a client is cancelled.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Spawns one client task; it reports through `out` and stops (closing its socket) on
/// `cancel`. It also stops, after reporting, when it must not reconnect (`reconnect`
/// false, or the gateway said not to: close 4008 / hub `allowReconnect: false`).
pub fn spawn(
    client: usize,
    cfg: ClientConfig,
    out: UnboundedSender<ClientEvent>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let report = Reporter { client, out };
    if cfg.protocol.is_signalr() {
        tokio::spawn(signalr::run(cfg, report, cancel))
    } else {
        tokio::spawn(native::run(cfg, report, cancel))
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One client's side of the report channel. A closed channel (the load generator
/// gone) is not an error: the client keeps its socket until cancelled.
struct Reporter {
    client: usize,
    out: UnboundedSender<ClientEvent>,
}

impl Reporter {
    fn connected(&self, resumed: bool) {
        let _ = self.out.send(ClientEvent::Connected {
            client: self.client,
            unix_ns: unix_ns(),
            resumed,
        });
    }

    fn delivery(&self, seq: u64, analysis_id: String, unix_ns: u64) {
        let _ = self.out.send(ClientEvent::Delivery {
            client: self.client,
            seq,
            analysis_id,
            unix_ns,
        });
    }

    fn disconnected(&self, code: Option<u16>, reason: String) {
        let _ = self.out.send(ClientEvent::Disconnected {
            client: self.client,
            code,
            reason,
        });
    }
}

/// Reconnect pacing of one client: full jitter over an exponential ceiling.
struct Backoff {
    failures: u32,
    rng: u64,
}

impl Backoff {
    fn new(client: usize) -> Self {
        // Seeded per client and per process start, so clients draw different pauses.
        let seed = unix_ns() ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            failures: 0,
            rng: seed | 1,
        }
    }

    /// A connection was established: the next pause starts small again.
    fn reset(&mut self) {
        self.failures = 0;
    }

    /// The next pause.
    fn next(&mut self) -> Duration {
        let ceiling = BACKOFF_MIN
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        // xorshift64*: no dependency, good enough for jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(r % ceiling_ns.max(1))
    }

    /// Sleeps the next pause; false when cancelled meanwhile.
    async fn pause(&mut self, cancel: &CancellationToken) -> bool {
        let d = self.next();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        assert!("signalr".parse::<Protocol>().is_err());
    }

    #[test]
    fn backoff_is_jittered_under_a_growing_ceiling() {
        let mut b = Backoff::new(7);
        let first: Vec<Duration> = (0..6).map(|_| b.next()).collect();
        for (i, d) in first.iter().enumerate() {
            let ceiling = BACKOFF_MIN.saturating_mul(1 << i).min(BACKOFF_MAX);
            assert!(*d < ceiling, "{i}: {d:?} under {ceiling:?}");
        }
        for _ in 0..100 {
            assert!(b.next() < BACKOFF_MAX);
        }
        b.reset();
        assert!(b.next() < BACKOFF_MIN);
        let mut other = Backoff::new(8);
        let theirs: Vec<Duration> = (0..6).map(|_| other.next()).collect();
        assert_ne!(first, theirs, "two clients draw different pauses");
    }

    #[test]
    fn the_task_of_a_socket_stays_small() {
        // The handshake is boxed (heap only while connecting); what stays is the
        // socket, its timer and the loop's state, next to a 4 KiB read buffer.
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = ClientConfig {
            gateway: SocketAddr::from(([127, 0, 0, 1], 1)),
            source: None,
            protocol: Protocol::Json,
            token: String::new(),
            device: String::new(),
            reconnect: false,
        };
        let report = || Reporter {
            client: 0,
            out: tx.clone(),
        };
        let cancel = CancellationToken::new();
        let native = native::run(cfg.clone(), report(), cancel.clone());
        let signalr = signalr::run(cfg, report(), cancel);
        let sizes = (size_of_val(&native), size_of_val(&signalr));
        assert!(sizes.0 < 3 * 1024 && sizes.1 < 3 * 1024, "{sizes:?}");
    }
}
