//! Claim rules of [`Authenticator`]: user id claims, refusal codes, issuer, audience,
//! longest lifetime, refresh, expiry and the exact Admin role. (Public keys:
//! `keys_tests.rs`.)

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
