//! The hub: one NATS subscription per locally connected user, fanned out to that
//! user's sockets.
//!
//! The first socket of a user creates a [`UserChannel`] and its task, which
//! subscribes to `live.<userId>`; later sockets of the same user join it; the last
//! one to leave cancels the task, which drops (unsubscribes) the subscription. A live
//! message is only a doorbell: the task reads the user's new events from the stream
//! (`live::LiveReader`, once per user per gateway), so a forged live message or
//! header never becomes an event. Each
//! event is decoded once and encoded at most once per protocol, then handed to every
//! socket's bounded queue with `try_send`: a full queue closes that socket as a slow
//! consumer instead of growing memory or delaying the others.
//!
//! Locks are `std` mutexes held only for map and vector operations, never across an
//! await. Lock order: `users` before a channel's `sockets`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use ziraai_proto::UserId;

use crate::event::{Encoding, Event, Stats};
use crate::live::LiveReader;
use crate::resync::{ResyncPacer, Turn};
use crate::session::SocketCtl;
use crate::store::EventStore;

/// Why a socket could not join its user's channel.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("subscribing to the user's live subject failed")]
    SubscribeFailed,
    #[error("subscribing to the user's live subject timed out")]
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    Pending,
    Ready,
    Failed,
}

struct Slot {
    id: u64,
    encoding: Encoding,
    tx: mpsc::Sender<Arc<Event>>,
    ctl: Arc<SocketCtl>,
}

struct UserChannel {
    user: UserId,
    sockets: Mutex<Vec<Slot>>,
    state: watch::Sender<SubState>,
    stop: CancellationToken,
}

/// Registry of the users connected to this gateway.
pub struct Hub {
    client: Client,
    /// Where the live path reads its events (the stream is the source of truth).
    store: EventStore,
    /// Bumped when the NATS connection came back: every channel reads to the end,
    /// when the pacer gives it a turn.
    resync: watch::Receiver<u64>,
    pacer: ResyncPacer,
    /// Subject nobody subscribes to: a request on it proves the server has processed
    /// everything this connection sent before (see [`barrier`]).
    barrier_subject: String,
    users: Mutex<HashMap<UserId, Arc<UserChannel>>>,
    next_socket: AtomicU64,
    tracker: TaskTracker,
    stats: Arc<Stats>,
    /// Log each delivery batch at info level (development), debug otherwise.
    log_deliveries: bool,
}

/// A socket's place in its user's channel.
pub struct Membership {
    /// Leaves the channel when dropped.
    pub guard: LeaveGuard,
    /// Events the hub queued for this socket.
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// Lets the hub close this socket (slow consumer) and records its acks.
    pub ctl: Arc<SocketCtl>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind (a map or a
    // vector), still consistent enough to keep serving; recover instead of cascading.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// `log_deliveries`: one info line per delivered event (`make run` in development
    /// shows them); a debug line otherwise.
    pub fn new(
        client: Client,
        (store, resync, pacer): (EventStore, watch::Receiver<u64>, ResyncPacer),
        gateway_id: &str,
        tracker: TaskTracker,
        stats: Arc<Stats>,
        log_deliveries: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            store,
            resync,
            pacer,
            barrier_subject: format!("_ZIRAAI.barrier.{gateway_id}"),
            users: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(1),
            tracker,
            stats,
            log_deliveries,
        })
    }

    /// Number of users with at least one socket here (= live subscriptions).
    pub fn users(&self) -> usize {
        lock(&self.users).len()
    }

    /// Whether this gateway currently holds a channel for `user`.
    pub fn has_user(&self, user: &UserId) -> bool {
        lock(&self.users).contains_key(user)
    }

    /// Adds a socket for `user` with an outbound queue of `queue` frames.
    pub fn join(self: &Arc<Self>, user: UserId, encoding: Encoding, queue: usize) -> Membership {
        let (tx, rx) = mpsc::channel(queue);
        let ctl = Arc::new(SocketCtl::default());
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let mut users = lock(&self.users);
        let channel = users
            .entry(user)
            .or_insert_with_key(|user| {
                let channel = Arc::new(UserChannel {
                    user: user.clone(),
                    sockets: Mutex::new(Vec::new()),
                    state: watch::Sender::new(SubState::Pending),
                    stop: CancellationToken::new(),
                });
                self.tracker
                    .spawn(run_channel(self.clone(), channel.clone()));
                channel
            })
            .clone();
        lock(&channel.sockets).push(Slot {
            id,
            encoding,
            tx,
            ctl: ctl.clone(),
        });
        drop(users);
        Membership {
            guard: LeaveGuard {
                hub: self.clone(),
                channel,
                id,
            },
            rx,
            ctl,
        }
    }

    fn leave(&self, channel: &Arc<UserChannel>, id: u64) {
        let mut users = lock(&self.users);
        let mut sockets = lock(&channel.sockets);
        sockets.retain(|s| s.id != id);
        if sockets.is_empty() {
            if users
                .get(&channel.user)
                .is_some_and(|cur| Arc::ptr_eq(cur, channel))
            {
                users.remove(&channel.user);
            }
            channel.stop.cancel();
        }
    }
}

