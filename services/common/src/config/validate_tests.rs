//! Each refusal of staging and production, the layering order, and which service
//! validates which section.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::super::{
    ConfigErrors, DEV_JWT_SECRET, Environment, GatewayServiceConfig, SharedConfig,
    WorkerServiceConfig,
};

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

fn lines<T>(loaded: Result<T, ConfigErrors>) -> Vec<String> {
    match loaded {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

/// The gateway's problems with `pairs`.
fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
    lines(GatewayServiceConfig::load(&vars(pairs)))
}

/// The worker's problems with `pairs`.
fn worker_errors(pairs: &[(&str, &str)]) -> Vec<String> {
    lines(WorkerServiceConfig::load(&vars(pairs)))
}

/// A valid production set, with `extra` replacing entries (an empty value removes one).
fn prod_vars(extra: &[(&str, &str)]) -> HashMap<String, String> {
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
    m
}

fn prod_errors(extra: &[(&str, &str)]) -> Vec<String> {
    lines(GatewayServiceConfig::load(&prod_vars(extra)))
}

#[test]
fn development_defaults_use_the_built_in_secret() {
    let c = GatewayServiceConfig::load(&vars(&[])).expect("development defaults are valid");
    assert_eq!(c.env, Environment::Development);
    assert!(c.auth.dev_secret);
    assert_eq!(c.auth.jwt_secret.expose_secret(), DEV_JWT_SECRET);
    assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.gateway.demo_user, "demo-farmer");
    assert_eq!(c.nats.urls, vec!["nats://127.0.0.1:4222"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let w = WorkerServiceConfig::load(&vars(&[])).expect("development defaults are valid");
    assert_eq!(w.worker.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(w.worker.demo_user, "demo-farmer");
    assert!(w.warnings.is_empty(), "{:?}", w.warnings);
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
    let c = GatewayServiceConfig::load(&vars(&[("ZIRAAI_JWT_SECRET_FILE", &p)])).expect("loads");
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
    let c = GatewayServiceConfig::load(&vars(&[
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
fn unknown_variables_are_warned_about_but_not_the_other_services() {
    let c = GatewayServiceConfig::load(&vars(&[
        ("ZIRAAI_GATEWAY_LISTN", "x"),
        ("ZIRAAI_ANALYZER_URL", "http://a:1/analyze"),
    ]))
    .expect("loads");
    assert_eq!(
        c.warnings,
        vec!["unknown variable ZIRAAI_GATEWAY_LISTN is ignored"]
    );
    let w = WorkerServiceConfig::load(&vars(&[
        ("ZIRAAI_WORKER_LISTN", "x"),
        ("ZIRAAI_JWT_SECRET", "tiny"),
        ("ZIRAAI_GATEWAY_HANDSHAKE_BURST", "3"),
    ]))
    .expect("loads");
    assert_eq!(
        w.warnings,
        vec!["unknown variable ZIRAAI_WORKER_LISTN is ignored"]
    );
}

#[test]
fn a_staging_or_production_worker_needs_no_jwt_secret() {
    let w = WorkerServiceConfig::load(&prod_vars(&[("ZIRAAI_JWT_SECRET", "")]))
        .expect("a production worker without a JWT secret is valid");
    assert_eq!(w.env, Environment::Production);
    assert_eq!(
        worker_errors(&[("ZIRAAI_ENV", "staging")]),
        Vec::<String>::new()
    );
    // The gateway's settings are not the worker's business either.
    assert_eq!(
        worker_errors(&[
            ("ZIRAAI_ENV", "staging"),
            ("ZIRAAI_GATEWAY_DEMO_PAGE", "true"),
            ("ZIRAAI_GATEWAY_LISTEN", "nowhere"),
        ]),
        Vec::<String>::new()
    );
    // The shared rules still apply to it.
    let e = lines(WorkerServiceConfig::load(&prod_vars(&[
        ("ZIRAAI_JWT_SECRET", ""),
        ("ZIRAAI_NATS_URL", "nats://nats-1:4222"),
    ])));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("NATS credentials"), "{e:?}");
}

#[test]
fn each_service_validates_only_its_own_section() {
    // A bad worker setting stops the worker, not the gateway, and the other way round.
    let bad_worker = [("ZIRAAI_WORKER_LISTEN", "nowhere")];
    assert_eq!(errors(&bad_worker), Vec::<String>::new());
    assert!(worker_errors(&bad_worker)[0].contains("ZIRAAI_WORKER_LISTEN"));
    let bad_gateway = [("ZIRAAI_GATEWAY_WRITE_TIMEOUT", "soon")];
    assert_eq!(worker_errors(&bad_gateway), Vec::<String>::new());
    assert!(errors(&bad_gateway)[0].contains("ZIRAAI_GATEWAY_WRITE_TIMEOUT"));
    // A bad shared setting stops both.
    let bad_shared = [("ZIRAAI_LOG_FORMAT", "xml")];
    assert_eq!(errors(&bad_shared).len(), 1);
    assert_eq!(worker_errors(&bad_shared).len(), 1);
}

#[test]
fn the_gateway_reads_its_own_demo_user_and_no_worker_file_section() {
    let dir = std::env::temp_dir().join(format!("ziraai-demo-user-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("development.toml"),
        "[worker]\ndemo_user = \"worker-only\"\nlisten = \"not an address\"\n",
    )
    .expect("write");
    let d = dir.to_string_lossy().into_owned();
    let g = GatewayServiceConfig::load(&vars(&[("ZIRAAI_CONFIG_DIR", &d)]))
        .expect("the worker's section is not validated by the gateway");
    assert_eq!(g.gateway.demo_user, "demo-farmer");
    assert!(worker_errors(&[("ZIRAAI_CONFIG_DIR", &d)])[0].contains("ZIRAAI_WORKER_LISTEN"));
    // The one variable both read.
    let g = GatewayServiceConfig::load(&vars(&[("ZIRAAI_DEMO_USER", "farmer-7")])).expect("loads");
    assert_eq!(g.gateway.demo_user, "farmer-7");
    assert!(errors(&[("ZIRAAI_DEMO_USER", "a b")])[0].contains("ZIRAAI_DEMO_USER"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn with_the_shipped_files_a_worker_starts_without_the_secret_a_gateway_does_not() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/config");
    for env in ["staging", "production"] {
        // The files name no broker credential: each Deployment sets its own user.
        let v = vars(&[
            ("ZIRAAI_ENV", env),
            ("ZIRAAI_CONFIG_DIR", shipped),
            ("ZIRAAI_NATS_USER", "worker"),
            ("ZIRAAI_NATS_PASSWORD", "from-a-secret"),
        ]);
        let w = WorkerServiceConfig::load(&v).unwrap_or_else(|e| panic!("{env} worker: {e}"));
        assert!(w.warnings.is_empty(), "{:?}", w.warnings);
        let e = lines(GatewayServiceConfig::load(&v));
        assert_eq!(e.len(), 1, "{env}: {e:?}");
        assert!(e[0].starts_with("ZIRAAI_JWT_SECRET"), "{env}: {e:?}");
    }
}

#[test]
fn token_rules_default_and_parse() {
    let c = GatewayServiceConfig::load(&vars(&[])).expect("defaults load");
    assert_eq!(c.auth.issuer, None);
    assert_eq!(c.auth.audience, None);
    assert_eq!(c.auth.max_ttl, super::super::DEFAULT_JWT_MAX_TTL);
    assert_eq!(c.auth.max_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(c.auth.leeway, Duration::from_secs(30));
    assert_eq!(c.auth.public_keys_file, None);
    let c = GatewayServiceConfig::load(&vars(&[
        ("ZIRAAI_JWT_ISSUER", "https://auth.ziraai.com"),
        ("ZIRAAI_JWT_AUDIENCE", "ziraai-realtime"),
        ("ZIRAAI_JWT_MAX_TTL", "2h"),
        ("ZIRAAI_JWT_LEEWAY", "0s"),
        ("ZIRAAI_JWT_PUBLIC_KEYS_FILE", "/etc/ziraai/jwks.json"),
    ]))
    .expect("loads");
    assert_eq!(c.auth.issuer.as_deref(), Some("https://auth.ziraai.com"));
    assert_eq!(c.auth.audience.as_deref(), Some("ziraai-realtime"));
    assert_eq!(c.auth.max_ttl, Duration::from_secs(7200));
    assert_eq!(c.auth.leeway, Duration::ZERO);
    assert_eq!(
        c.auth.public_keys_file.as_deref(),
        Some(std::path::Path::new("/etc/ziraai/jwks.json"))
    );
    let e = errors(&[("ZIRAAI_JWT_MAX_TTL", "0s"), ("ZIRAAI_JWT_LEEWAY", "soon")]);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("ZIRAAI_JWT_MAX_TTL"), "{e:?}");
    assert!(e[1].starts_with("ZIRAAI_JWT_LEEWAY"), "{e:?}");
}

#[test]
fn the_per_user_connection_limit_and_its_policy() {
    use super::super::ConnectionLimitPolicy;
    let c = GatewayServiceConfig::load(&vars(&[])).expect("defaults");
    assert_eq!(c.gateway.max_connections_per_user, 5);
    assert_eq!(
        c.gateway.connection_limit_policy,
        ConnectionLimitPolicy::EvictOldest
    );
    assert_eq!(c.gateway.connection_heartbeat, Duration::from_secs(5));
    let c = GatewayServiceConfig::load(&vars(&[
        ("ZIRAAI_MAX_CONNECTIONS_PER_USER", "2"),
        ("ZIRAAI_CONNECTION_LIMIT_POLICY", "refuse"),
        ("ZIRAAI_CONNECTION_HEARTBEAT", "1s"),
    ]))
    .expect("valid");
    assert_eq!(c.gateway.max_connections_per_user, 2);
    assert_eq!(
        c.gateway.connection_limit_policy,
        ConnectionLimitPolicy::Refuse
    );
    assert_eq!(c.gateway.connection_heartbeat, Duration::from_secs(1));
    // One line per bad value, each naming its variable.
    for (var, bad) in [
        ("ZIRAAI_MAX_CONNECTIONS_PER_USER", "0"),
        ("ZIRAAI_MAX_CONNECTIONS_PER_USER", "five"),
        ("ZIRAAI_MAX_CONNECTIONS_PER_USER", "-1"),
        ("ZIRAAI_CONNECTION_LIMIT_POLICY", "drop-newest"),
        ("ZIRAAI_CONNECTION_HEARTBEAT", "0s"),
        ("ZIRAAI_CONNECTION_HEARTBEAT", "11s"),
        ("ZIRAAI_CONNECTION_HEARTBEAT", "1500ms"),
    ] {
        let e = errors(&[(var, bad)]);
        assert_eq!(e.len(), 1, "{var}={bad:?}: {e:?}");
        assert!(e[0].starts_with(var), "{var}={bad:?}: {e:?}");
    }
    let e = errors(&[
        ("ZIRAAI_MAX_CONNECTIONS_PER_USER", "0"),
        ("ZIRAAI_CONNECTION_LIMIT_POLICY", "lru"),
    ]);
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn the_shared_section_alone_needs_no_service_secret_in_production() {
    // `ziraai-gateway admin`: NATS credentials, and no JWT secret.
    let prod = [
        ("ZIRAAI_ENV", "production"),
        ("ZIRAAI_NATS_USER", "operator"),
        ("ZIRAAI_NATS_PASSWORD", "pw"),
    ];
    let shared = SharedConfig::load(&vars(&prod)).expect("valid without a JWT secret");
    assert_eq!(shared.env, Environment::Production);
    assert_eq!(shared.nats.user.as_deref(), Some("operator"));
    assert!(!lines(GatewayServiceConfig::load(&vars(&prod))).is_empty());
    let errors = lines(SharedConfig::load(&vars(&[("ZIRAAI_ENV", "production")])));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("NATS credentials are required")),
        "{errors:?}"
    );
}
