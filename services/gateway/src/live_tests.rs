//! The doorbell reader over an in-memory stream: what is delivered, in which order,
//! and which doorbells count as forged.

use std::sync::Mutex;

use async_nats::HeaderMap;
use bytes::Bytes;

use super::*;

/// A user's stored events: (sequence, body).
#[derive(Default)]
struct Memory(Mutex<Vec<(u64, Bytes)>>);

impl Memory {
    fn store(&self, seq: u64, body: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((seq, Bytes::from(body.to_owned())));
    }
}

impl Source for Arc<Memory> {
    async fn next_stored(&self, after: u64) -> Result<Option<Stored>, StoreError> {
        let stored = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(stored
            .iter()
            .find(|(s, _)| *s > after)
            .map(|(seq, body)| Stored {
                event: Event::decode(*seq, 0, None, body),
                payload: body.clone(),
            }))
    }
}

fn body(n: u64) -> String {
    format!(r#"{{"kind":"a.b","data":{{"n":{n}}}}}"#)
}

/// A message on `live.u1` with these `Nats-Sequence` values (in order) and body.
fn doorbell(seqs: &[u64], body: &str) -> async_nats::Message {
    let mut h = HeaderMap::new();
    for s in seqs {
        h.append("Nats-Sequence", s.to_string().as_str());
    }
    async_nats::Message {
        subject: "live.u1".into(),
        reply: None,
        payload: Bytes::from(body.to_owned()),
        headers: (!seqs.is_empty()).then_some(h),
        status: None,
        description: None,
        length: 0,
    }
}

fn reader(mem: &Arc<Memory>, last: u64) -> (LiveReader<Arc<Memory>>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let user = UserId::parse("u1").unwrap_or_else(|e| panic!("{e}"));
    (
        LiveReader::with_source(mem.clone(), user, stats.clone(), last),
        stats,
    )
}

fn forged(stats: &Stats) -> u64 {
    stats.forged.load(Ordering::Relaxed)
}

/// Runs the reader's retries until nothing waits; returns how many ran.
async fn settle(r: &mut LiveReader<Arc<Memory>>, out: &mut Vec<(u64, u64)>) -> usize {
    let mut n = 0;
    while r.retry_at().is_some() {
        r.retry(&mut |e: Event| out.push((e.seq, e.last_seq))).await;
        n += 1;
        assert!(n < 20, "retries never end");
    }
    n
}

#[tokio::test]
async fn real_doorbells_deliver_stored_events_with_server_sequences() {
    let mem = Arc::new(Memory::default());
    let (mut r, stats) = reader(&mem, 2);
    let mut out = Vec::new();
    mem.store(3, &body(3));
    mem.store(7, &body(7));
    // The producer's own Nats-Sequence comes first; the server's is last.
    r.doorbell(&doorbell(&[999, 3], &body(3)), &mut |e: Event| {
        out.push((e.seq, e.last_seq))
    })
    .await;
    r.doorbell(&doorbell(&[7], &body(7)), &mut |e: Event| {
        out.push((e.seq, e.last_seq))
    })
    .await;
    assert_eq!(
        out,
        [(3, 2), (7, 3)],
        "server sequences, previous of the user"
    );
    assert_eq!((forged(&stats), r.retry_at()), (0, None));
}

#[tokio::test]
async fn forged_doorbells_deliver_nothing_and_are_counted() {
    let mem = Arc::new(Memory::default());
    mem.store(1, &body(1));
    let (mut r, stats) = reader(&mem, 0);
    let mut out = Vec::new();
    let mut deliver = |e: Event| out.push((e.seq, e.last_seq));
    r.doorbell(&doorbell(&[1], &body(1)), &mut deliver).await;
    // Behind with other content, no header at all, the next sequence with fake content.
    r.doorbell(&doorbell(&[1], "fake"), &mut deliver).await;
    r.doorbell(&doorbell(&[], &body(2)), &mut deliver).await;
    r.doorbell(&doorbell(&[2], "fake"), &mut deliver).await;
    assert_eq!(forged(&stats), 2);
    mem.store(2, &body(2));
    r.doorbell(&doorbell(&[2], &body(2)), &mut deliver).await;
    // Far ahead: retried, then counted; the real event meanwhile went out once.
    r.doorbell(&doorbell(&[u64::MAX - 1], &body(9)), &mut deliver)
        .await;
    settle(&mut r, &mut out).await;
    assert_eq!(out, [(1, 0), (2, 1)]);
    assert_eq!(forged(&stats), 4, "fake next, then far ahead");
}

#[tokio::test]
async fn a_doorbell_ahead_of_a_lagging_replica_waits_for_its_event() {
    let mem = Arc::new(Memory::default());
    let (mut r, stats) = reader(&mem, 0);
    let mut out = Vec::new();
    r.doorbell(&doorbell(&[1], &body(1)), &mut |e: Event| {
        out.push((e.seq, e.last_seq))
    })
    .await;
    assert!(out.is_empty() && r.retry_at().is_some(), "not readable yet");
    mem.store(1, &body(1));
    settle(&mut r, &mut out).await;
    assert_eq!((out, forged(&stats)), (vec![(1, 0)], 0));
}

#[tokio::test]
async fn lost_doorbells_are_read_through_and_late_ones_repeat_nothing() {
    let mem = Arc::new(Memory::default());
    let (mut r, stats) = reader(&mem, 0);
    for s in 1..=3 {
        mem.store(s, &body(s));
    }
    let mut out = Vec::new();
    let mut deliver = |e: Event| out.push((e.seq, e.last_seq));
    r.doorbell(&doorbell(&[3], &body(3)), &mut deliver).await;
    r.doorbell(&doorbell(&[1], &body(1)), &mut deliver).await;
    r.doorbell(&doorbell(&[2], &body(2)), &mut deliver).await;
    assert_eq!(out, [(1, 0), (2, 1), (3, 2)]);
    assert_eq!(forged(&stats), 0, "late real doorbells are not forged");
    assert_eq!(stats.gaps.load(Ordering::Relaxed), 1);
    mem.store(4, &body(4));
    r.resync(&mut |e: Event| out.push((e.seq, e.last_seq)))
        .await;
    assert_eq!(out.last(), Some(&(4, 3)), "a resync reads to the end");
}

#[tokio::test]
async fn the_doorbell_of_the_event_a_reader_started_at_is_real_not_forged() {
    // Stored between the subscription and the reader's start: the start read it.
    let mem = Arc::new(Memory::default());
    mem.store(5, &body(5));
    let (mut r, stats) = reader(&mem, 5);
    r.remember(5, body(5).as_bytes());
    let mut out = Vec::new();
    r.doorbell(&doorbell(&[5], &body(5)), &mut |e: Event| {
        out.push((e.seq, e.last_seq))
    })
    .await;
    assert_eq!(forged(&stats), 0, "a real late doorbell");
    assert!(
        out.is_empty(),
        "the socket's replay delivers it, not the reader"
    );
    // The same sequence with another body is still a forgery.
    r.doorbell(&doorbell(&[5], "fake"), &mut |e: Event| {
        out.push((e.seq, e.last_seq))
    })
    .await;
    assert_eq!(forged(&stats), 1);
    assert!(out.is_empty());
}
