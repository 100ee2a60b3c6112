//! Signing keys made for one test by `openssl(1)` (no private key is committed):
//! RS256 (RSA 2048) and ES256 (P-256) pairs, their public PEM for the gateway's
//! `ZIRAAI_JWT_PUBLIC_KEYS_FILE`, and tokens signed with them.

use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use ziraai_proto::UserId;

/// A key pair of one algorithm.
pub struct TestKey {
    pub alg: Algorithm,
    /// The private key as jsonwebtoken reads it (PKCS#1 DER for RSA, PKCS#8 for EC).
    private_der: Vec<u8>,
    /// `-----BEGIN PUBLIC KEY-----` (SPKI).
    pub public_pem: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl(1) runs");
    assert!(out.status.success(), "openssl {args:?} failed: {out:?}");
    out.stdout
}

impl TestKey {
    /// A fresh RSA 2048 key for RS256.
    pub fn rs256() -> Self {
        Self::generate(Algorithm::RS256)
    }

    /// A fresh P-256 key for ES256.
    pub fn es256() -> Self {
        Self::generate(Algorithm::ES256)
    }

    fn generate(alg: Algorithm) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("key.pem");
        let k = key.to_string_lossy().into_owned();
        let private_der = if alg == Algorithm::RS256 {
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &k,
            ]);
            openssl(&["rsa", "-in", &k, "-outform", "DER", "-traditional"])
        } else {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &k,
            ]);
            openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &k, "-outform", "DER"])
        };
        let public_pem = String::from_utf8(openssl(&["pkey", "-in", &k, "-pubout"])).expect("PEM");
        Self {
            alg,
            private_der,
            public_pem,
        }
    }

    /// Signs `claims` (with `kid` in the header when given).
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let key = match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(&self.private_der),
            _ => EncodingKey::from_ec_der(&self.private_der),
        };
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).expect("encode")
    }

    /// A token for `user` valid for `ttl_secs`.
    pub fn token(&self, user: &UserId, ttl_secs: i64) -> String {
        self.sign(
            &json!({"userId": user.as_str(), "exp": unix_now() + ttl_secs}),
            None,
        )
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// An HS256 token with `claims`, signed with the development secret of test gateways.
pub fn token_with(claims: &Value) -> String {
    let secret = ziraai_common::GatewayServiceConfig::development()
        .auth
        .jwt_secret;
    use secrecy::ExposeSecret as _;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .expect("encode")
}

/// A token for `user` valid for `ttl_secs`, with the development secret.
pub fn short_token(user: &UserId, ttl_secs: i64) -> String {
    token_with(&json!({"userId": user.as_str(), "exp": unix_now() + ttl_secs}))
}
