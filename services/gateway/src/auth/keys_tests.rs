//! Public-key tokens: RS256 and ES256 keys made by openssl(1) for the test, PEM and
//! JWKS files, `kid` selection, no algorithm confusion, bad files, and reloads that
//! keep the old keys on error.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};
use ziraai_common::config::{AuthConfig, DEFAULT_JWT_LEEWAY, DEFAULT_JWT_MAX_TTL};

use super::KeySet;
use crate::auth::{Authenticator, Rules, mint};

fn secret() -> SecretString {
    SecretString::from("test-secret-test-secret-test-secret")
}

fn later() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() + 600
}

/// A key pair made by openssl(1): (private key DER for jsonwebtoken, public PEM).
fn openssl_pair(ec: bool) -> (Vec<u8>, String) {
    let dir = tempfile_dir();
    let key = dir.join("k.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out.stdout
    };
    let k = key.to_string_lossy().into_owned();
    if ec {
        run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &k,
        ]);
    } else {
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &k,
        ]);
    }
    let der = if ec {
        run(&["pkcs8", "-topk8", "-nocrypt", "-in", &k, "-outform", "DER"])
    } else {
        run(&["rsa", "-in", &k, "-outform", "DER", "-traditional"])
    };
    let public = String::from_utf8(run(&["pkey", "-in", &k, "-pubout"])).expect("PEM text");
    let _ = std::fs::remove_dir_all(dir);
    (der, public)
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ziraai-auth-test-{}", nuid::next()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn sign_with(alg: Algorithm, der: &[u8], kid: Option<&str>, claims: Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_der(der),
        _ => EncodingKey::from_ec_der(der),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &key).expect("encode")
}

fn keys_file(text: &str) -> (std::path::PathBuf, KeySet) {
    let dir = tempfile_dir();
    let path = dir.join("keys");
    std::fs::write(&path, text).expect("write keys");
    let set = KeySet::load(&path).expect("keys load");
    (path, set)
}

#[test]
fn rs256_and_es256_from_a_pem_file_and_no_algorithm_confusion() {
    let (rsa_der, rsa_pub) = openssl_pair(false);
    let (ec_der, ec_pub) = openssl_pair(true);
    let (_, set) = keys_file(&format!("{rsa_pub}\n{ec_pub}"));
    assert_eq!(set.len(), 2);
    let auth = Authenticator::with_rules(&secret(), Rules::default(), set);
    let claims = || json!({"userId": "pk-user", "exp": later()});
    let id = auth
        .verify(&sign_with(Algorithm::RS256, &rsa_der, None, claims()))
        .expect("RS256");
    assert_eq!(id.user_id.as_str(), "pk-user");
    auth.verify(&sign_with(Algorithm::ES256, &ec_der, None, claims()))
        .expect("ES256");
    // HS256 still works beside the keys.
    auth.verify(&mint(&secret(), "u", 60)).expect("HS256");
    // An HS256 token signed with the public key's text is checked with the secret only.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(rsa_pub.as_bytes()),
    )
    .expect("encode");
    assert_eq!(
        auth.verify(&confused).expect_err("confusion").code(),
        "token_bad_signature"
    );
    // Without keys, a public-key token matches nothing.
    let plain = Authenticator::new(&secret());
    let err = plain
        .verify(&sign_with(Algorithm::RS256, &rsa_der, None, claims()))
        .expect_err("no keys");
    assert_eq!(err.code(), "token_unknown_key");
    // A key of another party: bad signature.
    let (other_der, _) = openssl_pair(true);
    let err = auth
        .verify(&sign_with(Algorithm::ES256, &other_der, None, claims()))
        .expect_err("unknown signer");
    assert_eq!(err.code(), "token_bad_signature");
}

