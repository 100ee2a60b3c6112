//! The OpenTelemetry Collector configuration (`infra/telemetry/otel-collector.yaml`):
//! no collector binary installs on this machine kind, so the test reads the YAML and
//! checks what `otelcol validate` would refuse (a pipeline naming an undefined
//! component, a component outside the standard contrib set) and what the README
//! promises (OTLP gRPC on 4317 and HTTP on 4318, a memory limit first and a bounded
//! batch in every pipeline, traces to an OTLP backend, metrics to Prometheus).

use serde_json::Value;

use super::{read, telemetry_dir};

/// Component types of the collector-contrib distribution this file may use.
const STANDARD: &[(&str, &[&str])] = &[
    ("receivers", &["otlp", "prometheus"]),
    (
        "processors",
        &[
            "batch",
            "memory_limiter",
            "resource",
            "attributes",
            "tail_sampling",
            "filter",
        ],
    ),
    (
        "exporters",
        &[
            "otlp",
            "otlphttp",
            "prometheus",
            "prometheusremotewrite",
            "debug",
        ],
    ),
    ("extensions", &["health_check", "pprof", "zpages"]),
];

/// `type[/name]` → `type`.
fn component_type(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn collector_config_wires_standard_components_only() {
    let path = telemetry_dir().join("otel-collector.yaml");
    let config: Value =
        serde_norway::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    for (kind, allowed) in STANDARD {
        for id in config[kind]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                allowed.contains(&component_type(id)),
                "{kind}.{id} is not a standard component"
            );
        }
    }
    for id in names(&config["service"]["extensions"]) {
        assert!(
            config["extensions"].get(&id).is_some(),
            "extension {id} undefined"
        );
    }

    let otlp = &config["receivers"]["otlp"]["protocols"];
    let endpoint = |p: &str| otlp[p]["endpoint"].as_str().unwrap_or_default().to_owned();
    assert!(
        endpoint("grpc").ends_with(":4317"),
        "OTLP gRPC on {}",
        endpoint("grpc")
    );
    assert!(
        endpoint("http").ends_with(":4318"),
        "OTLP HTTP on {}",
        endpoint("http")
    );

    let batch = &config["processors"]["batch"];
    let size = batch["send_batch_size"].as_u64().unwrap_or(0);
    let max = batch["send_batch_max_size"].as_u64().unwrap_or(0);
    assert!(
        size > 0 && size <= max,
        "batch {size} / max {max} is not bounded"
    );
    assert!(batch["timeout"].is_string(), "batch has no timeout");
    assert!(
        config["processors"]["memory_limiter"]["limit_mib"]
            .as_u64()
            .is_some()
    );

    let pipelines = config["service"]["pipelines"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for kind in ["traces", "metrics"] {
        assert!(pipelines.contains_key(kind), "no {kind} pipeline");
    }
    for (name, pipeline) in &pipelines {
        for section in ["receivers", "processors", "exporters"] {
            let ids = names(&pipeline[section]);
            assert!(
                !ids.is_empty() || section == "processors",
                "{name} has no {section}"
            );
            for id in &ids {
                assert!(
                    config[section].get(id).is_some(),
                    "{name}: {section} {id} undefined"
                );
            }
        }
        let processors = names(&pipeline["processors"]);
        assert_eq!(
            processors.first().map(String::as_str),
            Some("memory_limiter"),
            "{name}"
        );
        assert!(
            processors.iter().any(|p| p == "batch"),
            "{name} does not batch"
        );
    }
    let exporters = |p: &str| names(&pipelines[p]["exporters"]);
    assert!(
        exporters("traces")
            .iter()
            .any(|e| component_type(e).starts_with("otlp")),
        "traces go to no OTLP backend"
    );
    assert!(
        exporters("metrics")
            .iter()
            .any(|e| component_type(e).starts_with("prometheus")),
        "metrics go to no Prometheus exporter"
    );
}
