//! ZiraAI Realtime worker: consumes analysis jobs ([`WorkerApp`]) and publishes their
//! outcomes to the `NOTIFY` stream through a [`Publisher`], which refuses an event a
//! gateway could not decode and reports PubAck duplicates.

pub mod analyzer;
pub mod app;
pub mod breaker;
pub mod demo;
pub mod dev_analyzer;
pub mod job;
pub mod metrics;
mod pending;
mod publisher;
mod runner;

pub use app::{WorkerApp, WorkerProbe};
pub use publisher::{
    CheckedEvent, INITIAL_BACKOFF, InvalidEvent, MAX_BACKOFF, PendingPublish, Pipeline,
    PublishError, Published, Publisher, RETRY_WINDOW,
};
pub use runner::Counters;
