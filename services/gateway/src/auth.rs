//! Client authentication: JWTs from `Authorization: Bearer` or `access_token`,
//! signed with the HS256 secret or (RS256 / ES256) with a key of
//! `ZIRAAI_JWT_PUBLIC_KEYS_FILE` ([`keys`]).
//!
//! The user id is the claim `userId` (string or number), else `sub`, else the ASP.NET
//! name-identifier claim, and must pass the one-token rule before any subject is
//! built from it. `exp` is required and may not lie further ahead than the configured
//! longest lifetime; `iss` and `aud` are required to match when configured. `alg:
//! none` and every algorithm but HS256, RS256 and ES256 are refused; an HS256 token is
//! checked only with the secret and an RS256/ES256 token only with a public key of
//! that algorithm, so a token cannot pick how it is checked.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use ziraai_common::config::{AuthConfig, DEFAULT_JWT_LEEWAY, DEFAULT_JWT_MAX_TTL};
use ziraai_proto::{InvalidId, UserId};

pub mod keys;

pub use keys::{KeySet, KeysError};

/// The ASP.NET Core `ClaimTypes.NameIdentifier` claim.
pub const NAME_IDENTIFIER_CLAIM: &str =
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier";

/// The ASP.NET Core `ClaimTypes.Role` claim.
pub const ROLE_CLAIM: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

/// The role the admin endpoints require, matched exactly (as ASP.NET's `IsInRole`).
pub const ADMIN_ROLE: &str = "Admin";

/// Who a valid token names.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: UserId,
    /// Roles from the claims `role`, `roles` and the ASP.NET role claim.
    pub roles: Vec<String>,
    /// The token's `exp` (Unix seconds).
    pub expires_at: i64,
}

impl Identity {
    /// Whether the token carries the `Admin` role (exact, case-sensitive match).
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
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
    #[error("token algorithm is not accepted (HS256, RS256 or ES256)")]
    BadAlgorithm,
    #[error("token has no exp claim")]
    MissingExp,
    #[error("token names no user (claim userId, sub or nameidentifier)")]
    NoUserId,
    #[error("token's user id {0}")]
    BadUserId(InvalidId),
    #[error("token's iss claim is missing or not the configured issuer")]
    BadIssuer,
    #[error("token's aud claim is missing or does not name the configured audience")]
    BadAudience,
    #[error("token's exp lies further ahead than the longest lifetime accepted ({0:?})")]
    TtlTooLong(Duration),
    #[error("no configured public key matches the token's alg and kid")]
    UnknownKey,
    #[error("the new token names another user than the socket's")]
    OtherUser,
}

impl AuthError {
    /// Machine-readable code sent in the 401 body (and in a refused refresh's error frame).
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
            Self::BadIssuer => "token_bad_issuer",
            Self::BadAudience => "token_bad_audience",
            Self::TtlTooLong(_) => "token_ttl_too_long",
            Self::UnknownKey => "token_unknown_key",
            Self::OtherUser => "token_other_user",
        }
    }
}

