//! Each refusal of staging and production, and the layering order.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::super::{Config, DEV_JWT_SECRET, Environment};

const GOOD_SECRET: &str = "0123456789abcdef0123456789abcdef-prod";

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // No file layer unless a test asks for one.
    m.entry("ZIRAAI_CONFIG_DIR".into()).or_default();
    m
}

fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
    match Config::load(&vars(pairs)) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

/// A valid production set, with `extra` replacing entries (an empty value removes one).
fn prod_errors(extra: &[(&str, &str)]) -> Vec<String> {
    let mut m = vars(&[
        ("ZIRAAI_ENV", "production"),
        ("ZIRAAI_JWT_SECRET", GOOD_SECRET),
        ("ZIRAAI_GATEWAY_ALLOWED_ORIGINS", "https://app.ziraai.com"),
        ("ZIRAAI_NATS_URL", "nats://svc:pw@nats-1:4222"),
    ]);
    for (k, v) in extra {
        if v.is_empty() {
            m.remove(*k);
        } else {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    match Config::load(&m) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

#[test]
fn development_defaults_use_the_built_in_secret() {
    let c = Config::load(&vars(&[])).expect("development defaults are valid");
    assert_eq!(c.env, Environment::Development);
    assert!(c.auth.dev_secret);
    assert_eq!(c.auth.jwt_secret.expose_secret(), DEV_JWT_SECRET);
    assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.nats.urls, vec!["nats://127.0.0.1:4222"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn a_complete_production_config_is_accepted() {
    assert_eq!(prod_errors(&[]), Vec::<String>::new());
}

#[test]
fn production_refuses_a_missing_secret_and_names_the_variable() {
    let e = prod_errors(&[("ZIRAAI_JWT_SECRET", "")]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("ZIRAAI_JWT_SECRET"), "{e:?}");
}

#[test]
fn production_and_staging_refuse_short_and_development_secrets() {
    assert!(prod_errors(&[("ZIRAAI_JWT_SECRET", "short")])[0].contains("at least 32"));
    assert!(prod_errors(&[("ZIRAAI_JWT_SECRET", DEV_JWT_SECRET)])[0].contains("development"));
    let e = errors(&[("ZIRAAI_ENV", "staging")]);
    assert!(e.iter().any(|l| l.contains("ZIRAAI_JWT_SECRET")), "{e:?}");
    let e = errors(&[("ZIRAAI_ENV", "staging"), ("ZIRAAI_JWT_SECRET", "tiny")]);
    assert!(e.iter().any(|l| l.contains("at least 32")), "{e:?}");
}

#[test]
fn production_refuses_wildcard_origins() {
    let e = prod_errors(&[("ZIRAAI_GATEWAY_ALLOWED_ORIGINS", "https://a.com,*")]);
    assert!(e.iter().any(|l| l.contains("wildcard")), "{e:?}");
}

#[test]
fn production_refuses_an_unauthenticated_broker() {
    let e = prod_errors(&[("ZIRAAI_NATS_URL", "nats://nats-1:4222")]);
    assert!(e.iter().any(|l| l.contains("NATS credentials")), "{e:?}");
}

#[test]
fn production_refuses_the_demo_page() {
    let e = prod_errors(&[("ZIRAAI_GATEWAY_DEMO_PAGE", "true")]);
    assert!(e.iter().any(|l| l.contains("development-only")), "{e:?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = errors(&[
        ("ZIRAAI_ENV", "production"),
        ("ZIRAAI_GATEWAY_LISTEN", "nowhere"),
        ("ZIRAAI_GATEWAY_WRITE_TIMEOUT", "soon"),
    ]);
    // listen, write timeout, secret, origins (empty is fine), NATS auth.
    assert_eq!(e.len(), 4, "{e:?}");
    let e = errors(&[("ZIRAAI_ENV", "prodution")]);
    assert!(e[0].contains("ZIRAAI_ENV"), "{e:?}");
}

#[test]
fn secret_from_file_and_not_both() {
    let dir = std::env::temp_dir().join(format!("ziraai-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("secret");
    std::fs::write(&path, format!("{GOOD_SECRET}\n")).expect("write");
    let p = path.to_string_lossy().into_owned();
    let c = Config::load(&vars(&[("ZIRAAI_JWT_SECRET_FILE", &p)])).expect("loads");
    assert_eq!(c.auth.jwt_secret.expose_secret(), GOOD_SECRET);
    let e = errors(&[("ZIRAAI_JWT_SECRET_FILE", &p), ("ZIRAAI_JWT_SECRET", "x")]);
    assert!(e[0].contains("not both"), "{e:?}");
    let e = errors(&[("ZIRAAI_JWT_SECRET_FILE", "/nonexistent/secret")]);
    assert!(e[0].contains("cannot read"), "{e:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn variables_override_the_file_which_overrides_defaults() {
    let dir = std::env::temp_dir().join(format!("ziraai-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("development.toml"),
        "[gateway]\nlisten = \"127.0.0.1:9000\"\nwrite_timeout = \"3s\"\n[nats]\nurl = \"nats://a:1,nats://b:2\"\n",
    )
    .expect("write");
    let d = dir.to_string_lossy().into_owned();
    let c = Config::load(&vars(&[
        ("ZIRAAI_CONFIG_DIR", &d),
        ("ZIRAAI_GATEWAY_LISTEN", "127.0.0.1:9100"),
    ]))
    .expect("loads");
    assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(c.gateway.write_timeout, Duration::from_secs(3));
    assert_eq!(c.nats.urls, vec!["nats://a:1", "nats://b:2"]);

    std::fs::write(dir.join("development.toml"), "[gateway]\nlisten_typo = 1\n").expect("write");
    let e = errors(&[("ZIRAAI_CONFIG_DIR", &d)]);
    assert!(e[0].contains("unknown field"), "{e:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_variables_are_warned_about() {
    let c = Config::load(&vars(&[("ZIRAAI_GATEWAY_LISTN", "x")])).expect("loads");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("ZIRAAI_GATEWAY_LISTN"))
    );
}
