//! The session loop: replay, live delivery with de-duplication and gap filling,
//! client frames, keep-alive and cursor saves.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Backend, CloseReason, Dialect, Inbound, Session, SocketCtl, SocketError, Stop};
use crate::event::Event;
use crate::metrics::Path;
use crate::tracking::TrackKind;
use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use opentelemetry::trace::SpanContext;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most live frames written per flush.
const WRITE_BATCH: usize = 64;
/// Delivered-but-unacknowledged sequences remembered per socket for ack tracking.
const MAX_UNACKED: usize = 4096;
/// The close code a close frame without one stands for (RFC 6455 §7.4.1).
const NO_STATUS: u16 = 1005;
/// Characters of a client's close reason kept for the log line.
const MAX_LOGGED_REASON: usize = 64;
/// A written event counts as received (for clients that send no acks) when the client
/// is heard from at least this long after the write: time for the frame to arrive.
/// A socket whose peer vanished accepts writes into the kernel buffer, so "written"
/// alone would advance a cursor past events nobody received.
const WRITE_CONFIRM_MARGIN: Duration = Duration::from_secs(1);
/// Written-but-unconfirmed positions remembered per socket.
const MAX_UNCONFIRMED: usize = 1024;
/// How long a session retries reading the stream (broker restarting, leader
/// election) before it closes the socket so the client resumes elsewhere.
const READ_PATIENCE: Duration = Duration::from_secs(20);
/// First retry delay of a failed stream read; doubles up to one second.
const READ_RETRY: Duration = Duration::from_millis(100);

pub(super) struct Conn<S, B, D> {
    socket: S,
    queue: mpsc::Receiver<Arc<Event>>,
    ctl: Arc<SocketCtl>,
    s: Session<B>,
    d: D,
    /// Highest sequence sent or skipped: everything up to it is done.
    last_seen: u64,
    /// Sent, not yet acknowledged (for ack tracking), oldest first.
    /// With each its delivery's trace context (the `notify.ack` span links to it).
    unacked: VecDeque<u64>,
    /// The delivery spans of the last [`crate::trace::MAX_LINKS`] events written (what
    /// an ack links to): kept apart from `unacked` so a socket that never acks holds
    /// sequences only, not a span context per event.
    delivered: VecDeque<(u64, SpanContext)>,
    last_heard: Instant,
    last_sent: Instant,
    /// (time of a flush, last sequence written by then), for `acks_on_write` dialects.
    unconfirmed: VecDeque<(Instant, u64)>,
    cursor_dirty: bool,
    last_cursor_save: Option<Instant>,
    /// Fires when the socket's token expires; moved by a refresh.
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Client frames still allowed (`ZIRAAI_GATEWAY_CLIENT_FRAME_RATE`).
    frames: super::rate::FrameBudget,
    /// `ziraai_delivery_latency_seconds` of this socket's protocol, resolved once.
    latency: crate::metrics::Latency,
}

type Step = Result<(), Stop>;

/// A deadline that never comes in practice (a socket without a token expiry).
fn far_future() -> Instant {
    // About 30 years: far enough, and far from `Instant`'s overflow.
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}

