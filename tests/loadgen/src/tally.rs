//! Delivery accounting: what each client received, by phase.
//!
//! Every event's analysis id is `lg_<phase>_<publish unix ns>_<n>` ([`event_id`]), so a
//! client process knows, from the event alone, which phase it belongs to and its
//! publish-to-receive latency (clocks are the same machine's). Per client and phase it
//! keeps the event numbers received (SignalR deliveries carry no stream sequence, so the
//! number in the id, unique within a phase, identifies an event): one seen before is a
//! duplicate. The
//! parent knows how many events of each user were acknowledged by JetStream, so lost =
//! expected − distinct, per client ([`lost_and_extra`]).

use std::collections::{HashMap, HashSet};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, 1 µs to 10 min, 3 significant digits.
const HIST_MAX_US: u64 = 600_000_000;

/// The analysis id of the `n`th event of `phase`, published at `unix_ns`.
pub(crate) fn event_id(phase: &str, unix_ns: u64, n: u64) -> String {
    format!("lg_{phase}_{unix_ns}_{n}")
}

/// (phase, publish unix ns, n) of an id made by [`event_id`].
pub(crate) fn parse_event_id(id: &str) -> Option<(&str, u64, u64)> {
    let rest = id.strip_prefix("lg_")?;
    let mut parts = rest.rsplitn(3, '_');
    let n = parts.next()?.parse().ok()?;
    let ns = parts.next()?.parse().ok()?;
    let phase = parts.next()?;
    Some((phase, ns, n))
}

/// A latency histogram in microseconds.
#[derive(Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // The bounds are constants that hdrhistogram accepts (1 ≤ low, high ≥ 2·low, 3 digits).
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds");
        Self(h)
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Latency(n={})", self.0.len())
    }
}

impl Latency {
    pub(crate) fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, HIST_MAX_US));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    /// The value at quantile `q` (0..=1), in milliseconds; `None` when empty.
    pub(crate) fn ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    pub(crate) fn max_ms(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.max() as f64 / 1000.0)
    }

    /// Non-empty buckets as (value µs, count), to travel as JSON.
    pub(crate) fn buckets(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    pub(crate) fn from_buckets(buckets: &[(u64, u64)]) -> Self {
        let mut h = Self::default();
        for &(v, n) in buckets {
            let _ = h.0.record_n(v.clamp(1, HIST_MAX_US), n);
        }
        h
    }

    pub(crate) fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }
}

/// What one client process received in one phase, per client (local index).
#[derive(Debug, Default)]
pub(crate) struct PhaseTally {
    /// Event numbers received, per client (an empty set allocates nothing).
    seen: Vec<HashSet<u64>>,
    pub(crate) duplicates: u64,
    pub(crate) latency: Latency,
}

impl PhaseTally {
    fn new(clients: usize) -> Self {
        Self {
            seen: vec![HashSet::new(); clients],
            ..Self::default()
        }
    }

    /// Records delivery of event `n` to `client`; latency from `published_ns` to
    /// `received_ns`.
    fn record(&mut self, client: usize, n: u64, published_ns: u64, received_ns: u64) {
        let Some(seen) = self.seen.get_mut(client) else {
            return;
        };
        if !seen.insert(n) {
            self.duplicates += 1;
            return;
        }
        self.latency
            .record_us(received_ns.saturating_sub(published_ns) / 1000);
    }

    pub(crate) fn distinct_total(&self) -> u64 {
        self.seen.iter().map(|s| s.len() as u64).sum()
    }

    pub(crate) fn to_wire(&self) -> WireTally {
        WireTally {
            distinct: self.seen.iter().map(|s| s.len() as u32).collect(),
            duplicates: self.duplicates,
            buckets: self.latency.buckets(),
        }
    }
}

/// Every phase's tally in one client process.
#[derive(Debug)]
pub(crate) struct Tallies {
    clients: usize,
    phases: HashMap<String, PhaseTally>,
    /// Deliveries whose id is not a load generator's.
    pub(crate) foreign: u64,
}

impl Tallies {
    pub(crate) fn new(clients: usize) -> Self {
        Self {
            clients,
            phases: HashMap::new(),
            foreign: 0,
        }
    }

