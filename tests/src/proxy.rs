//! A loopback TCP proxy a test can cut, hold and re-point: drops sockets the way a
//! phone changing networks does, and sends the reconnect to another gateway.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxy; stops (and cuts everything) on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    hold: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a random loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target = Arc::new(Mutex::new(target));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (hold, held) = watch::channel(false);
        let (t, c) = (target.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (t, mut held) = (t.clone(), held.clone());
                let task = tokio::spawn(async move {
                    // While held, connections wait here (the client sees a slow server).
                    if held.wait_for(|h| !h).await.is_err() {
                        return;
                    }
                    let to = *t.lock().expect("lock");
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().expect("lock").push(task);
            }
        });
        Self {
            addr,
            target,
            conns,
            hold,
            accept,
        }
    }

    /// Sends new connections to `target`.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().expect("lock") = target;
    }

    /// Drops every proxied connection at once (both sides see the TCP close).
    pub fn cut(&self) {
        for task in self.conns.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    /// While `true`, new connections are accepted but not forwarded.
    pub fn hold(&self, on: bool) {
        self.hold.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