/// Leaving happens on drop, so no path (error, panic, cancelled upgrade) can leave a
/// subscription behind.
pub struct LeaveGuard {
    hub: Arc<Hub>,
    channel: Arc<UserChannel>,
    id: u64,
}

impl LeaveGuard {
    /// Waits until the user's subscription is in place on the server, so nothing
    /// published after this returns can be missed.
    pub async fn ready(&self, timeout: Duration) -> Result<(), JoinError> {
        let mut rx = self.channel.state.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| *s != SubState::Pending)).await;
        match waited {
            Err(_) => Err(JoinError::TimedOut),
            Ok(Err(_)) => Err(JoinError::SubscribeFailed),
            Ok(Ok(state)) if *state == SubState::Ready => Ok(()),
            Ok(Ok(_)) => Err(JoinError::SubscribeFailed),
        }
    }

    /// This socket's id, unique within the gateway.
    pub fn socket_id(&self) -> u64 {
        self.id
    }
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        self.hub.leave(&self.channel, self.id);
    }
}

/// The task of one user channel: subscribe, find where the stream ends, mark ready,
/// then read and fan out on every doorbell until stopped.
async fn run_channel(hub: Arc<Hub>, channel: Arc<UserChannel>) {
    let subject = channel.user.live_subject();
    let mut resync = hub.resync.clone();
    // Only reconnections from now on matter to this channel.
    resync.borrow_and_update();
    let subscribed = tokio::select! {
        _ = channel.stop.cancelled() => return,
        r = async {
            // Boxed: set-up futures are large and run once; the task keeps only the loop.
            let sub = Box::pin(hub.client.subscribe(subject.clone())).await?;
            Box::pin(barrier(&hub.client, &hub.barrier_subject)).await?;
            // After the subscription: an event stored later rings; one stored earlier
            // is at or below this point, in every new socket's replay.
            let reader =
                Box::pin(LiveReader::start(hub.store.clone(), channel.user.clone(), hub.stats.clone()))
                    .await?;
            Ok::<_, async_nats::Error>((sub, reader))
        } => r,
    };
    let (mut sub, mut reader) = match subscribed {
        Ok(ready) => ready,
        Err(e) => {
            tracing::warn!(%subject, error = %e, "subscribe failed");
            channel.state.send_replace(SubState::Failed);
            return;
        }
    };
    channel.state.send_replace(SubState::Ready);
    tracing::debug!(%subject, "subscribed");
    let mut deliver = |event: Event| fan_out(&channel, event, &hub.stats, hub.log_deliveries);
    let mut resync_open = true;
    // Waiting for a catch-up turn after a reconnection; doorbells are served meanwhile.
    let mut turn: Option<Turn> = None;
    loop {
        let retry_at = reader.retry_at();
        let work = tokio::select! {
            biased;
            _ = channel.stop.cancelled() => break,
            changed = resync.changed(), if resync_open => match changed {
                Ok(()) => {
                    let n = *resync.borrow_and_update();
                    turn.get_or_insert_with(|| hub.pacer.turn(&channel.user, n));
                    continue;
                }
                Err(_) => {
                    resync_open = false;
                    continue;
                }
            },
            permit = wait_turn(&mut turn) => {
                turn = None;
                Work::Resync(permit)
            }
            msg = sub.next() => match msg {
                Some(msg) => Work::Doorbell(msg),
                None => break,
            },
            () = sleep_until(retry_at), if retry_at.is_some() => Work::Retry,
        };
        // Raced with the stop: a read waiting on an unreachable broker must not hold
        // back the drain (the channel ends with its last socket).
        let read = async {
            match work {
                Work::Resync(_turn) => reader.resync(&mut deliver).await,
                Work::Doorbell(msg) => reader.doorbell(&msg, &mut deliver).await,
                Work::Retry => reader.retry(&mut deliver).await,
            }
        };
        tokio::select! {
            biased;
            _ = channel.stop.cancelled() => break,
            () = Box::pin(read) => {}
        }
    }
    if let Err(e) = Box::pin(sub.unsubscribe()).await {
        tracing::debug!(%subject, error = %e, "unsubscribe failed (connection gone)");
    }
    tracing::debug!(%subject, "unsubscribed");
}

