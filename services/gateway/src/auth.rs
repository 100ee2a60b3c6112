//! Client authentication: HS256 JWTs from `Authorization: Bearer` or `access_token`.
//!
//! The user id is the claim `userId` (string or number), else `sub`, else the ASP.NET
//! name-identifier claim, and must pass the one-token rule before any subject is
//! built from it. `exp` is required; `alg: none` and every other algorithm are refused
//! because only HS256 is in the validation's algorithm list.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use ziraai_proto::{InvalidId, UserId};

/// The ASP.NET Core `ClaimTypes.NameIdentifier` claim.
pub const NAME_IDENTIFIER_CLAIM: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier";
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The ASP.NET Core `ClaimTypes.Role` claim.
pub const ROLE_CLAIM: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

/// Who a valid token names.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: UserId,
    /// Roles from the claims `role`, `roles` and the ASP.NET role claim.
    pub roles: Vec<String>,
}

impl Identity {
    /// Whether the token carries the `Admin` role (case-insensitive).
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case("admin"))
    }
}

/// Why a request was not authenticated. Each kind has a stable `code` for clients.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send Authorization: Bearer <jwt> or ?access_token=<jwt>")]
    Missing,
    #[error("token is malformed")]
    Malformed,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token algorithm is not accepted (HS256 only)")]
    BadAlgorithm,
    #[error("token has no exp claim")]
    MissingExp,
    #[error("token names no user (claim userId, sub or nameidentifier)")]
    NoUserId,
    #[error("token's user id {0}")]
    BadUserId(InvalidId),
}

impl AuthError {
    /// Machine-readable code sent in the 401 body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Malformed => "token_malformed",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::BadSignature => "token_bad_signature",
            Self::BadAlgorithm => "token_bad_algorithm",
            Self::MissingExp => "token_missing_exp",
            Self::NoUserId => "token_no_user",
            Self::BadUserId(_) => "token_bad_user_id",
        }
    }
}

/// Verifies tokens with the configured secret.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // Audience and issuer are not part of the contract (yet): accept any.
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
        }
    }

    /// Verifies `token` and extracts the user.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // jsonwebtoken cannot even parse a header naming an algorithm it does not know
        // (`none`), which it reports as malformed; name the real problem instead.
        if let Some(alg) = header_alg(token)
            && alg != "HS256"
        {
            return Err(AuthError::BadAlgorithm);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::BadAlgorithm
            }
            ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingExp,
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        let raw = ["userId", "sub", NAME_IDENTIFIER_CLAIM]
            .iter()
            .find_map(|k| match claims.get(*k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .ok_or(AuthError::NoUserId)?;
        let user_id = UserId::parse(&raw).map_err(AuthError::BadUserId)?;
        let roles = ["role", "roles", ROLE_CLAIM]
            .iter()
            .filter_map(|k| claims.get(*k))
            .flat_map(|v| match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        Ok(Identity { user_id, roles })
    }
}

/// The `alg` of a JWT's header, if the header decodes.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_owned)
}

/// Finds the bearer token of a request: the `Authorization` header wins over the query.
pub fn token_from(authorization: Option<&str>, access_token: Option<&str>) -> Option<String> {
    let header = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_owned())
    });
    header
        .filter(|t| !t.is_empty())
        .or_else(|| access_token.filter(|t| !t.is_empty()).map(str::to_owned))
}

/// Mints an HS256 token for `user` valid for `ttl_secs` (demo page, tools, tests).
pub fn mint(secret: &SecretString, user: &str, ttl_secs: i64) -> String {
    mint_with_roles(secret, user, ttl_secs, &[])
}

/// Like [`mint`], with `roles` in the `role` claim.
pub fn mint_with_roles(secret: &SecretString, user: &str, ttl_secs: i64, roles: &[&str]) -> String {
    let exp = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .saturating_add(ttl_secs);
    let claims = json!({ "userId": user, "exp": exp, "role": roles });
    // HS256 with an in-memory key over a JSON object cannot fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("test-secret-test-secret-test-secret")
    }

    fn sign(claims: Value, key: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("encode")
    }

    fn later() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp() + 600
    }

    #[test]
    fn user_id_claims_in_order_of_preference() {
        let auth = Authenticator::new(&secret());
        let key = "test-secret-test-secret-test-secret";
        let cases = [
            (json!({"userId": "u1", "sub": "s", "exp": later()}), "u1"),
            (json!({"userId": 42, "exp": later()}), "42"),
            (json!({"sub": "s-1", "exp": later()}), "s-1"),
            (json!({NAME_IDENTIFIER_CLAIM: "n_1", "exp": later()}), "n_1"),
        ];
        for (claims, want) in cases {
            let id = auth.verify(&sign(claims, key)).expect("valid");
            assert_eq!(id.user_id.as_str(), want);
        }
        assert_eq!(
            auth.verify(&mint(&secret(), "m", 60))
                .expect("minted")
                .user_id
                .as_str(),
            "m"
        );
    }

    #[test]
    fn refusals_carry_distinct_codes() {
        let auth = Authenticator::new(&secret());
        let key = "test-secret-test-secret-test-secret";
        let past = time::OffsetDateTime::now_utc().unix_timestamp() - 3600;
        let none_alg = {
            // {"alg":"none","typ":"JWT"} . {"userId":"u","exp":…} . (empty signature)
            use base64_url as b;
            format!(
                "{}.{}.",
                b("{\"alg\":\"none\",\"typ\":\"JWT\"}"),
                b(&format!("{{\"userId\":\"u\",\"exp\":{}}}", later()))
            )
        };
        let cases: Vec<(String, &str)> = vec![
            ("garbage".into(), "token_malformed"),
            (
                sign(json!({"userId": "u", "exp": past}), key),
                "token_expired",
            ),
            (sign(json!({"userId": "u"}), key), "token_missing_exp"),
            (
                sign(json!({"userId": "u", "exp": later()}), "wrong-key"),
                "token_bad_signature",
            ),
            (none_alg, "token_bad_algorithm"),
            (sign(json!({"exp": later()}), key), "token_no_user"),
            (
                sign(json!({"userId": "42.>", "exp": later()}), key),
                "token_bad_user_id",
            ),
            (
                sign(json!({"userId": "*", "exp": later()}), key),
                "token_bad_user_id",
            ),
            (
                sign(json!({"userId": "a b", "exp": later()}), key),
                "token_bad_user_id",
            ),
        ];
        for (token, code) in cases {
            let err = auth.verify(&token).expect_err(code);
            assert_eq!(err.code(), code, "{err}");
        }
    }

    /// Minimal base64url without padding, for hand-made tokens.
    fn base64_url(s: &str) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn token_sources() {
        assert_eq!(
            token_from(Some("Bearer abc"), Some("q")),
            Some("abc".into())
        );
        assert_eq!(token_from(Some("bearer  abc "), None), Some("abc".into()));
        assert_eq!(token_from(Some("Basic x"), Some("q")), Some("q".into()));
        assert_eq!(token_from(None, Some("")), None);
        assert_eq!(token_from(None, None), None);
    }
}