impl<S, E, B, D> Conn<S, B, D>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message, Error = E> + Unpin,
    E: SocketError,
    B: Backend,
    D: Dialect,
{
    pub(super) fn new(
        socket: S,
        queue: mpsc::Receiver<Arc<Event>>,
        ctl: Arc<SocketCtl>,
        s: Session<B>,
        d: D,
    ) -> Self {
        let expires = s.expires.unwrap_or_else(far_future);
        let latency = s.stats.metrics.latency(d.encoding());
        Self {
            latency,
            socket,
            queue,
            ctl,
            last_seen: s.start_after,
            frames: super::rate::FrameBudget::new(s.limits.frames),
            s,
            d,
            unacked: VecDeque::new(),
            delivered: VecDeque::new(),
            last_heard: Instant::now(),
            last_sent: Instant::now(),
            unconfirmed: VecDeque::new(),
            cursor_dirty: false,
            last_cursor_save: None,
            expiry: Box::pin(tokio::time::sleep_until(expires)),
        }
    }

    pub(super) fn socket(&mut self) -> &mut S {
        &mut self.socket
    }

    pub(super) fn dialect(&self) -> &D {
        &self.d
    }

    pub(super) fn dialect_mut(&mut self) -> &mut D {
        &mut self.d
    }

    pub(super) async fn serve(&mut self) -> Stop {
        match self.serve_inner().await {
            Ok(()) => Stop::Gone,
            Err(stop) => stop,
        }
    }

    async fn serve_inner(&mut self) -> Step {
        if let Some(greeting) = self.d.greeting() {
            self.write(greeting).await?;
        }
        self.catch_up_all(Path::Replay).await?;
        let keepalive = self.d.keepalive();
        let mut pings = tokio::time::interval_at(Instant::now() + keepalive.tick, keepalive.tick);
        let flush = self.s.limits.cursor_flush;
        let mut cursor_tick = tokio::time::interval_at(Instant::now() + flush, flush);
        loop {
            tokio::select! {
                biased;
                _ = self.ctl.cancel.cancelled() => {
                    return Err(Stop::Close(self.ctl.reason.get().cloned().unwrap_or(CloseReason::Internal)));
                }
                _ = self.s.shutdown.cancelled() => return Err(Stop::Close(CloseReason::Shutdown)),
                _ = self.ctl.lag.notified() => self.catch_up_all(Path::GapFill).await?,
                queued = self.queue.recv() => {
                    let Some(event) = queued else { return Err(Stop::Close(CloseReason::Internal)) };
                    self.live(&event).await?;
                    for _ in 1..WRITE_BATCH {
                        match self.queue.try_recv() {
                            Ok(event) => self.live(&event).await?,
                            Err(_) => break,
                        }
                    }
                    self.flush().await?;
                }
                incoming = self.socket.next() => {
                    self.last_heard = Instant::now();
                    self.confirm_writes().await;
                    self.inbound(incoming).await?;
                }
                _ = pings.tick() => {
                    if self.last_heard.elapsed() >= keepalive.heard_timeout {
                        return Err(Stop::Close(CloseReason::Idle));
                    }
                    if self.last_sent.elapsed() >= keepalive.ping_when_idle {
                        self.write(keepalive.ping.clone()).await?;
                    }
                }
                _ = cursor_tick.tick() => self.save_cursor_if_dirty().await,
                () = &mut self.expiry => return Err(Stop::Close(CloseReason::TokenExpired)),
            }
        }
    }

    /// Replays everything stored after `last_seen`; repeats while live events were
    /// dropped for this socket in the meantime (they are in the stream). `path`: a
    /// resume at the start, or a gap fill while live (lag, NATS reconnect).
    async fn catch_up_all(&mut self, path: Path) -> Step {
        loop {
            self.ctl.replaying.store(true, Ordering::SeqCst);
            self.ctl.lagged.store(false, Ordering::SeqCst);
            // Boxed, here and for a live event's gap: a replay's future (the event
            // read, its spans, the retry timer) is large and rare; inline, every idle
            // socket's task would carry its size.
            let r = Box::pin(self.catch_up(None, path, None)).await;
            self.ctl.replaying.store(false, Ordering::SeqCst);
            r?;
            self.flush().await?;
            if !self.ctl.lagged.swap(false, Ordering::SeqCst) {
                return Ok(());
            }
        }
    }

    /// Sends stored events after `last_seen`, up to (not including) `until`; a gap
    /// fill's `notify.replay` span is a child of the live event's delivery (`parent`).
    async fn catch_up(
        &mut self,
        until: Option<u64>,
        path: Path,
        parent: Option<SpanContext>,
    ) -> Step {
        let mut sent = 0usize;
        // Started at the first replayed event: a socket with nothing to replay has none.
        let mut trace = crate::trace::ReplayTrace::default();
        loop {
            let Some(event) = self.read_next().await? else {
                return Ok(());
            };
            if until.is_some_and(|u| event.seq >= u) {
                return Ok(());
            }
            self.s.stats.replayed.fetch_add(1, Ordering::Relaxed);
            let replay = trace.span.get_or_insert_with(|| {
                let reason = if path == Path::GapFill {
                    "gap_fill"
                } else {
                    "resume"
                };
                crate::trace::replay_span(event.seq, reason, parent.as_ref())
            });
            if sent < crate::trace::MAX_LINKS
                && let Some(cx) = event.trace.context()
            {
                tracing_opentelemetry::OpenTelemetrySpanExt::add_link(replay, cx);
            }
            self.emit(&event, path).await?;
            sent += 1;
            trace.count = sent as u64;
            if sent.is_multiple_of(WRITE_BATCH) {
                self.flush().await?;
            }
        }
    }

    /// The next stored event after `last_seen`, retrying while the stream is
    /// unavailable (for at most [`READ_PATIENCE`]).
    async fn read_next(&mut self) -> Result<Option<Event>, Stop> {
        let started = Instant::now();
        let mut delay = READ_RETRY;
        loop {
            // Boxed: the read's future is large and rare; inline, every idle socket's
            // task would carry its size. Raced with the stop signals: a read waiting on
            // an unreachable broker must not hold back a drain's 1012.
            let read = Box::pin(self.s.backend.next_after(self.last_seen));
            let result = tokio::select! {
                biased;
                _ = self.ctl.cancel.cancelled() => return Err(Stop::Close(self.ctl.reason.get().cloned().unwrap_or(CloseReason::Internal))),
                _ = self.s.shutdown.cancelled() => return Err(Stop::Close(CloseReason::Shutdown)),
                r = read => r,
            };
            match result {
                Ok(next) => return Ok(next),
                Err(e) if started.elapsed() >= READ_PATIENCE => {
                    tracing::warn!(error = %e, after = self.last_seen, "cannot read the stream for this socket; closing it");
                    return Err(Stop::Close(CloseReason::Unavailable));
                }
                Err(e) => {
                    tracing::debug!(error = %e, after = self.last_seen, "stream read failed; retrying")
                }
            }
            tokio::select! {
                _ = self.ctl.cancel.cancelled() => return Err(Stop::Close(self.ctl.reason.get().cloned().unwrap_or(CloseReason::Internal))),
                _ = self.s.shutdown.cancelled() => return Err(Stop::Close(CloseReason::Shutdown)),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// A live event: drop repeats, fill a gap first, then send.
    async fn live(&mut self, event: &Event) -> Step {
        if event.seq <= self.last_seen {
            return Ok(());
        }
        if event.last_seq > self.last_seen {
            self.s.stats.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                seq = event.seq,
                last_seq = event.last_seq,
                sent = self.last_seen,
                "gap: fetching from the stream"
            );
            self.ctl.replaying.store(true, Ordering::SeqCst);
            let r = Box::pin(self.catch_up(Some(event.seq), Path::GapFill, event.trace.context()))
                .await;
            self.ctl.replaying.store(false, Ordering::SeqCst);
            r?;
            if self.ctl.lagged.load(Ordering::SeqCst) {
                // Live events were dropped meanwhile; the lag branch replays them.
                self.ctl.lag.notify_one();
            }
        }
        self.emit(event, Path::Live).await
    }

    /// Queues one event on the socket (or skips a malformed one) and moves past it.
    /// Live and gap-fill writes record their delay since the publish; a resume's
    /// backlog does not (its age is the device's absence, not the gateway's speed).
    async fn emit(&mut self, event: &Event, path: Path) -> Step {
        if let Some(msg) = event.encoded(self.d.encoding()) {
            self.feed(msg).await?;
            event.trace.written();
            self.s.stats.metrics.event(path);
            if path != Path::Replay
                && let Some(delay) = event.since_published()
            {
                self.latency.observe(delay.as_secs_f64());
            }
            self.d.sent_event(event.seq);
            self.s.backend.track(TrackKind::Delivered, event.seq);
            if self.unacked.len() == MAX_UNACKED {
                self.unacked.pop_front();
            }
            self.unacked.push_back(event.seq);
            if let Some(cx) = event.trace.context() {
                if self.delivered.len() == crate::trace::MAX_LINKS {
                    self.delivered.pop_front();
                }
                self.delivered.push_back((event.seq, cx));
            }
        }
        self.last_seen = event.seq;
        Ok(())
    }

    async fn inbound(&mut self, incoming: Option<Result<Message, E>>) -> Step {
        if let Some(Ok(m)) = &incoming
            && !matches!(m, Message::Close(_))
            && !self.frames.take_n(self.d.cost(m))
        {
            return Err(Stop::Close(CloseReason::RateLimited));
        }
        let msg = match incoming {
            Some(Ok(Message::Close(frame))) => {
                // Logged at the close: bounded, printable (it comes from the client); a
                // close frame without a code is 1005 ("no status received").
                let (code, reason) = frame.map_or((NO_STATUS, String::new()), |f| {
                    let reason = f
                        .reason
                        .as_str()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_LOGGED_REASON)
                        .collect();
                    (f.code, reason)
                });
                let _ = self.ctl.client_close.set((code, reason));
                return Err(Stop::Gone);
            }
            None => return Err(Stop::Gone),
            Some(Err(e)) if e.is_too_big() => return Err(Stop::Close(CloseReason::TooBig)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return Err(Stop::Gone);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Ok(()),
            Some(Ok(m)) => m,
        };
        for action in Box::pin(self.d.inbound(&msg)).await {
            match action {
                Inbound::Reply(m) => self.write(m).await?,
                Inbound::Ack(seq) => {
                    self.s.stats.metrics.ack();
                    self.ack(seq, true).await
                }
                Inbound::Close(reason) => return Err(Stop::Close(reason)),
                Inbound::Gone => return Err(Stop::Gone),
                Inbound::Expiry(at) => self.expiry.as_mut().reset(at),
            }
        }
        Ok(())
    }

    /// An ack covers every event up to `seq`; it cannot cover what was not sent.
    /// `explicit`: the device sent it (a `notify.ack` span), not a confirmed write.
    async fn ack(&mut self, seq: u64, explicit: bool) {
        let seq = seq.min(self.last_seen);
        if seq <= self.ctl.acked.fetch_max(seq, Ordering::Relaxed) {
            return;
        }
        while self.unacked.front().is_some_and(|s| *s <= seq) {
            if let Some(s) = self.unacked.pop_front() {
                self.s.backend.track(TrackKind::Acked, s);
            }
        }
        let mut deliveries = Vec::new();
        while self.delivered.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, cx)) = self.delivered.pop_front() {
                deliveries.push(cx);
            }
        }
        if explicit {
            crate::trace::ack_span(self.s.backend.device_label(), seq, &deliveries);
        }
        if !self.s.backend.has_cursor() {
            return;
        }
        // Leading edge: write now unless a write happened within the flush interval;
        // otherwise the cursor tick writes the latest ack (trailing edge).
        let recent = self
            .last_cursor_save
            .is_some_and(|t| t.elapsed() < self.s.limits.cursor_flush);
        self.cursor_dirty = true;
        if !recent {
            self.save_cursor_if_dirty().await;
        }
    }

    /// The client was just heard from: events written long enough before count as
    /// received.
    async fn confirm_writes(&mut self) {
        let Some(cutoff) = self.last_heard.checked_sub(WRITE_CONFIRM_MARGIN) else {
            return;
        };
        let mut confirmed = None;
        while self.unconfirmed.front().is_some_and(|(t, _)| *t <= cutoff) {
            confirmed = self.unconfirmed.pop_front().map(|(_, seq)| seq);
        }
        if let Some(seq) = confirmed {
            self.ack(seq, false).await;
        }
    }

    pub(super) async fn save_cursor_if_dirty(&mut self) {
        if self.cursor_dirty {
            self.cursor_dirty = false;
            self.last_cursor_save = Some(Instant::now());
            // Not saved: written again at the next cursor tick (or at the close).
            self.cursor_dirty = !Box::pin(self.s.backend.save_cursor(self.ctl.acked())).await;
        }
    }

    async fn feed(&mut self, msg: Message) -> Step {
        match tokio::time::timeout(self.s.limits.write_timeout, self.socket.feed(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(self.write_timed_out()),
        }
    }

    async fn flush(&mut self) -> Step {
        match tokio::time::timeout(self.s.limits.write_timeout, self.socket.flush()).await {
            Ok(Ok(())) => {
                self.last_sent = Instant::now();
                let newest = self
                    .unconfirmed
                    .back()
                    .map_or(self.ctl.acked(), |(_, s)| *s);
                if self.d.acks_on_write() && self.last_seen > newest {
                    if self.unconfirmed.len() == MAX_UNCONFIRMED {
                        self.unconfirmed.pop_front();
                    }
                    self.unconfirmed.push_back((self.last_sent, self.last_seen));
                }
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(self.write_timed_out()),
        }
    }

    async fn write(&mut self, msg: Message) -> Step {
        self.feed(msg).await?;
        self.flush().await
    }

    fn write_timed_out(&self) -> Stop {
        tracing::info!("write timed out; closing a slow socket");
        // The close frame cannot be written either; report the reason and drop it.
        self.ctl.close(CloseReason::SlowConsumer);
        Stop::Close(CloseReason::SlowConsumer)
    }
}