#[test]
fn jwks_kid_selects_the_key() {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    let (der1, pub1) = openssl_pair(false);
    let (der2, pub2) = openssl_pair(false);
    let (ec_der, ec_pub) = openssl_pair(true);
    let rsa_jwk = |kid: &str, pem: &str| {
        let k = rsa::RsaPublicKey::from_public_key_pem(pem).expect("rsa");
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
               "n": b64(&k.n().to_bytes_be()), "e": b64(&k.e().to_bytes_be())})
    };
    let ec_jwk = {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let k = p256::PublicKey::from_public_key_pem(&ec_pub).expect("ec");
        let p = k.to_encoded_point(false);
        json!({"kty": "EC", "kid": "e1", "crv": "P-256",
               "x": b64(p.x().expect("x")), "y": b64(p.y().expect("y"))})
    };
    let jwks = json!({"keys": [rsa_jwk("r1", &pub1), rsa_jwk("r2", &pub2), ec_jwk]});
    let (_, set) = keys_file(&jwks.to_string());
    assert_eq!(set.len(), 3);
    let auth = Authenticator::with_rules(&secret(), Rules::default(), set);
    let claims = || json!({"userId": "u", "exp": later()});
    auth.verify(&sign_with(Algorithm::RS256, &der2, Some("r2"), claims()))
        .expect("kid r2");
    auth.verify(&sign_with(Algorithm::RS256, &der1, None, claims()))
        .expect("no kid: every RS256 key is tried");
    auth.verify(&sign_with(Algorithm::ES256, &ec_der, Some("e1"), claims()))
        .expect("kid e1");
    let err = auth
        .verify(&sign_with(Algorithm::RS256, &der1, Some("r2"), claims()))
        .expect_err("kid names another key");
    assert_eq!(err.code(), "token_bad_signature");
    let err = auth
        .verify(&sign_with(Algorithm::RS256, &der1, Some("r9"), claims()))
        .expect_err("unknown kid");
    assert_eq!(err.code(), "token_unknown_key");
}

#[test]
fn bad_key_files_are_refused_and_a_failed_reload_keeps_the_old_keys() {
    let dir = tempfile_dir();
    let path = dir.join("keys.pem");
    for (text, want) in [
        ("", "holds no public key"),
        ("hello", "neither PEM"),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "PEM block 1",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "not a public key",
        ),
        (
            "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
            "only RSA",
        ),
        ("{\"keys\": 3}", "not a JWKS"),
    ] {
        std::fs::write(&path, text).expect("write");
        let err = KeySet::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{text:?} loads"));
        let line = err.to_string();
        assert!(
            line.contains(want) && line.contains("ZIRAAI_JWT_PUBLIC_KEYS_FILE"),
            "{line}"
        );
        assert!(!line.contains('\n'), "one line: {line}");
    }
    assert!(KeySet::load(&dir.join("missing")).is_err());

    let (der, public) = openssl_pair(true);
    std::fs::write(&path, &public).expect("write");
    let config = AuthConfig {
        jwt_secret: secret(),
        dev_secret: false,
        issuer: None,
        audience: None,
        max_ttl: DEFAULT_JWT_MAX_TTL,
        leeway: DEFAULT_JWT_LEEWAY,
        public_keys_file: Some(path.clone()),
    };
    let auth = Authenticator::from_config(&config).expect("loads");
    let token = sign_with(
        Algorithm::ES256,
        &der,
        None,
        json!({"userId": "u", "exp": later()}),
    );
    auth.verify(&token).expect("key in use");
    std::fs::write(&path, "garbage").expect("write");
    assert!(auth.reload_keys().is_err());
    auth.verify(&token)
        .expect("old key kept after a failed reload");
    let (der2, public2) = openssl_pair(true);
    std::fs::write(&path, &public2).expect("write");
    assert_eq!(auth.reload_keys().expect("reloads"), 1);
    let token2 = sign_with(
        Algorithm::ES256,
        &der2,
        None,
        json!({"userId": "u", "exp": later()}),
    );
    auth.verify(&token2).expect("new key");
    assert_eq!(
        auth.verify(&token).expect_err("old key gone").code(),
        "token_bad_signature"
    );
    let _ = std::fs::remove_dir_all(dir);
}
