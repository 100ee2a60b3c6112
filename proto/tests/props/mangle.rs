//! Damage done to valid encodings: truncation, flipped bytes, inserted and removed bytes.

use proptest::prelude::*;

/// One way to damage an encoding; indexes are reduced modulo the length at use.
#[derive(Debug, Clone)]
pub(crate) enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

/// Up to four damages of any kind.
pub(crate) fn damages() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1..=u8::MAX).prop_map(|(i, x)| Damage::Flip(i, x)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<usize>().prop_map(Damage::Remove),
    ];
    prop::collection::vec(one, 1..4)
}

/// Applies `damages` to a copy of `bytes`.
pub(crate) fn apply(bytes: &[u8], damages: &[Damage]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for d in damages {
        let len = out.len();
        match *d {
            Damage::Truncate(i) => out.truncate(i % (len + 1)),
            Damage::Flip(i, x) if len > 0 => out[i % len] ^= x,
            Damage::Insert(i, b) => out.insert(i % (len + 1), b),
            Damage::Remove(i) if len > 0 => {
                out.remove(i % len);
            }
            _ => {}
        }
    }
    out
}
