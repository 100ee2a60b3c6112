//! The resource-bound, address and origin settings: defaults, parsing, and the refusals
//! (one line per bad value, naming the variable).

use std::collections::HashMap;
use std::time::Duration;

use super::super::{ConfigErrors, FrameRate, GatewayServiceConfig, open_file_limit};

const GOOD_SECRET: &str = "0123456789abcdef0123456789abcdef-prod";

fn load(pairs: &[(&str, &str)]) -> Result<GatewayServiceConfig, ConfigErrors> {
    let mut m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m.entry("ZIRAAI_CONFIG_DIR".into()).or_default();
    GatewayServiceConfig::load(&m)
}

fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
    load(pairs).err().map(|e| e.0).unwrap_or_default()
}

fn prod_errors(extra: &[(&str, &str)]) -> Vec<String> {
    let mut pairs = vec![
        ("ZIRAAI_ENV", "production"),
        ("ZIRAAI_JWT_SECRET", GOOD_SECRET),
        ("ZIRAAI_NATS_URL", "nats://svc:pw@nats-1:4222"),
    ];
    pairs.extend_from_slice(extra);
    errors(&pairs)
}

#[test]
fn defaults() {
    let c = load(&[]).expect("defaults are valid").gateway;
    assert_eq!(c.header_timeout, Duration::from_secs(10));
    let expected = usize::try_from(open_file_limit().saturating_mul(90) / 100)
        .unwrap_or(usize::MAX)
        .max(1);
    assert_eq!(c.max_connections, expected, "90 % of the open-file limit");
    assert_eq!(
        c.client_frame_rate,
        FrameRate {
            count: 100,
            per: Duration::from_secs(1)
        }
    );
    assert_eq!(c.client_frame_burst, 1000);
    assert_eq!(c.http_burst, 100);
    assert_eq!(c.http_interval, Duration::from_millis(100));
    assert!(
        c.trusted_proxies.ranges.is_empty(),
        "no proxy is trusted by default"
    );
    assert_eq!(
        c.trusted_proxies.header,
        crate::config::ForwardedHeader::XForwardedFor
    );
}

#[test]
fn every_new_variable_is_read() {
    let c = load(&[
        ("ZIRAAI_GATEWAY_HEADER_TIMEOUT", "1s"),
        ("ZIRAAI_GATEWAY_MAX_CONNECTIONS", "3"),
        ("ZIRAAI_GATEWAY_CLIENT_FRAME_RATE", "6000/m"),
        ("ZIRAAI_GATEWAY_CLIENT_FRAME_BURST", "5"),
        ("ZIRAAI_GATEWAY_HTTP_BURST", "7"),
        ("ZIRAAI_GATEWAY_HTTP_INTERVAL", "2s"),
        ("ZIRAAI_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
        ("ZIRAAI_TRUSTED_PROXY_HEADER", "Forwarded"),
    ])
    .expect("valid");
    assert!(c.warnings.is_empty(), "known variables: {:?}", c.warnings);
    let g = c.gateway;
    assert_eq!(g.header_timeout, Duration::from_secs(1));
    assert_eq!(g.max_connections, 3);
    assert_eq!(g.client_frame_rate.per, Duration::from_secs(60));
    assert_eq!(g.client_frame_rate.count, 6000);
    assert_eq!(g.client_frame_burst, 5);
    assert_eq!(g.http_burst, 7);
    assert_eq!(g.http_interval, Duration::from_secs(2));
    assert_eq!(g.trusted_proxies.ranges.len(), 2);
    assert!(g.trusted_proxies.ranges[0].contains("10.9.8.7".parse().expect("ip")));
    assert_eq!(
        g.trusted_proxies.header,
        crate::config::ForwardedHeader::Forwarded
    );
}

#[test]
fn bad_values_are_one_line_each_naming_the_variable() {
    let bad = [
        ("ZIRAAI_GATEWAY_HEADER_TIMEOUT", "0s"),
        ("ZIRAAI_GATEWAY_MAX_CONNECTIONS", "0"),
        ("ZIRAAI_GATEWAY_CLIENT_FRAME_RATE", "100"),
        ("ZIRAAI_GATEWAY_CLIENT_FRAME_BURST", "none"),
        ("ZIRAAI_GATEWAY_HTTP_BURST", "0"),
        ("ZIRAAI_GATEWAY_HTTP_INTERVAL", "soon"),
        ("ZIRAAI_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("ZIRAAI_TRUSTED_PROXY_HEADER", "x-real-ip"),
    ];
    let e = errors(&bad);
    assert_eq!(e.len(), bad.len(), "{e:?}");
    for (var, _) in bad {
        assert!(e.iter().any(|l| l.starts_with(var)), "{var}: {e:?}");
    }
}

#[test]
fn origin_patterns_are_validated_one_line_per_bad_pattern() {
    let c = load(&[(
        "ZIRAAI_GATEWAY_ALLOWED_ORIGINS",
        "https://*.ziraai.com,https://app.example:8443,null",
    )])
    .expect("valid patterns");
    assert_eq!(c.gateway.allowed_origins.len(), 3);
    let e = errors(&[(
        "ZIRAAI_GATEWAY_ALLOWED_ORIGINS",
        "https://ok.example,app.example,https://a*.example,https://x.example/",
    )]);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e.iter()
            .all(|l| l.starts_with("ZIRAAI_GATEWAY_ALLOWED_ORIGINS")),
        "{e:?}"
    );
    assert!(e[0].contains("\"app.example\""), "{e:?}");
}

#[test]
fn production_refuses_the_null_origin_and_accepts_wildcard_subdomains() {
    assert_eq!(
        prod_errors(&[("ZIRAAI_GATEWAY_ALLOWED_ORIGINS", "https://*.ziraai.com")]),
        Vec::<String>::new()
    );
    let e = prod_errors(&[(
        "ZIRAAI_GATEWAY_ALLOWED_ORIGINS",
        "https://app.ziraai.com,null",
    )]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("\"null\"") && e[0].contains("production"),
        "{e:?}"
    );
    // Development keeps it (local files, sandboxed frames).
    assert!(errors(&[("ZIRAAI_GATEWAY_ALLOWED_ORIGINS", "null")]).is_empty());
}
