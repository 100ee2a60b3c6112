//! Public keys for RS256 / ES256 tokens, from `ZIRAAI_JWT_PUBLIC_KEYS_FILE`: a PEM
//! file with one or more public keys (`PUBLIC KEY` = SPKI, RSA or P-256; `RSA PUBLIC
//! KEY` = PKCS#1), or a JWKS JSON file (`{"keys":[…]}`, RSA and P-256 keys, each with
//! an optional `kid`).
//!
//! The key decides the algorithm (RSA → RS256, P-256 → ES256), so a token cannot
//! choose how its signature is checked. Which keys a token is tried against:
//! the key whose `kid` equals the token's `kid` when there is one; otherwise every
//! key of the token's algorithm without a `kid` (PEM keys have none); with no `kid`
//! in the token, every key of its algorithm.
//!
//! Every key is parsed when the file is read, so a bad file is found at start-up
//! (exit 2) or on SIGHUP (the old keys stay), never at the first token.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::pkcs8::DecodePublicKey as _;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::traits::PublicKeyParts as _;

/// One verification key.
#[derive(Clone)]
pub struct PublicKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The keys of one read of the file (empty without a file).
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

/// Why the key file cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("ZIRAAI_JWT_PUBLIC_KEYS_FILE {path:?}: {problem}")]
pub struct KeysError {
    pub path: PathBuf,
    pub problem: String,
}

impl KeySet {
    /// Reads and parses `path` (PEM, or JWKS when it starts with `{`).
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let fail = |problem: String| KeysError {
            path: path.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let keys = if text.trim_start().starts_with('{') {
            parse_jwks(&text)
        } else {
            parse_pem(&text)
        }
        .map_err(fail)?;
        if keys.is_empty() {
            return Err(fail("holds no public key".into()));
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys a token with this `alg` and `kid` is tried against (see the module).
    pub fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Vec<&PublicKey> {
        if let Some(kid) = kid {
            let named: Vec<_> = self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid) && k.alg == alg)
                .collect();
            if !named.is_empty() {
                return named;
            }
            return self
                .keys
                .iter()
                .filter(|k| k.kid.is_none() && k.alg == alg)
                .collect();
        }
        self.keys.iter().filter(|k| k.alg == alg).collect()
    }
}

/// Every `-----BEGIN …-----` block of a PEM file, in order.
fn parse_pem(text: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block_and_after = &rest[start..];
        let Some(end_marker) = block_and_after.find("-----END ") else {
            return Err(format!("PEM block {} has no END line", keys.len() + 1));
        };
        let after_end = &block_and_after[end_marker + "-----END ".len()..];
        let close = after_end
            .find("-----")
            .ok_or_else(|| format!("PEM block {} has a broken END line", keys.len() + 1))?;
        let block_len = end_marker + "-----END ".len() + close + "-----".len();
        let block = &block_and_after[..block_len];
        keys.push(pem_key(block).map_err(|e| format!("PEM block {}: {e}", keys.len() + 1))?);
        rest = &block_and_after[block_len..];
    }
    if keys.is_empty() && !text.trim().is_empty() {
        return Err("neither PEM public keys nor a JWKS object".into());
    }
    Ok(keys)
}

fn pem_key(block: &str) -> Result<PublicKey, String> {
    if block.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        let k = rsa::RsaPublicKey::from_pkcs1_pem(block).map_err(|e| e.to_string())?;
        return Ok(rsa_key(None, &k));
    }
    if !block.starts_with("-----BEGIN PUBLIC KEY-----") {
        let label = block.lines().next().unwrap_or_default();
        return Err(format!(
            "{label} is not a public key (expected BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY)"
        ));
    }
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_pem(block) {
        return Ok(rsa_key(None, &k));
    }
    match p256::PublicKey::from_public_key_pem(block) {
        Ok(k) => Ok(ec_key(None, &k)),
        Err(e) => Err(format!("not an RSA or P-256 public key ({e})")),
    }
}

fn rsa_key(kid: Option<String>, k: &rsa::RsaPublicKey) -> PublicKey {
    PublicKey {
        kid,
        alg: Algorithm::RS256,
        key: DecodingKey::from_rsa_raw_components(&k.n().to_bytes_be(), &k.e().to_bytes_be()),
    }
}

fn ec_key(kid: Option<String>, k: &p256::PublicKey) -> PublicKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    PublicKey {
        kid,
        alg: Algorithm::ES256,
        // jsonwebtoken's ES256 verifier takes the SEC1 point.
        key: DecodingKey::from_ec_der(k.to_encoded_point(false).as_bytes()),
    }
}

fn parse_jwks(text: &str) -> Result<Vec<PublicKey>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    set.keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| {
            let kid = jwk.common.key_id.clone();
            let name = kid.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let bad = |e: &dyn std::fmt::Display| format!("key {name}: {e}");
            match &jwk.algorithm {
                AlgorithmParameters::RSA(p) => {
                    let n = b64(&p.n).map_err(|e| bad(&e))?;
                    let e = b64(&p.e).map_err(|e| bad(&e))?;
                    let k = rsa::RsaPublicKey::new(
                        rsa::BigUint::from_bytes_be(&n),
                        rsa::BigUint::from_bytes_be(&e),
                    )
                    .map_err(|e| bad(&e))?;
                    Ok(rsa_key(kid, &k))
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    let x = b64(&p.x).map_err(|e| bad(&e))?;
                    let y = b64(&p.y).map_err(|e| bad(&e))?;
                    let mut point = Vec::with_capacity(65);
                    point.push(0x04);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    let k = p256::PublicKey::from_sec1_bytes(&point)
                        .map_err(|_| bad(&"x/y is not a point on P-256"))?;
                    Ok(ec_key(kid, &k))
                }
                _ => Err(bad(&"only RSA (RS256) and P-256 (ES256) keys are accepted")),
            }
        })
        .collect()
}

fn b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
