//! Property-based tests of every decoder in `ziraai-proto`: arbitrary (and
//! arbitrary-but-plausible) bytes never panic and yield a typed error or a value; valid
//! values round-trip through the production encoders and decoders.
//!
//! `make test` runs proptest's default 256 cases per property; `make fuzz` runs the same
//! properties with `PROPTEST_CASES` raised (proptest reads it itself). A failure is
//! shrunk, printed, and its seed saved under `proto/proptest-regressions/` (committed:
//! each seed is replayed first on every later run).

mod envelope;
mod frames;
mod ids;
mod mangle;
mod signalr;
mod strategy;
