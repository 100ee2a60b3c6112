//! The user's socket keys, read with one batched direct get (`multi_last` over
//! `$KV.CONNS.u.<userId>.*.*`): answered by the stream itself, like every other direct
//! get, and not by nats-server's JetStream API workers. A subject-filtered STREAM.INFO
//! (what this replaced) waits in the API queue, a few workers for every request of the
//! server; in a reconnect storm thousands of handshakes queued there, waited longer than
//! their clients, and the clients' retries queued more (issue 12).
//!
//! Each answer carries the key's stream sequence (registration order), so ordering the
//! entries needs no second read. Deleted keys (their message removed) are not listed.

use std::time::Duration;

use async_nats::StatusCode;
use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use futures_util::StreamExt;

use super::LimitError;

/// Most keys one user can have listed at once; nats-server answers a batch of more
/// with 413, and the caller falls back to the subject-filtered stream info.
pub(super) const MAX_KEYS: usize = 1024;

/// A direct-get batch request for the last message of every subject under `filter`.
#[derive(serde::Serialize)]
struct MultiLast<'a> {
    multi_last: [&'a str; 1],
    batch: usize,
}

/// What one listing found.
#[derive(Debug, PartialEq)]
pub(super) enum Listed {
    /// Every key under the filter, with its stream sequence.
    Keys(Vec<(String, u64)>),
    /// More keys than one batch answers.
    TooMany,
}

/// Lists the keys under `filter` in `stream` within `timeout`.
pub(super) async fn multi_last(
    client: &async_nats::Client,
    stream: &str,
    filter: &str,
    timeout: Duration,
) -> Result<Listed, LimitError> {
    let inbox = client.new_inbox();
    let read = async {
        // Subscribed before the request goes out (same connection, in order).
        let mut replies = client.subscribe(inbox.clone()).await?;
        let body = serde_json::to_vec(&MultiLast {
            multi_last: [filter],
            batch: MAX_KEYS,
        })?;
        client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                inbox,
                Bytes::from(body),
            )
            .await?;
        let mut keys = Vec::new();
        while let Some(m) = replies.next().await {
            match answer(m)? {
                Part::Key(subject, seq) => keys.push((subject, seq)),
                Part::End => return Ok(Listed::Keys(keys)),
                Part::TooMany => return Ok(Listed::TooMany),
            }
        }
        Err("the reply subscription ended".into())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => {
            r.map_err(|e: async_nats::Error| LimitError(format!("list the user's sockets: {e}")))
        }
        Err(_) => Err(LimitError("list the user's sockets: timed out".into())),
    }
}

/// One message of a batch answer.
#[derive(Debug, PartialEq)]
enum Part {
    Key(String, u64),
    /// End of the batch (204), or nothing matched (404).
    End,
    /// 413: more than the batch.
    TooMany,
}

fn answer(m: async_nats::Message) -> Result<Part, async_nats::Error> {
    match m.status.map(|s| s.as_u16()) {
        // An end of batch with keys still pending: the batch was cut short.
        Some(204) if pending(&m) => return Ok(Part::TooMany),
        Some(204 | 404) => return Ok(Part::End),
        Some(413) => return Ok(Part::TooMany),
        _ => {}
    }
    match m.status {
        Some(s) if s != StatusCode::OK => {
            let why = m.description.as_deref().unwrap_or("no description");
            return Err(format!("direct get answered {s}: {why}").into());
        }
        _ => {}
    }
    let m = StreamMessage::try_from(m)?;
    Ok(Part::Key(m.subject.to_string(), m.sequence))
}

/// Whether an end-of-batch message says more keys were left out.
fn pending(m: &async_nats::Message) -> bool {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Num-Pending"))
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::HeaderMap;

    fn status(code: u16, why: &str) -> async_nats::Message {
        async_nats::Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: Bytes::new(),
            headers: None,
            status: StatusCode::from_u16(code).ok(),
            description: Some(why.into()),
            length: 0,
        }
    }

    #[test]
    fn a_key_carries_its_subject_and_sequence() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Stream", "KV_CONNS");
        h.insert("Nats-Subject", "$KV.CONNS.u.alice.gw-1.c1");
        h.insert("Nats-Sequence", "42");
        h.insert("Nats-Time-Stamp", "2026-11-26T10:00:00.000000000Z");
        h.insert("Nats-Num-Pending", "1");
        let m = async_nats::Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: Bytes::from_static(b"{}"),
            headers: Some(h),
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(
            answer(m).expect("a key"),
            Part::Key("$KV.CONNS.u.alice.gw-1.c1".into(), 42)
        );
    }

    #[test]
    fn end_of_batch_none_found_too_many_and_errors() {
        assert_eq!(answer(status(204, "EOB")).expect("end"), Part::End);
        assert_eq!(
            answer(status(404, "Message Not Found")).expect("end"),
            Part::End
        );
        assert_eq!(
            answer(status(413, "Too Many Results")).expect("413"),
            Part::TooMany
        );
        assert!(answer(status(408, "Request Timeout")).is_err());
        let mut cut = status(204, "EOB");
        let mut h = HeaderMap::new();
        h.insert("Nats-Num-Pending", "3");
        cut.headers = Some(h);
        assert_eq!(answer(cut).expect("cut short"), Part::TooMany);
        let mut all = status(204, "EOB");
        let mut h = HeaderMap::new();
        h.insert("Nats-Num-Pending", "0");
        all.headers = Some(h);
        assert_eq!(answer(all).expect("all"), Part::End);
    }
}