/// What woke a user channel's task.
enum Work {
    /// A reconnection's catch-up, holding its turn (if the pacer gave one).
    Resync(Option<tokio::sync::OwnedSemaphorePermit>),
    Doorbell(async_nats::Message),
    Retry,
}

/// The turn waited for, or never without one.
async fn wait_turn(turn: &mut Option<Turn>) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match turn {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Returns once the server has processed every command this client sent before.
///
/// `Client::flush` only writes the buffer to the socket; it does not wait for the
/// server. A request to a subject without subscribers is answered by the server
/// itself ("no responders") after it has handled our earlier `SUB`, since it reads a
/// connection's commands in order. From then on the subscription gets every message.
async fn barrier(client: &Client, subject: &str) -> Result<(), async_nats::Error> {
    match client.request(subject.to_owned(), Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn fan_out(channel: &UserChannel, event: Event, stats: &Stats, log: bool) {
    if event.frame.is_none() {
        // Still handed on, so sockets move past its sequence without a gap fetch.
        stats.malformed.fetch_add(1, Ordering::Relaxed);
    }
    let seq = event.seq;
    let user = &channel.user;
    // Before the event reaches any socket: an ack refers to this span.
    let span = match &event.frame {
        Some(ziraai_proto::ServerFrame::Event(e)) => {
            crate::trace::deliver_span(user.as_str(), seq, &e.kind, &event.trace)
        }
        _ => tracing::Span::none(),
    };
    // Kept by the event before any socket sees it (a socket's write records its delay
    // into it): the span ends once the last socket has written the event.
    let _ = event.trace.span.set(span.clone());
    let event = Arc::new(event);
    let mut queued = 0_usize;
    // Only for the span's `protocols` (none without an exporter).
    let traced = !span.is_disabled();
    let mut protocols: Vec<&'static str> = Vec::new();
    let sockets = lock(&channel.sockets);
    for slot in sockets.iter() {
        // Encode for this protocol once, in the fan-out task rather than per socket.
        let _ = event.encoded(slot.encoding);
        match slot.tx.try_send(event.clone()) {
            Ok(()) => {
                queued += 1;
                let label = crate::metrics::protocol_label(slot.encoding);
                if traced && !protocols.contains(&label) {
                    protocols.push(label);
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => slot.ctl.queue_full(),
            // The socket is ending; its membership leaves on drop.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
    drop(sockets);
    stats.delivered.fetch_add(queued as u64, Ordering::Relaxed);
    if traced {
        span.record("sockets", queued as u64);
        span.record("protocols", protocols.join(",").as_str());
    }
    {
        let _entered = span.enter();
        if log {
            tracing::info!(user = %user, seq, sockets = queued, "delivered");
        } else {
            tracing::debug!(user = %user, seq, sockets = queued, "delivered");
        }
    }
}

/// The size of a user channel's task future (see `sizes_tests`).
#[cfg(test)]
pub(crate) fn channel_future_size() -> usize {
    fn ret<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }
    ret(run_channel)
}
