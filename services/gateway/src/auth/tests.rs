//! Claim rules of [`Authenticator`]: user id claims, refusal codes, issuer, audience,
//! longest lifetime, public keys and the exact Admin role.

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
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
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

fn at(offset: i64) -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() + offset
}

fn with(rules: Rules) -> Authenticator {
    Authenticator::with_rules(&secret(), rules, KeySet::default())
}

const KEY: &str = "test-secret-test-secret-test-secret";

#[test]
fn issuer_and_audience_are_enforced_only_when_configured() {
    let token = |claims: Value| sign(claims, KEY);
    let open = Authenticator::new(&secret());
    let any = token(json!({"userId": "u", "exp": later(), "iss": "x", "aud": "y"}));
    open.verify(&any).expect("no rule, any iss and aud");
    let strict = with(Rules {
        issuer: Some("https://auth.ziraai.com".into()),
        audience: Some("ziraai-realtime".into()),
        ..Rules::default()
    });
    let good = json!({"userId": "u", "exp": later(), "iss": "https://auth.ziraai.com", "aud": ["other", "ziraai-realtime"]});
    strict
        .verify(&token(good))
        .expect("matching iss, aud among several");
    let cases = [
        (
            json!({"userId": "u", "exp": later(), "aud": "ziraai-realtime"}),
            "token_bad_issuer",
        ),
        (
            json!({"userId": "u", "exp": later(), "iss": "https://evil", "aud": "ziraai-realtime"}),
            "token_bad_issuer",
        ),
        (
            json!({"userId": "u", "exp": later(), "iss": "https://auth.ziraai.com"}),
            "token_bad_audience",
        ),
        (
            json!({"userId": "u", "exp": later(), "iss": "https://auth.ziraai.com", "aud": "other"}),
            "token_bad_audience",
        ),
    ];
    for (claims, code) in cases {
        let err = strict.verify(&token(claims.clone())).expect_err(code);
        assert_eq!(err.code(), code, "{claims}");
    }
    // Both missing: always the issuer first (a stable code, not hash order).
    for _ in 0..20 {
        let err = with(Rules {
            issuer: Some("i".into()),
            audience: Some("a".into()),
            ..Rules::default()
        })
        .verify(&token(json!({"userId": "u", "exp": later()})))
        .expect_err("both missing");
        assert_eq!(err.code(), "token_bad_issuer");
    }
}

#[test]
fn max_ttl_refuses_tokens_that_live_too_long() {
    let auth = with(Rules {
        max_ttl: Duration::from_secs(3600),
        leeway: Duration::from_secs(30),
        ..Rules::default()
    });
    auth.verify(&sign(json!({"userId": "u", "exp": at(3600)}), KEY))
        .expect("exactly the longest lifetime");
    let err = auth
        .verify(&sign(json!({"userId": "u", "exp": at(3700)}), KEY))
        .expect_err("too long");
    assert_eq!(err.code(), "token_ttl_too_long");
    // The default is a day.
    let auth = Authenticator::new(&secret());
    auth.verify(&mint(&secret(), "u", 23 * 3600)).expect("23 h");
    let err = auth
        .verify(&mint(&secret(), "u", 25 * 3600))
        .expect_err("25 h");
    assert_eq!(err.code(), "token_ttl_too_long");
}

#[test]
fn admin_role_matches_exactly() {
    let auth = Authenticator::new(&secret());
    let roles = |r: &[&str]| {
        auth.verify(&mint_with_roles(&secret(), "u", 60, r))
            .expect("valid")
            .is_admin()
    };
    assert!(roles(&["Admin"]));
    assert!(roles(&["Farmer", "Admin"]));
    assert!(!roles(&["admin"]));
    assert!(!roles(&["ADMIN"]));
    assert!(!roles(&["Admin "]));
    assert!(!roles(&[]));
}

#[test]
fn refresh_must_name_the_same_user() {
    let auth = Authenticator::new(&secret());
    let u = UserId::parse("u1").expect("id");
    auth.verify_for(&mint(&secret(), "u1", 60), &u)
        .expect("same user");
    let err = auth
        .verify_for(&mint(&secret(), "u2", 60), &u)
        .expect_err("other user");
    assert_eq!(err.code(), "token_other_user");
}

#[test]
fn deadline_is_exp_plus_leeway() {
    let auth = with(Rules {
        leeway: Duration::from_secs(5),
        ..Rules::default()
    });
    let id = auth.verify(&mint(&secret(), "u", 100)).expect("valid");
    let left = auth.deadline(&id) - tokio::time::Instant::now();
    assert!(
        left > Duration::from_secs(103) && left <= Duration::from_secs(105),
        "{left:?}"
    );
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
