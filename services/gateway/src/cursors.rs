//! Device cursors: the last sequence each (user, device) acknowledged, in the KV
//! bucket `CURSORS` (key `<userId>.<deviceId>`, value the sequence in decimal).
//!
//! A cursor only moves forward: writes are compare-and-set on the key's revision, so
//! two gateways (or a socket and an HTTP ack) racing on one device keep the highest.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use ziraai_common::nats::CURSORS_BUCKET;
use ziraai_proto::{DeviceId, UserId};

/// Bound of one KV operation.
const KV_TIMEOUT: Duration = Duration::from_secs(3);
/// Compare-and-set attempts before giving up on one write.
const CAS_ATTEMPTS: usize = 5;

/// Why a cursor could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cursor store: {0}")]
pub struct CursorError(String);

/// The `CURSORS` bucket.
///
/// Shared, not copied: every socket with a device holds one, and a `kv::Store` carries
/// the bucket's stream info (about 1.5 KB).
#[derive(Clone)]
pub struct Cursors {
    kv: Arc<kv::Store>,
}

fn key(user: &UserId, device: &DeviceId) -> String {
    format!("{user}.{device}")
}

fn parse(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, CursorError> {
    match tokio::time::timeout(KV_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|e| CursorError(format!("{what}: {e}"))),
        Err(_) => Err(CursorError(format!("{what}: timed out"))),
    }
}

impl Cursors {
    /// Binds the bucket (its stream is applied from `nats/streams/KV_CURSORS.json`).
    pub async fn new(js: &jetstream::Context) -> Result<Self, CursorError> {
        let kv = bounded("bind bucket", js.get_key_value(CURSORS_BUCKET)).await?;
        Ok(Self { kv: Arc::new(kv) })
    }

    /// The stored cursor of a device, if any.
    pub async fn get(&self, user: &UserId, device: &DeviceId) -> Result<Option<u64>, CursorError> {
        let entry = bounded("read", self.kv.entry(key(user, device))).await?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| parse(&e.value)))
    }

    /// Moves the cursor to `seq` unless it is already there or beyond; returns the
    /// cursor after the call.
    pub async fn advance(
        &self,
        user: &UserId,
        device: &DeviceId,
        seq: u64,
    ) -> Result<u64, CursorError> {
        let k = key(user, device);
        let value = Bytes::from(seq.to_string());
        for _ in 0..CAS_ATTEMPTS {
            let current = bounded("read", self.kv.entry(k.clone())).await?;
            let written = match current {
                Some(e) if e.operation == kv::Operation::Put => {
                    let stored = parse(&e.value).unwrap_or(0);
                    if stored >= seq {
                        return Ok(stored);
                    }
                    match tokio::time::timeout(
                        KV_TIMEOUT,
                        self.kv.update(&k, value.clone(), e.revision),
                    )
                    .await
                    {
                        Ok(Ok(_)) => true,
                        Ok(Err(err)) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                            false
                        }
                        Ok(Err(err)) => return Err(CursorError(format!("update: {err}"))),
                        Err(_) => return Err(CursorError("update: timed out".into())),
                    }
                }
                _ => {
                    match tokio::time::timeout(KV_TIMEOUT, self.kv.create(&k, value.clone())).await
                    {
                        Ok(Ok(_)) => true,
                        Ok(Err(err)) if err.kind() == kv::CreateErrorKind::AlreadyExists => false,
                        Ok(Err(err)) => return Err(CursorError(format!("create: {err}"))),
                        Err(_) => return Err(CursorError("create: timed out".into())),
                    }
                }
            };
            if written {
                return Ok(seq);
            }
        }
        Err(CursorError(format!("{k}: too many concurrent writers")))
    }
}
