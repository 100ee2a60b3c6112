//! The native in-band refresh: a client frame `{"type":"auth","token":"<jwt>"}`.
//!
//! A valid token for the socket's own user moves the socket's expiry to the new
//! token's `exp` (plus the leeway) and is answered with `{"type":"authenticated",
//! "expiresAt":"<RFC 3339>"}`. Any other token closes the socket with 1008 after an
//! error frame carrying the same code as the HTTP 401 (`token_expired`,
//! `token_bad_signature`, …), or `token_other_user` for another user's token.

use std::sync::Arc;

use ziraai_proto::{Protocol, ServerFrame, UserId};

use super::{CloseReason, Inbound};
use crate::auth::Authenticator;
use crate::event::native_frame;

/// What a native socket needs to accept a fresh token.
#[derive(Clone)]
pub struct Refresh {
    pub auth: Arc<Authenticator>,
    /// The user the socket was opened for.
    pub user: UserId,
}

impl Refresh {
    /// The session's actions for one `auth` frame.
    pub(crate) fn handle(&self, token: &str, protocol: Protocol) -> Vec<Inbound> {
        let identity = match self.auth.verify_for(token, &self.user) {
            Ok(identity) => identity,
            Err(e) => {
                tracing::info!(user = %self.user, code = e.code(), "refresh refused; closing the socket");
                return vec![Inbound::Close(CloseReason::AuthRefused {
                    code: e.code(),
                    message: e.to_string(),
                })];
            }
        };
        let expires_at = time::OffsetDateTime::from_unix_timestamp(identity.expires_at)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        tracing::debug!(user = %self.user, %expires_at, "token refreshed");
        vec![
            Inbound::Reply(native_frame(
                &ServerFrame::Authenticated { expires_at },
                protocol,
            )),
            Inbound::Expiry(self.auth.deadline(&identity)),
        ]
    }
}