/// The claim rules besides the signature.
#[derive(Debug, Clone)]
pub struct Rules {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Longest time a token's `exp` may lie ahead.
    pub max_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`; a socket closes this long after `exp`.
    pub leeway: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            max_ttl: DEFAULT_JWT_MAX_TTL,
            leeway: DEFAULT_JWT_LEEWAY,
        }
    }
}

/// Verifies tokens with the configured secret and public keys.
pub struct Authenticator {
    secret: DecodingKey,
    keys: RwLock<Arc<KeySet>>,
    keys_file: Option<PathBuf>,
    rules: Rules,
}

impl Authenticator {
    /// HS256 only, default rules (tools and tests).
    pub fn new(secret: &SecretString) -> Self {
        Self::with_rules(secret, Rules::default(), KeySet::default())
    }

    pub fn with_rules(secret: &SecretString, rules: Rules, keys: KeySet) -> Self {
        Self {
            secret: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            keys: RwLock::new(Arc::new(keys)),
            keys_file: None,
            rules,
        }
    }

    /// The gateway's authenticator: reads the public key file if one is configured.
    pub fn from_config(config: &AuthConfig) -> Result<Self, KeysError> {
        let keys = match &config.public_keys_file {
            Some(path) => KeySet::load(path)?,
            None => KeySet::default(),
        };
        let rules = Rules {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            max_ttl: config.max_ttl,
            leeway: config.leeway,
        };
        let mut auth = Self::with_rules(&config.jwt_secret, rules, keys);
        auth.keys_file = config.public_keys_file.clone();
        Ok(auth)
    }

    /// Re-reads the public key file (SIGHUP). On error the current keys stay.
    /// Returns the number of keys now in use (`Ok(0)` without a file).
    pub fn reload_keys(&self) -> Result<usize, KeysError> {
        let Some(path) = &self.keys_file else {
            return Ok(0);
        };
        let keys = KeySet::load(path)?;
        let n = keys.len();
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        Ok(n)
    }

    fn key_set(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.rules.leeway.as_secs();
        v.validate_nbf = true;
        match &self.rules.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.rules.audience {
            Some(aud) => v.set_audience(&[aud]),
            // Without a configured audience, any `aud` is accepted.
            None => v.validate_aud = false,
        }
        // jsonwebtoken checks required claims in hash order; `iss` and `aud` are
        // required in `identity`, in a fixed order, so a refusal's code is stable.
        v.set_required_spec_claims(&["exp"]);
        v
    }

    /// Verifies `token` and extracts the user.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // jsonwebtoken cannot even parse a header naming an algorithm it does not know
        // (`none`), which it reports as malformed; name the real problem instead.
        let (alg, kid) = match header_alg(token) {
            Some((alg, kid)) => (alg, kid),
            None => (String::new(), None),
        };
        let claims = match alg.as_str() {
            "HS256" => self.decode(token, &self.secret, Algorithm::HS256)?,
            "RS256" | "ES256" => {
                let alg = if alg == "RS256" {
                    Algorithm::RS256
                } else {
                    Algorithm::ES256
                };
                let set = self.key_set();
                let candidates = set.candidates(alg, kid.as_deref());
                let mut result = Err(AuthError::UnknownKey);
                for k in candidates {
                    result = self.decode(token, &k.key, k.alg);
                    if !matches!(result, Err(AuthError::BadSignature)) {
                        break;
                    }
                }
                result?
            }
            "" => return Err(AuthError::Malformed),
            _ => return Err(AuthError::BadAlgorithm),
        };
        self.identity(&claims)
    }

    /// Verifies a token presented on an open socket of `user` (native `auth` frame).
    pub fn verify_for(&self, token: &str, user: &UserId) -> Result<Identity, AuthError> {
        let id = self.verify(token)?;
        if &id.user_id != user {
            return Err(AuthError::OtherUser);
        }
        Ok(id)
    }

    /// When a socket opened with `identity` must close: its `exp` plus the leeway.
    pub fn deadline(&self, identity: &Identity) -> tokio::time::Instant {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let end = Duration::from_secs(u64::try_from(identity.expires_at).unwrap_or(0))
            + self.rules.leeway;
        tokio::time::Instant::now() + end.saturating_sub(now)
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<Map<String, Value>, AuthError> {
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation(alg))
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::BadAlgorithm
                }
                ErrorKind::InvalidIssuer => AuthError::BadIssuer,
                ErrorKind::InvalidAudience => AuthError::BadAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingExp,
                _ => AuthError::Malformed,
            })
    }

    /// The user, roles and expiry of verified claims; refuses a too-long lifetime.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let expires_at = claims
            .get("exp")
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .ok_or(AuthError::MissingExp)?;
        if self.rules.issuer.is_some() && !claims.contains_key("iss") {
            return Err(AuthError::BadIssuer);
        }
        if self.rules.audience.is_some() && !claims.contains_key("aud") {
            return Err(AuthError::BadAudience);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let longest = self.rules.max_ttl + self.rules.leeway;
        if expires_at.saturating_sub(now) > i64::try_from(longest.as_secs()).unwrap_or(i64::MAX) {
            return Err(AuthError::TtlTooLong(self.rules.max_ttl));
        }
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
        Ok(Identity {
            user_id,
            roles,
            expires_at,
        })
    }
}

/// The `alg` and `kid` of a JWT's header, if the header decodes.
fn header_alg(token: &str) -> Option<(String, Option<String>)> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let alg = v.get("alg")?.as_str()?.to_owned();
    let kid = v.get("kid").and_then(Value::as_str).map(str::to_owned);
    Some((alg, kid))
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
    sign_hs256(
        secret,
        &json!({ "userId": user, "exp": exp, "role": roles }),
    )
}

/// Like [`mint_with_roles`], with the configured secret, plus the configured `iss`
/// and `aud` so the gateway accepts it (`ziraai-gateway token`).
pub fn mint_for(config: &AuthConfig, user: &str, ttl_secs: i64, roles: &[&str]) -> String {
    let exp = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .saturating_add(ttl_secs);
    let mut claims = json!({ "userId": user, "exp": exp, "role": roles });
    if let Some(iss) = &config.issuer {
        claims["iss"] = json!(iss);
    }
    if let Some(aud) = &config.audience {
        claims["aud"] = json!(aud);
    }
    sign_hs256(&config.jwt_secret, &claims)
}

fn sign_hs256(secret: &SecretString, claims: &Value) -> String {
    // HS256 with an in-memory key over a JSON object cannot fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests;
