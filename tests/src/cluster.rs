//! A real 3-node (or n-node) JetStream cluster of the pinned `nats-server` for one test.
//!
//! Every node listens on loopback: its client and monitoring ports come from its ports
//! file (`-1` on the first start, the same client port on a restart), its route port is
//! picked free before the start (routes must be known up front; the whole start is
//! retried when another process took one meanwhile). Each node has a configuration
//! file (`server_name` `n1`..`nN`, its own JetStream store dir, `cluster { routes }`)
//! and a log file in the cluster's temp dir; [`NatsCluster::start_with_auth`] includes a
//! copy of the shipped `nats/auth.conf` with a fresh password per user.
//!
//! Node indices are 0-based: node `i` is the server named `n{i+1}`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::nats_server::{AUTH_USERS, auth_conf, binary, credentials_of, password_of};

/// How long a cluster may take to elect a meta leader and catch up.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// A running JetStream cluster owned by the test (every node killed on drop).
pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// `(user, password)` of every user of `nats/auth.conf`, when it is enforced.
    users: Option<Vec<(&'static str, String)>>,
}

struct Node {
    child: Option<Child>,
    /// Client port (kept across restarts).
    port: u16,
    monitor_port: u16,
    route_port: u16,
}

impl NatsCluster {
    /// Starts `n` nodes without authorization and waits until JetStream is healthy.
    pub async fn start(n: usize) -> Self {
        Self::start_inner(n, None).await
    }

    /// Like [`start`](Self::start), enforcing the shipped `nats/auth.conf` with a random
    /// password per user.
    pub async fn start_with_auth(n: usize) -> Self {
        let users = AUTH_USERS
            .iter()
            .map(|(user, _)| (*user, format!("pw-{}", nuid::next())))
            .collect();
        Self::start_inner(n, Some(users)).await
    }

