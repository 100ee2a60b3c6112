//! The standard `OTEL_*` variables, read from a map (the process environment in `main`,
//! an explicit map in tests: never `set_var`). No endpoint, or `OTEL_SDK_DISABLED=true`:
//! no exporter is built and nothing is attempted.

use std::collections::HashMap;
use std::time::Duration;

/// Every `OTEL_*` variable the services read (documented in the README).
pub const OTEL_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_METRIC_EXPORT_INTERVAL",
];

/// Default bound of the span queue between the services and the exporter thread.
pub const DEFAULT_QUEUE_SIZE: usize = 2048;
/// Default largest batch sent in one export.
pub const DEFAULT_BATCH_SIZE: usize = 512;
/// Default delay between two exports (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds).
/// Longest delay, timeout or interval accepted from the `OTEL_*` variables, ms.
const MAX_MILLIS: u64 = 3_600_000;
/// Largest span queue or batch accepted from the `OTEL_*` variables.
const MAX_QUEUE: usize = 1_000_000;

pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(5000);
/// Default interval between two metric exports (`OTEL_METRIC_EXPORT_INTERVAL`, ms).
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_millis(60_000);
/// Default time one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, milliseconds).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// `OTEL_TRACES_SAMPLER` (+ `_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

/// Everything the trace pipeline needs, parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Full URL of the traces endpoint (`/v1/traces` appended for HTTP when it came
    /// from the generic variable); `None`: no exporter.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` (without `service.name`, which `service_name` holds).
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerKind,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
    pub queue_size: usize,
    pub batch_size: usize,
    /// The metrics pipeline: same rules as traces with `_METRICS_` variants
    /// (`/v1/metrics` appended for HTTP to the generic endpoint).
    pub metrics: MetricsSettings,
}

/// Where and how often metrics are pushed by OTLP.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Full URL of the metrics endpoint; `None`: no metric exporter.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds; default 60000).
    pub interval: Duration,
}

impl Settings {
    /// Reads the `OTEL_*` variables of `vars`; `default_service` when
    /// `OTEL_SERVICE_NAME` (or `service.name` in the resource attributes) is unset.
    /// Problems are returned as warnings and the default is used.
    pub fn from_vars(vars: &HashMap<String, String>, default_service: &str) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        // One signal's endpoint, protocol and headers: its own variables, else the
        // generic ones (`/v1/<signal>` appended for HTTP to the generic endpoint only).
        let mut signal = |name: &str, path: &str| {
            let protocol_var = get(&format!("OTEL_EXPORTER_OTLP_{name}_PROTOCOL"))
                .or(get("OTEL_EXPORTER_OTLP_PROTOCOL"));
            let protocol = match protocol_var {
                None | Some("grpc") => Protocol::Grpc,
                Some("http/protobuf") => Protocol::HttpProtobuf,
                Some(other) => {
                    let w = format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (grpc or http/protobuf); using grpc"
                    );
                    // Once, though both signals read the generic variable.
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                    Protocol::Grpc
                }
            };
            let endpoint = match (
                get(&format!("OTEL_EXPORTER_OTLP_{name}_ENDPOINT")),
                get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            ) {
                _ if disabled => None,
                (Some(own), _) => Some(own.to_string()),
                (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
                    Some(format!("{}/{path}", base.trim_end_matches('/')))
                }
                (None, Some(base)) => Some(base.to_string()),
                (None, None) => None,
            };
            let mut headers = parse_pairs(get("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or(""));
            headers.extend(parse_pairs(
                get(&format!("OTEL_EXPORTER_OTLP_{name}_HEADERS")).unwrap_or(""),
            ));
            (endpoint, protocol, headers)
        };
        let (endpoint, protocol, headers) = signal("TRACES", "v1/traces");
        let (m_endpoint, m_protocol, m_headers) = signal("METRICS", "v1/metrics");
        for e in endpoint.iter().chain(m_endpoint.iter()) {
            let w = format!(
                "OTLP endpoint {e:?}: TLS is not built in; export to a collector over plain \
                 http (e.g. a sidecar or node-local agent) that forwards with TLS"
            );
            if e.starts_with("https://") && !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        let mut resource = parse_pairs(get("OTEL_RESOURCE_ATTRIBUTES").unwrap_or(""));
        let from_resource = resource
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource.remove(i).1);
        let service_name = get("OTEL_SERVICE_NAME")
            .map(str::to_string)
            .or(from_resource)
            .unwrap_or_else(|| default_service.to_string());
        let sampler = parse_sampler(
            get("OTEL_TRACES_SAMPLER"),
            get("OTEL_TRACES_SAMPLER_ARG"),
            &mut warnings,
        );
        // Above zero and at most an hour: zero would spin (or time every export out),
        // and a huge value overflows timers.
        let mut millis = |k: &str, default: Duration| match get(k).map(str::parse::<u64>) {
            None => default,
            Some(Ok(ms)) if (1..=MAX_MILLIS).contains(&ms) => Duration::from_millis(ms),
            Some(_) => {
                warnings.push(format!(
                    "{k} is not a number of milliseconds from 1 to {MAX_MILLIS}; using the default"
                ));
                default
            }
        };
        let schedule_delay = millis("OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY);
        let export_timeout = millis("OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_EXPORT_TIMEOUT);
        let metric_interval = millis("OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_METRIC_INTERVAL)
            .max(Duration::from_millis(1));
        // Bounded: the queue is memory held while a collector is slow.
        let mut count = |k: &str, default: usize| match get(k).map(str::parse::<usize>) {
            None => default,
            Some(Ok(n)) if (1..=MAX_QUEUE).contains(&n) => n,
            Some(_) => {
                warnings.push(format!(
                    "{k} is not a number from 1 to {MAX_QUEUE}; using {default}"
                ));
                default
            }
        };
        let queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE_SIZE);
        let batch_size =
            count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH_SIZE).min(queue_size);
        let settings = Self {
            endpoint,
            protocol,
            headers,
            service_name,
            resource,
            sampler,
            schedule_delay,
            export_timeout,
            queue_size,
            batch_size,
            metrics: MetricsSettings {
                endpoint: m_endpoint,
                protocol: m_protocol,
                headers: m_headers,
                interval: metric_interval,
            },
        };
        (settings, warnings)
    }
}

/// `k=v,k2=v2` (W3C baggage style, as `OTEL_RESOURCE_ATTRIBUTES` and `_HEADERS`);
/// `%20`-style escapes decoded.
fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_sampler(name: Option<&str>, arg: Option<&str>, warnings: &mut Vec<String>) -> SamplerKind {
    let mut ratio = || match arg.map(str::parse::<f64>) {
        None => 1.0,
        Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
        Some(_) => {
            warnings.push("OTEL_TRACES_SAMPLER_ARG is not a ratio in [0, 1]; using 1.0".into());
            1.0
        }
    };
    match name {
        None | Some("parentbased_always_on") => SamplerKind::ParentBasedAlwaysOn,
        Some("always_on") => SamplerKind::AlwaysOn,
        Some("always_off") => SamplerKind::AlwaysOff,
        Some("traceidratio") => SamplerKind::Ratio(ratio()),
        Some("parentbased_always_off") => SamplerKind::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerKind::ParentBasedRatio(ratio()),
        Some(other) => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={other:?} is not supported; using parentbased_always_on"
            ));
            SamplerKind::ParentBasedAlwaysOn
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> (Settings, Vec<String>) {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(&vars, "ziraai-gateway")
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        let (s, w) = settings(&[]);
        assert_eq!(s.endpoint, None);
        assert_eq!(s.service_name, "ziraai-gateway");
        assert_eq!(s.sampler, SamplerKind::ParentBasedAlwaysOn);
        assert!(w.is_empty());
    }

