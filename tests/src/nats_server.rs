//! A real `nats-server` for one test: pinned binary, random port, own store dir.
//!
//! The binary is the one `make` provisions (`ZIRAAI_TEST_NATS_SERVER`, else
//! `.tools/nats-server-<version>/bin/nats-server` in the workspace). The port comes
//! from the server's ports file (`-p -1`), so there is no race for a free port.
//!
//! [`NatsServer::start`] has no authorization (most tests); [`NatsServer::start_with_auth`]
//! enforces the shipped `nats/auth.conf`, with a fresh password per user passed in the
//! server's environment, as `make run` and production do.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The pinned version, as `infra/scripts/ensure-nats-server.sh` installs it.
pub const PINNED_VERSION: &str = "2.15.1";

/// A running (or stopped) nats-server owned by the test.
pub struct NatsServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    /// `(user, password)` of every user of `nats/auth.conf`, when it is enforced.
    users: Option<Vec<(&'static str, String)>>,
}

/// The users of `nats/auth.conf`, each with its password variable.
pub(crate) const AUTH_USERS: [(&str, &str); 4] = [
    ("gateway", "ZIRAAI_NATS_GATEWAY_PASSWORD"),
    ("worker", "ZIRAAI_NATS_WORKER_PASSWORD"),
    ("platform", "ZIRAAI_NATS_PLATFORM_PASSWORD"),
    ("operator", "ZIRAAI_NATS_OPERATOR_PASSWORD"),
];

/// The pinned `nats-server` binary the tests start (`ZIRAAI_TEST_NATS_SERVER`, else the
/// one `make nats-server` provisions under `.tools/`).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ZIRAAI_TEST_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(".tools")
        .join(format!("nats-server-{PINNED_VERSION}"))
        .join("bin")
        .join("nats-server");
    assert!(
        p.exists(),
        "pinned nats-server not found at {}: run `make nats-server` (make test does it)",
        p.display()
    );
    p
}

impl NatsServer {
    /// Starts a server on a random loopback port with JetStream in a fresh store dir.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Self {
            dir,
            child: None,
            port: 0,
            monitor_port: 0,
            users: None,
        };
        s.spawn("-1").await;
        s
    }

    /// Like [`start`](Self::start), enforcing the shipped `nats/auth.conf` (the real
    /// file) with a random password per user.
    pub async fn start_with_auth() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let users = AUTH_USERS
            .iter()
            .map(|(user, _)| (*user, format!("pw-{}", nuid::next())))
            .collect();
        let mut s = Self {
            dir,
            child: None,
            port: 0,
            monitor_port: 0,
            users: Some(users),
        };
        s.spawn("-1").await;
        s
    }

    /// The password of `user` of `nats/auth.conf` (panics without authorization).
    pub fn password(&self, user: &str) -> &str {
        password_of(self.users.as_deref(), user, "server")
    }

    /// The variables that make a service connect as `user`.
    pub fn credentials(&self, user: &'static str) -> [(&'static str, String); 2] {
        credentials_of(self.users.as_deref(), user, "server")
    }

    async fn spawn(&mut self, port: &str) {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let mut command = Command::new(binary());
        if let Some(users) = &self.users {
            command.arg("-c").arg(auth_conf());
            for ((user, var), (same, pw)) in AUTH_USERS.iter().zip(users) {
                assert_eq!(user, same);
                command.env(var, pw);
            }
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", port, "-m", "-1", "-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((port, monitor)) = read_ports(&ports_dir) {
                self.port = port;
                self.monitor_port = monitor;
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not write its ports file; log: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The server's process id while it runs (the load generator samples its RSS and
    /// CPU from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// What the server logged so far (`-l server.log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `GET path` on the server's monitoring port, as JSON.
    pub async fn monitor(&self, path: &str) -> serde_json::Value {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        let (status, body) = crate::http_get(addr, path).await;
        assert_eq!(status, 200, "monitoring {path}: {body}");
        serde_json::from_str(&body).expect("monitoring JSON")
    }

    /// A client connected as `user` of `nats/auth.conf`.
    pub async fn client_as(&self, user: &str) -> async_nats::Client {
        let opts = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            self.password(user).to_owned(),
        );
        crate::within(&format!("NATS client as {user}"), opts.connect(self.url()))
            .await
            .unwrap_or_else(|e| panic!("{user} connects to the test server: {e}"))
    }

    /// A client connection for the test itself.
    pub async fn client(&self) -> async_nats::Client {
        crate::within("test NATS client", async_nats::connect(self.url()))
            .await
            .expect("connects to the test server")
    }

    /// The worker's publisher on this server (streams applied).
    pub async fn publisher(&self) -> ziraai_worker::Publisher {
        let js = async_nats::jetstream::new(self.client().await);
        crate::within(
            "apply streams",
            ziraai_common::nats::apply_notify_streams(&js, 1),
        )
        .await
        .expect("streams applied");
        ziraai_worker::Publisher::new(js)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = crate::within("nats-server exit", child.wait()).await;
        }
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.port.to_string();
        self.spawn(&port).await;
    }
}

/// The password of `user` among `users` (panics when the `what` runs without
/// authorization or has no such user).
pub(crate) fn password_of<'a>(
    users: Option<&'a [(&'static str, String)]>,
    user: &str,
    what: &str,
) -> &'a str {
    users
        .into_iter()
        .flatten()
        .find(|(u, _)| *u == user)
        .map(|(_, pw)| pw.as_str())
        .unwrap_or_else(|| panic!("no user {user}: start the {what} with start_with_auth"))
}

/// The variables that make a service connect as `user` of `users`.
pub(crate) fn credentials_of(
    users: Option<&[(&'static str, String)]>,
    user: &'static str,
    what: &str,
) -> [(&'static str, String); 2] {
    [
        ("ZIRAAI_NATS_USER", user.to_owned()),
        (
            "ZIRAAI_NATS_PASSWORD",
            password_of(users, user, what).to_owned(),
        ),
    ]
}

/// The shipped `nats/auth.conf`.
pub(crate) fn auth_conf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("nats")
        .join("auth.conf")
}

fn read_ports(dir: &std::path::Path) -> Option<(u16, u16)> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port = |key: &str| -> Option<u16> { v[key][0].as_str()?.rsplit(':').next()?.parse().ok() };
    Some((port("nats")?, port("monitoring")?))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