    /// Records a delivery of `analysis_id` to local client `client`.
    pub(crate) fn record(&mut self, client: usize, analysis_id: &str, received_ns: u64) {
        let Some((phase, published_ns, n)) = parse_event_id(analysis_id) else {
            self.foreign += 1;
            return;
        };
        let clients = self.clients;
        self.phases
            .entry(phase.to_owned())
            .or_insert_with(|| PhaseTally::new(clients))
            .record(client, n, published_ns, received_ns);
    }

    /// The tally of `phase` (empty when nothing arrived).
    pub(crate) fn phase(&self, phase: &str) -> WireTally {
        self.phases
            .get(phase)
            .map(PhaseTally::to_wire)
            .unwrap_or_else(|| PhaseTally::new(self.clients).to_wire())
    }

    pub(crate) fn distinct(&self, phase: &str) -> u64 {
        self.phases.get(phase).map_or(0, PhaseTally::distinct_total)
    }
}

/// A phase's tally as a client process reports it (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WireTally {
    /// Distinct events received, per client (in the process's client order).
    pub(crate) distinct: Vec<u32>,
    pub(crate) duplicates: u64,
    pub(crate) buckets: Vec<(u64, u64)>,
}

/// (lost, extra) given what each client received and what each should have received:
/// lost = Σ max(0, expected − distinct), extra = Σ max(0, distinct − expected) (an
/// event stored although its PubAck failed).
pub(crate) fn lost_and_extra(distinct: &[u32], expected: impl Fn(usize) -> u64) -> (u64, u64) {
    let mut lost = 0;
    let mut extra = 0;
    for (client, &got) in distinct.iter().enumerate() {
        let want = expected(client);
        let got = u64::from(got);
        lost += want.saturating_sub(got);
        extra += got.saturating_sub(want);
    }
    (lost, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_phase_and_publish_time() {
        let id = event_id("d_20000", 1_764_000_000_123_456_789, 42);
        assert_eq!(id, "lg_d_20000_1764000000123456789_42");
        assert_eq!(
            parse_event_id(&id),
            Some(("d_20000", 1_764_000_000_123_456_789, 42))
        );
        assert_eq!(parse_event_id("a-1"), None);
        assert_eq!(parse_event_id("lg_x_notanumber_1"), None);
    }

    #[test]
    fn repeated_events_are_duplicates_not_deliveries() {
        let mut t = Tallies::new(2);
        let id = |ns, n| event_id("a", ns, n);
        t.record(0, &id(1_000, 5), 3_000_000); // 2.999 ms
        t.record(0, &id(1_000, 5), 4_000_000); // the same event again
        t.record(0, &id(2_000, 7), 3_000_000);
        t.record(0, &id(2_000, 7), 3_000_000); // again, after a resume
        t.record(1, &id(2_000, 7), 3_000_000);
        t.record(1, "someone-else", 0);
        t.record(9, &id(0, 1), 0); // not a client of this process: ignored
        let w = t.phase("a");
        assert_eq!(w.distinct, vec![2, 1]);
        assert_eq!(w.duplicates, 2);
        assert_eq!(t.foreign, 1);
        assert_eq!(t.distinct("a"), 3);
        assert_eq!(t.distinct("b"), 0);
        assert_eq!(t.phase("b").distinct, vec![0, 0]);
        let h = Latency::from_buckets(&w.buckets);
        assert_eq!(h.len(), 3);
        let p50 = h.ms(0.5).expect("recorded");
        assert!((2.99..3.01).contains(&p50), "{p50}");
    }

    #[test]
    fn lost_and_extra_compare_each_client_with_its_user() {
        // Clients 0 and 1 share a user with 3 events; client 2's user had 1.
        let expected = |c: usize| if c < 2 { 3 } else { 1 };
        assert_eq!(lost_and_extra(&[3, 3, 1], expected), (0, 0));
        assert_eq!(lost_and_extra(&[2, 3, 0], expected), (2, 0));
        assert_eq!(lost_and_extra(&[3, 4, 1], expected), (0, 1));
    }

    #[test]
    fn histograms_merge_through_their_buckets() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        for us in [100, 200, 300] {
            a.record_us(us);
        }
        b.record_us(10_000);
        a.add(&Latency::from_buckets(&b.buckets()));
        assert_eq!(a.len(), 4);
        assert!(a.max_ms().expect("recorded") >= 9.99);
        assert_eq!(Latency::default().ms(0.99), None);
    }
}
