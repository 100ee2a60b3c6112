//! The parent's side of the client processes: splits the sockets over `clients`
//! children (this binary re-executed), sends them commands and merges their answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Process};

use crate::clients::{ChildClient, ChildSpec, Command, Reply, Status};
use crate::tally::{Latency, WireTally, lost_and_extra};

/// Bound of one command's answer (a tally of 19,000 clients is a few hundred KB).
const ANSWER: Duration = Duration::from_secs(30);

/// Sockets per source address: below the ~28k ephemeral ports of one source.
const PER_SOURCE: usize = 20_000;

/// What to open: `sockets` sockets, socket `i` of user `users[i % users.len()]`, on
/// gateway `gateways[i % gateways.len()]`.
pub(crate) struct PoolPlan<'a> {
    pub(crate) protocol: &'a str,
    pub(crate) sockets: usize,
    pub(crate) users: &'a [String],
    pub(crate) gateways: &'a [SocketAddr],
    pub(crate) per_child: usize,
    /// Source addresses 127.0.0.2… (0: let the OS pick; needed past ~28k sockets).
    pub(crate) sources: usize,
    pub(crate) reconnect: bool,
    pub(crate) connect_window: usize,
    /// Prefix of the device ids (`<prefix>-<socket>`), unique per run.
    pub(crate) device_prefix: &'a str,
}

impl PoolPlan<'_> {
    /// The user index of socket `i`.
    pub(crate) fn user_of(&self, i: usize) -> usize {
        i % self.users.len().max(1)
    }

    /// How many source addresses a plan of `sockets` needs when not told.
    pub(crate) fn auto_sources(sockets: usize) -> usize {
        if sockets <= PER_SOURCE {
            0
        } else {
            sockets.div_ceil(PER_SOURCE)
        }
    }

    fn client(&self, i: usize) -> ChildClient {
        ChildClient {
            gateway: self.gateways[i % self.gateways.len()],
            source: (self.sources > 0)
                .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % self.sources) as u8))),
            user: self.users[self.user_of(i)].clone(),
            device: format!("{}-{i}", self.device_prefix),
        }
    }

    /// The children's specs: contiguous ranges of at most `per_child` sockets.
    pub(crate) fn specs(&self) -> Vec<ChildSpec> {
        let per = self.per_child.max(1);
        let children = self.sockets.div_ceil(per).max(1);
        // Even split: no child much fuller than another.
        let size = self.sockets.div_ceil(children);
        (0..children)
            .map(|k| ChildSpec {
                protocol: self.protocol.to_owned(),
                reconnect: self.reconnect,
                connect_window: self.connect_window,
                clients: (k * size..((k + 1) * size).min(self.sockets))
                    .map(|i| self.client(i))
                    .collect(),
            })
            .collect()
    }
}

struct ChildProc {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    sockets: usize,
}

impl ChildProc {
    async fn ask(&mut self, cmd: &Command) -> anyhow::Result<Reply> {
        let mut line = serde_json::to_vec(cmd)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        let answer = tokio::time::timeout(ANSWER, self.stdout.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("a client process did not answer {cmd:?} in {ANSWER:?}"))??
            .ok_or_else(|| anyhow::anyhow!("a client process exited"))?;
        Ok(serde_json::from_str(&answer)?)
    }
}

/// All client processes of one scenario.
pub(crate) struct ClientPool {
    children: Vec<ChildProc>,
    pub(crate) started: Instant,
    pub(crate) sockets: usize,
}

/// The children's counters summed, with the last disconnect reason seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct PoolStatus {
    pub(crate) status: Status,
    pub(crate) last_disconnect: String,
}

/// A phase's deliveries over every client, against what each should have received.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    pub(crate) distinct: u64,
    pub(crate) expected: u64,
    pub(crate) lost: u64,
    /// Received although not acknowledged to the publisher (its PubAck failed).
    pub(crate) extra: u64,
    pub(crate) duplicates: u64,
    pub(crate) latency: Latency,
}

