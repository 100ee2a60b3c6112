//! This gateway's registered sockets, by key subject: what an eviction request closes,
//! what the heartbeat re-registers after its key expired, what a ticket removes.
//!
//! The lock is a `std` mutex held only for map operations, never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::session::{CloseReason, SocketCtl};

struct Slot {
    /// The ticket owning the key (a SignalR resume may register the same key again).
    id: u64,
    /// Stream sequence of the key's current value.
    seq: u64,
    /// Present once the session runs.
    ctl: Option<Arc<SocketCtl>>,
    /// Evicted before its session ran: closed as soon as it attaches.
    evicted: bool,
}

/// A registered socket as the heartbeat re-registers it.
pub(super) struct Registered {
    pub(super) subject: String,
    pub(super) id: u64,
}

#[derive(Default)]
pub(super) struct Registry {
    slots: Mutex<HashMap<String, Slot>>,
    next: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // Plain data behind the lock stays consistent after a panic elsewhere.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a key written at `seq`; returns the owning ticket's id.
    pub(super) fn insert(&self, subject: &str, seq: u64) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            id,
            seq,
            ctl: None,
            evicted: false,
        };
        self.lock().insert(subject.to_owned(), slot);
        id
    }

    pub(super) fn attach(&self, subject: &str, id: u64, ctl: &Arc<SocketCtl>) {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(subject).filter(|s| s.id == id) else {
            return;
        };
        slot.ctl = Some(ctl.clone());
        if slot.evicted {
            ctl.close(CloseReason::ConnectionLimit);
        }
    }

    /// Closes the socket of `subject` (or marks it, if its session has not started);
    /// false when this gateway has no such socket.
    pub(super) fn evict(&self, subject: &str) -> bool {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(subject) else {
            return false;
        };
        slot.evicted = true;
        if let Some(ctl) = &slot.ctl {
            ctl.close(CloseReason::ConnectionLimit);
        }
        true
    }

    /// Removes the ticket's key; returns the sequence to delete, `None` when another
    /// ticket owns the key now.
    pub(super) fn remove(&self, subject: &str, id: u64) -> Option<u64> {
        let mut slots = self.lock();
        if slots.get(subject).is_some_and(|s| s.id == id) {
            return slots.remove(subject).map(|s| s.seq);
        }
        None
    }

    pub(super) fn all(&self) -> Vec<Registered> {
        self.lock()
            .iter()
            .map(|(subject, s)| Registered {
                subject: subject.clone(),
                id: s.id,
            })
            .collect()
    }

    /// Records a re-registration; false when the ticket is gone meanwhile (the caller
    /// deletes the value it just wrote).
    pub(super) fn rewritten(&self, subject: &str, id: u64, seq: u64) -> bool {
        match self.lock().get_mut(subject) {
            Some(s) if s.id == id => {
                s.seq = seq;
                true
            }
            _ => false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}