    #[test]
    fn http_appends_the_signal_path_to_the_generic_endpoint_only() {
        let (s, _) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(s.endpoint.as_deref(), Some("http://c:4318/v1/traces"));
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        let (s, _) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(s.endpoint.as_deref(), Some("http://t:1/x"));
        let (s, _) = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]);
        assert_eq!(
            (s.endpoint.as_deref(), s.protocol),
            (Some("http://c:4317"), Protocol::Grpc)
        );
    }

    #[test]
    fn disabled_wins_over_an_endpoint() {
        let (s, _) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert_eq!(s.endpoint, None);
        assert_eq!(s.metrics.endpoint, None);
    }

    #[test]
    fn metrics_follow_the_generic_variables_unless_their_own_are_set() {
        let (s, w) = settings(&[]);
        assert!(w.is_empty());
        assert_eq!(s.metrics.endpoint, None);
        assert_eq!(s.metrics.interval, DEFAULT_METRIC_INTERVAL);
        let (s, w) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            s.metrics.endpoint.as_deref(),
            Some("http://c:4318/v1/metrics")
        );
        assert_eq!(s.metrics.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.metrics.interval, Duration::from_millis(200));
        let (s, _) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
        ]);
        assert_eq!(
            (s.metrics.endpoint.as_deref(), s.metrics.protocol),
            (Some("http://m:4317"), Protocol::Grpc)
        );
        assert_eq!(s.endpoint.as_deref(), Some("http://c:4318/v1/traces"));
        let (s, _) = settings(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:4317")]);
        assert_eq!(s.endpoint, None, "a metrics endpoint does not export spans");
        assert!(s.metrics.endpoint.is_some());
    }

    #[test]
    fn names_resource_headers_and_sampler() {
        let (s, w) = settings(&[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=a,team=farm%20ops, region = eu",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20x,x-k=v",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.service_name, "a");
        assert_eq!(
            s.resource,
            vec![
                ("team".into(), "farm ops".into()),
                ("region".into(), "eu".into())
            ]
        );
        assert_eq!(s.headers[0], ("authorization".into(), "Bearer x".into()));
        assert_eq!(s.sampler, SamplerKind::ParentBasedRatio(0.25));
        assert_eq!(s.schedule_delay, Duration::from_millis(200));
        let (s, _) = settings(&[
            ("OTEL_SERVICE_NAME", "b"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
        ]);
        assert_eq!(s.service_name, "b");
    }

    #[test]
    fn bad_values_warn_and_use_defaults() {
        let (s, w) = settings(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ]);
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.sampler, SamplerKind::Ratio(1.0));
        assert_eq!(s.schedule_delay, DEFAULT_SCHEDULE_DELAY);
    }

    #[test]
    fn zero_or_huge_sizes_and_delays_are_refused_and_https_warns() {
        let (s, w) = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_BSP_SCHEDULE_DELAY", "0"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4611686018427387904"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
        ]);
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(w.iter().any(|l| l.contains("TLS")), "{w:?}");
        assert_eq!(s.schedule_delay, DEFAULT_SCHEDULE_DELAY);
        assert_eq!(s.export_timeout, DEFAULT_EXPORT_TIMEOUT);
        assert_eq!(s.queue_size, DEFAULT_QUEUE_SIZE);
        assert_eq!(s.batch_size, DEFAULT_BATCH_SIZE);
    }
}
