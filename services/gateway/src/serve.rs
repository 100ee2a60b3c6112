//! The accept loop: HTTP/1 connections served by hyper with a header timeout, upgrades
//! (WebSockets) handed to the router, and a graceful stop.
//!
//! `axum::serve` has no header timeout, so a client that connects and never finishes a
//! request holds a descriptor forever (slowloris). Here every connection must send a
//! complete request head within `ZIRAAI_GATEWAY_HEADER_TIMEOUT`; the same timeout
//! bounds an idle keep-alive connection waiting for its next request (hyper arms it
//! whenever it waits for a head). When the process runs out of descriptors, accepting
//! pauses briefly instead of spinning, and resumes as timed-out connections close.
//!
//! The listener queues up to [`LISTEN_BACKLOG`] connections for the accept loop (the
//! default of tokio and std is 128): when a gateway restarts, its clients all reconnect
//! within a second or two, faster than any loop accepts, and a full queue makes the
//! kernel drop their SYNs, which clients retry only after 1 s, 3 s, 7 s.
//!
//! Each request carries `ConnectInfo<SocketAddr>` (the TCP peer) and
//! [`ClientIp`](crate::client_ip::ClientIp) (the peer, or the client named by a
//! trusted proxy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ziraai_common::config::TrustedProxies;

use crate::client_ip::{ClientIp, resolve};

/// Pause of the accept loop after running out of descriptors (or another error that
/// is not about one connection).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Connections the kernel holds for the accept loop, at most (it caps the value at
/// `net.core.somaxconn`, 4096 by default since Linux 5.4).
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (address reuse on, as tokio's `bind`) with a queue of [`LISTEN_BACKLOG`]
/// connections; says so when the kernel's `net.core.somaxconn` makes it smaller.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    if let Some(max) = somaxconn()
        && max < LISTEN_BACKLOG
    {
        tracing::warn!(
            backlog = LISTEN_BACKLOG,
            somaxconn = max,
            "net.core.somaxconn caps the listen backlog: a reconnect storm may see dropped connection attempts"
        );
    }
    socket.listen(LISTEN_BACKLOG)
}

/// The kernel's cap on listen backlogs (Linux), if readable.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How connections are served.
pub(crate) struct ServeOptions {
    pub(crate) header_timeout: Duration,
    pub(crate) trusted_proxies: Arc<TrustedProxies>,
    /// Time in-flight requests get to finish once `stop` fires.
    pub(crate) grace: Duration,
}

/// Accepts and serves until `stop` is cancelled, then lets in-flight requests finish
/// (idle connections close at once) for at most `grace`. Upgraded sockets are not
/// waited for here: the caller's socket tracker owns them.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    stop: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    let mut starved = false;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if !starved {
                    // Once per episode: the descriptors come back as connections close.
                    tracing::warn!(error = %e, "cannot accept connections; pausing accept");
                }
                starved = true;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                }
            }
        };
        if starved {
            tracing::info!("accepting connections again");
            starved = false;
        }
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            builder.clone(),
            opts.trusted_proxies.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(opts.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "HTTP requests still running after the grace period"
        );
    }
}

/// Serves one connection; on `stop`, finishes the request in flight and closes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<http1::Builder>,
    trusted: Arc<TrustedProxies>,
    stop: CancellationToken,
) {
    let inner = TowerToHyperService::new(router);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let client = resolve(peer, req.headers(), &trusted);
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(ClientIp(client));
        hyper::service::Service::call(&inner, req)
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Header timeouts, resets and malformed requests: the client's business.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Errors about one connection (it went away before we took it): accept the next.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}
