//! Connection tokens: what negotiate returns as `connectionToken` and the client sends
//! back as `?id=`. A compact HS256 JWT signed with the gateway secret (URL-safe, as the
//! JS client does not encode it), naming the connection and its user, so any gateway
//! can accept the WebSocket without shared state.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Audience that keeps connection tokens and user tokens apart.
const AUDIENCE: &str = "ziraai-signalr-connection";
/// How long a connection token is valid after negotiate.
pub(crate) const TTL_SECS: i64 = 3600;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ConnectionClaims {
    /// Public connection id (`connectionId`).
    pub(crate) cid: String,
    /// The user the token was issued to.
    pub(crate) uid: String,
    /// The connection negotiated stateful reconnect.
    #[serde(default)]
    pub(crate) sr: bool,
    aud: String,
    exp: i64,
}

/// Signs a connection token for `cid` of `uid`.
pub(crate) fn issue(secret: &SecretString, cid: &str, uid: &str, stateful: bool) -> String {
    let claims = ConnectionClaims {
        cid: cid.to_owned(),
        uid: uid.to_owned(),
        sr: stateful,
        aud: AUDIENCE.to_owned(),
        exp: time::OffsetDateTime::now_utc().unix_timestamp() + TTL_SECS,
    };
    // HS256 over an in-memory key and a plain struct cannot fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .unwrap_or_default()
}

/// Verifies a connection token; `None` if it is not one of ours or has expired.
pub(crate) fn verify(secret: &SecretString, token: &str) -> Option<ConnectionClaims> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "aud"]);
    jsonwebtoken::decode::<ConnectionClaims>(
        token,
        &DecodingKey::from_secret(secret.expose_secret().as_bytes()),
        &v,
    )
    .ok()
    .map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_url_safe() {
        let s = SecretString::from("a-secret-a-secret-a-secret-a-secret");
        let t = issue(&s, "cid1", "u1", true);
        assert!(
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{t}"
        );
        let c = verify(&s, &t).expect("valid");
        assert_eq!((c.cid.as_str(), c.uid.as_str(), c.sr), ("cid1", "u1", true));
        assert!(verify(&SecretString::from("other-secret-other-secret-other"), &t).is_none());
        assert!(verify(&s, "garbage").is_none());
        // A user token is not a connection token.
        assert!(verify(&s, &crate::auth::mint(&s, "u1", 60)).is_none());
    }
}
