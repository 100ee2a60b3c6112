//! Wire types and codecs of ZiraAI Realtime.
//!
//! This crate owns everything two programs must agree on byte for byte: the event
//! envelope producers publish to `notify.<userId>`, the frames of the native
//! WebSocket protocol, the analysis event payloads, and the rule that turns a user id
//! into NATS subjects. It does no I/O and knows nothing of tokio, so producers,
//! gateways and tests share one definition.

pub mod analysis;
pub mod envelope;
pub mod frames;
pub mod ids;
pub mod msgpack;
pub mod signalr;

pub use envelope::{Envelope, EnvelopeError, PayloadEncoding};
pub use frames::{ClientFrame, ClientFrameError, EventFrame, Protocol, ServerFrame};
pub use ids::{DeviceId, InvalidId, UserId};

/// Envelope format version, sent by the worker in the `Ziraai-Envelope` header so a
/// later incompatible envelope can be told apart without guessing from the body.
pub const ENVELOPE_VERSION: &str = "1";

/// NATS header names used on `notify.*` messages.
pub mod headers {
    /// The event kind, duplicated from the envelope so operators can filter on it.
    pub const KIND: &str = "Ziraai-Kind";
    /// Envelope format version (see [`crate::ENVELOPE_VERSION`]).
    pub const ENVELOPE: &str = "Ziraai-Envelope";
    /// `application/json` (default) or `application/msgpack`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// W3C trace context of the producer.
    pub const TRACEPARENT: &str = "traceparent";
}