impl ClientPool {
    /// Starts the children of `plan` (they start connecting at once).
    pub(crate) async fn start(plan: &PoolPlan<'_>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let started = Instant::now();
        let mut children = Vec::new();
        for spec in plan.specs() {
            let mut child = Process::new(&exe)
                .arg("clients")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                anyhow::bail!("client process without pipes");
            };
            let mut line = serde_json::to_vec(&spec)?;
            line.push(b'\n');
            stdin.write_all(&line).await?;
            stdin.flush().await?;
            children.push(ChildProc {
                child,
                stdin,
                stdout: BufReader::new(stdout).lines(),
                sockets: spec.clients.len(),
            });
        }
        Ok(Self {
            children,
            started,
            sockets: plan.sockets,
        })
    }

    /// Process ids of the children.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.child.id()).collect()
    }

    pub(crate) async fn status(&mut self) -> anyhow::Result<PoolStatus> {
        let mut sum = PoolStatus::default();
        for c in &mut self.children {
            if let Reply::Status {
                status,
                last_disconnect,
            } = c.ask(&Command::Status).await?
            {
                let s = &mut sum.status;
                s.first_done += status.first_done;
                s.connected_now += status.connected_now;
                s.connects += status.connects;
                s.resumed_connects += status.resumed_connects;
                s.disconnects += status.disconnects;
                s.last_connect_ns = s.last_connect_ns.max(status.last_connect_ns);
                s.foreign_deliveries += status.foreign_deliveries;
                if !last_disconnect.is_empty() {
                    sum.last_disconnect = last_disconnect;
                }
            }
        }
        Ok(sum)
    }

    /// Waits until `want(status)` holds, polling every 100 ms, for at most `limit`.
    pub(crate) async fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        want: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<PoolStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status().await?;
            if want(&s.status) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{what}: not reached in {limit:?} ({:?}; last disconnect: {})",
                    s.status,
                    s.last_disconnect
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every socket is connected (first attempts all done and all up).
    pub(crate) async fn wait_all_connected(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<PoolStatus> {
        let n = self.sockets;
        let s = self
            .wait_for("all sockets connected", limit, |s| {
                // Nothing ever connected after three tries each: no point waiting.
                s.connected_now >= n || (s.connects == 0 && s.disconnects >= 3 * n as u64)
            })
            .await?;
        anyhow::ensure!(
            s.status.connected_now >= n,
            "no socket could connect (last disconnect: {})",
            s.last_disconnect
        );
        Ok(s)
    }

    async fn distinct(&mut self, phase: &str) -> anyhow::Result<u64> {
        let mut total = 0;
        for c in &mut self.children {
            if let Reply::Count { distinct } = c
                .ask(&Command::Count {
                    phase: phase.into(),
                })
                .await?
            {
                total += distinct;
            }
        }
        Ok(total)
    }

    /// Waits (at most `limit`) until `expected` distinct deliveries of `phase` arrived,
    /// or nothing new arrived for `quiet`; then the phase's full tally, with lost
    /// deliveries counted per client against `expected_of(socket)`.
    pub(crate) async fn collect(
        &mut self,
        phase: &str,
        expected: u64,
        expected_of: impl Fn(usize) -> u64,
        limit: Duration,
    ) -> anyhow::Result<Delivered> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.distinct(phase).await? >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut out = Delivered {
            expected,
            ..Delivered::default()
        };
        let mut base = 0;
        for c in &mut self.children {
            let tally = match c
                .ask(&Command::Tally {
                    phase: phase.into(),
                })
                .await?
            {
                Reply::Tally { tally } => tally,
                _ => WireTally::default(),
            };
            let (lost, extra) = lost_and_extra(&tally.distinct, |i| expected_of(base + i));
            out.lost += lost;
            out.extra += extra;
            out.duplicates += tally.duplicates;
            out.distinct += tally.distinct.iter().map(|&n| u64::from(n)).sum::<u64>();
            out.latency.add(&Latency::from_buckets(&tally.buckets));
            base += c.sockets;
        }
        Ok(out)
    }

    /// Stops every child (sockets closed), bounded.
    pub(crate) async fn stop(mut self) {
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(20), c.ask(&Command::Stop)).await;
        }
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan<'a>(users: &'a [String], gateways: &'a [SocketAddr], sockets: usize) -> PoolPlan<'a> {
        PoolPlan {
            protocol: "json",
            sockets,
            users,
            gateways,
            per_child: 4,
            sources: 2,
            reconnect: false,
            connect_window: 10,
            device_prefix: "d",
        }
    }

    #[test]
    fn sockets_spread_over_children_gateways_users_and_sources() {
        let users: Vec<String> = (0..3).map(|u| format!("u{u}")).collect();
        let gws: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.1:2"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let p = plan(&users, &gws, 10);
        let specs = p.specs();
        // 10 sockets, at most 4 per child: 3 children of 4, 4 and 2.
        assert_eq!(
            specs.iter().map(|s| s.clients.len()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        let all: Vec<&ChildClient> = specs.iter().flat_map(|s| &s.clients).collect();
        assert_eq!(all[4].user, "u1"); // socket 4 → user 4 % 3
        assert_eq!(all[4].device, "d-4");
        assert_eq!(all[3].gateway.port(), 2);
        assert_eq!(all[3].source, Some("127.0.0.3".parse().expect("ip")));
        assert_eq!(p.user_of(5), 2);
        assert_eq!(PoolPlan::auto_sources(19_000), 0);
        assert_eq!(PoolPlan::auto_sources(100_000), 5);
    }
}
