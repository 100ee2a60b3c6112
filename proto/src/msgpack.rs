//! The one MessagePack decoder every inbound path uses (client frames, hub messages,
//! envelopes), with the nesting limit of `serde_json`.
//!
//! `rmp_serde::from_slice` allows 1,024 nested arrays or maps, and decoding about 700 of
//! them into a `serde_json::Value` already overflows a 2 MiB thread stack in a debug
//! build: one 1 KiB binary frame aborted the whole process. With the JSON limit a
//! MessagePack value is also never deeper than what the JSON side accepts, so an event
//! published as MessagePack can always be delivered to JSON clients.

use serde::de::DeserializeOwned;

/// Deepest nesting of arrays and maps accepted, counted as `serde_json` counts it (its
/// recursion limit of 128 lets 127 levels through).
pub const MAX_DEPTH: usize = 128;

/// Decodes MessagePack with at most [`MAX_DEPTH`] levels of nesting. Like
/// `rmp_serde::from_slice`, bytes after the first value are ignored.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x91; depth];
        bytes.push(0xc0);
        bytes
    }

    #[test]
    fn nesting_is_bounded_as_in_json() {
        let json = |depth: usize| {
            let text = "[".repeat(depth) + "null" + &"]".repeat(depth);
            serde_json::from_str::<Value>(&text).is_ok()
        };
        for depth in [1, 100, MAX_DEPTH - 1, MAX_DEPTH, 1_000, 100_000] {
            assert_eq!(
                from_slice::<Value>(&nested(depth)).is_ok(),
                json(depth),
                "{depth}"
            );
        }
        assert!(from_slice::<Value>(&nested(MAX_DEPTH - 1)).is_ok());
        assert!(matches!(
            from_slice::<Value>(&nested(1_000)),
            Err(rmp_serde::decode::Error::DepthLimitExceeded)
        ));
    }
}