    async fn start_inner(n: usize, users: Option<Vec<(&'static str, String)>>) -> Self {
        assert!(n >= 1, "a cluster has at least one node");
        for attempt in 1..=5 {
            let dir = tempfile::tempdir().expect("temp dir");
            if users.is_some() {
                std::fs::copy(auth_conf(), dir.path().join("auth.conf")).expect("copy auth.conf");
            }
            let route_ports = free_ports(n);
            let mut cluster = Self {
                dir,
                nodes: route_ports
                    .iter()
                    .map(|&route_port| Node {
                        child: None,
                        port: 0,
                        monitor_port: 0,
                        route_port,
                    })
                    .collect(),
                users: users.clone(),
            };
            let mut started = true;
            for i in 0..n {
                cluster.write_config(i);
                if !cluster.spawn(i).await {
                    started = false;
                    break;
                }
            }
            if started {
                cluster.wait_healthy().await;
                return cluster;
            }
            eprintln!("cluster start attempt {attempt}: a route port was taken; retrying");
        }
        panic!("could not start a {n}-node NATS cluster in 5 attempts");
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(server_name(i))
    }

    fn write_config(&self, i: usize) {
        let dir = self.node_dir(i);
        std::fs::create_dir_all(&dir).expect("node dir");
        let routes = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.route_port))
            .collect::<Vec<_>>()
            .join(", ");
        let mut conf = format!(
            "server_name: {name}\n\
             jetstream {{ store_dir: \"{store}\" }}\n\
             cluster {{\n  name: ziraai-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            name = server_name(i),
            store = dir.join("store").display(),
            route = self.nodes[i].route_port,
        );
        if self.users.is_some() {
            conf.push_str("include ../auth.conf\n");
        }
        std::fs::write(dir.join("server.conf"), conf).expect("write node config");
    }

    /// Starts node `i` (client port `-1` the first time, the same one afterwards); false
    /// when it exited before writing its ports file (a port was taken).
    async fn spawn(&mut self, i: usize) -> bool {
        let dir = self.node_dir(i);
        let ports_dir = dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let port = match self.nodes[i].port {
            0 => "-1".to_owned(),
            p => p.to_string(),
        };
        let mut command = Command::new(binary());
        if let Some(users) = &self.users {
            for ((user, var), (same, pw)) in AUTH_USERS.iter().zip(users) {
                assert_eq!(user, same);
                command.env(var, pw);
            }
        }
        let mut child = command
            .arg("-c")
            .arg(dir.join("server.conf"))
            .args(["-a", "127.0.0.1", "-p", &port, "-m", "-1"])
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(dir.join("server.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((port, monitor)) = read_ports(&ports_dir) {
                self.nodes[i].port = port;
                self.nodes[i].monitor_port = monitor;
                self.nodes[i].child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                // A route port taken by someone else: the caller retries with new ones.
                if self.nodes[i].port == 0 && log.contains("address already in use") {
                    return false;
                }
                panic!("nats-server {} exited at start; log: {log}", server_name(i));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server {} did not write its ports file; log: {}",
                server_name(i),
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `nats://127.0.0.1:<port>` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Comma-separated client URLs of every node (what `ZIRAAI_NATS_URL` takes).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server name of node `i` (`n1`, `n2`, …).
    pub fn name(&self, i: usize) -> String {
        server_name(i)
    }

    /// The log file of node `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.node_dir(i).join("server.log")).unwrap_or_default()
    }

    /// Whether node `i` is running (not killed or stopped by the test).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The password of `user` of `nats/auth.conf` (panics without authorization).
    pub fn password(&self, user: &str) -> &str {
        password_of(self.users.as_deref(), user, "cluster")
    }

    /// The variables that make a service connect as `user`.
    pub fn credentials(&self, user: &'static str) -> [(&'static str, String); 2] {
        credentials_of(self.users.as_deref(), user, "cluster")
    }

    /// A client for the test itself, on every node's URL (it follows kills). With
    /// authorization it connects as `operator`, who may use the whole JetStream API.
    pub async fn client(&self) -> async_nats::Client {
        let opts = match self.users {
            Some(_) => async_nats::ConnectOptions::with_user_and_password(
                "operator".into(),
                self.password("operator").to_owned(),
            ),
            None => async_nats::ConnectOptions::new(),
        };
        self.connect(opts, "test").await
    }

    /// A client connected as `user` of `nats/auth.conf`.
    pub async fn client_as(&self, user: &str) -> async_nats::Client {
        let opts = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            self.password(user).to_owned(),
        );
        self.connect(opts, user).await
    }

    async fn connect(&self, opts: async_nats::ConnectOptions, who: &str) -> async_nats::Client {
        let urls: Vec<async_nats::ServerAddr> = (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .map(|i| self.url(i).parse().expect("valid URL"))
            .collect();
        crate::within(
            &format!("NATS cluster client ({who})"),
            opts.retry_on_initial_connect().connect(urls),
        )
        .await
        .unwrap_or_else(|e| panic!("{who} connects to the test cluster: {e}"))
    }

    /// `GET path` on node `i`'s monitoring port, as JSON (status 200 expected).
    pub async fn monitor(&self, i: usize, path: &str) -> serde_json::Value {
        let (status, body) = self.monitor_raw(i, path).await;
        assert_eq!(
            status,
            200,
            "monitoring {path} on {}: {body}",
            server_name(i)
        );
        serde_json::from_str(&body).expect("monitoring JSON")
    }

    async fn monitor_raw(&self, i: usize, path: &str) -> (u16, String) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.nodes[i].monitor_port));
        crate::http_get(addr, path).await
    }

    /// Index of the node leading stream `name` (waits while it is being elected).
    pub async fn stream_leader(&self, name: &str) -> usize {
        let js = async_nats::jetstream::new(self.client().await);
        crate::within_for(
            HEALTHY_WITHIN,
            &format!("a leader of stream {name}"),
            async {
                loop {
                    if let Ok(mut stream) = js.get_stream(name).await
                        && let Ok(info) = stream.info().await
                        && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
                        && let Some(i) = (0..self.nodes.len()).find(|&i| server_name(i) == leader)
                    {
                        return i;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await
    }

    /// Waits until every running node agrees on a JetStream meta leader that runs,
    /// the leader sees every other running node current, and every running node's
    /// `/healthz` is ok (its streams and consumers caught up).
    pub async fn wait_healthy(&self) {
        let what = "the NATS cluster healthy (meta leader, peers current, /healthz ok)";
        crate::within_for(HEALTHY_WITHIN, what, async {
            while !self.healthy().await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    async fn healthy(&self) -> bool {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect();
        let mut leaders = Vec::new();
        for &i in &running {
            let (status, body) = self.monitor_raw(i, "/jsz").await;
            let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
                return false;
            };
            if status != 200 {
                return false;
            }
            let meta = &jsz["meta_cluster"];
            if self.nodes.len() > 1 && meta["cluster_size"].as_u64() != Some(self.len() as u64) {
                return false;
            }
            leaders.push((i, meta["leader"].as_str().unwrap_or("").to_owned(), jsz));
        }
        if self.nodes.len() > 1 {
            let leader = &leaders[0].1;
            if leader.is_empty() || leaders.iter().any(|(_, l, _)| l != leader) {
                return false;
            }
            let Some((_, _, jsz)) = leaders.iter().find(|(i, _, _)| server_name(*i) == *leader)
            else {
                return false;
            };
            let replicas = jsz["meta_cluster"]["replicas"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for &i in &running {
                if server_name(i) == *leader {
                    continue;
                }
                let current = replicas
                    .iter()
                    .any(|r| r["name"].as_str() == Some(&server_name(i)) && r["current"] == true);
                if !current {
                    return false;
                }
            }
        }
        for &i in &running {
            if self.monitor_raw(i, "/healthz").await.0 != 200 {
                return false;
            }
        }
        true
    }

    /// Kills node `i` with SIGKILL and waits for it to exit (its store stays).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.start_kill();
            let _ = crate::within("nats-server exit after SIGKILL", child.wait()).await;
        }
    }

    /// Stops node `i` gracefully (SIGTERM) and waits for it to exit.
    pub async fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            if let Some(pid) = child.id() {
                crate::send_signal("-TERM", &pid.to_string()).await;
            }
            let exited = tokio::time::timeout(crate::STEP, child.wait()).await;
            if exited.is_err() {
                let _ = child.start_kill();
                let _ = crate::within("nats-server exit", child.wait()).await;
            }
        }
    }

    /// Stops node `i` if it runs, starts it again on the same client and route ports
    /// with the same store, and waits until the cluster is healthy again.
    pub async fn restart(&mut self, i: usize) {
        self.stop(i).await;
        assert!(self.spawn(i).await, "{} restarts", server_name(i));
        self.wait_healthy().await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

fn server_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// `n` distinct loopback ports free right now (bound together, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

fn read_ports(dir: &Path) -> Option<(u16, u16)> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port = |key: &str| -> Option<u16> { v[key][0].as_str()?.rsplit(':').next()?.parse().ok() };
    // Written once every listener is up, routes included.
    port("cluster")?;
    Some((port("nats")?, port("monitoring")?))
}
