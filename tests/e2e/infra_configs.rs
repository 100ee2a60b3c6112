//! The operator files under `infra/telemetry/` cannot rot: the Prometheus configuration
//! and alert rules pass Debian's `promtool` (`check config`, `check rules`, and the alert
//! unit tests of `alerts.test.yml` with `test rules`), the collector configuration parses
//! and wires only defined, standard components, the Grafana dashboard is importable JSON
//! on the `${DS_PROMETHEUS}` datasource variable, and every `ziraai_*` metric the rules
//! and the dashboard name is one of [`EXPORTED`], the services' metric contract.

mod collector;
mod promql;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use ziraai_e2e::{within_for, workspace_dir};

/// The metric families both services export (README, "Telemetry"), as written in the
/// Prometheus text: counters with `_total`, histograms by their base name.
pub(crate) const EXPORTED: &[&str] = &[
    // gateway
    "ziraai_delivery_latency_seconds",
    "ziraai_gateway_connections",
    "ziraai_gateway_users",
    "ziraai_gateway_events_total",
    "ziraai_gateway_events_dropped_total",
    "ziraai_gateway_slow_consumers_total",
    "ziraai_gateway_acks_total",
    "ziraai_gateway_cursor_writes_total",
    "ziraai_gateway_tracking_dropped_total",
    "ziraai_gateway_connection_limit_evictions_total",
    "ziraai_gateway_nats_connected",
    "ziraai_gateway_ready",
    // worker
    "ziraai_worker_jobs_total",
    "ziraai_analyzer_latency_seconds",
    "ziraai_worker_breaker_open",
    "ziraai_worker_queue_pending",
    "ziraai_worker_in_flight",
    "ziraai_worker_ready",
    "ziraai_worker_events_published_total",
    "ziraai_worker_events_duplicate_total",
];

/// The histograms among [`EXPORTED`]: queried through `_bucket`, `_sum` and `_count`.
const HISTOGRAMS: &[&str] = &[
    "ziraai_delivery_latency_seconds",
    "ziraai_analyzer_latency_seconds",
];

/// Label values the contract fixes; a selector with another value matches nothing.
pub(crate) const LABEL_VALUES: &[(&str, &[&str])] = &[
    (
        "protocol",
        &[
            "native-json",
            "native-msgpack",
            "signalr-json",
            "signalr-msgpack",
        ],
    ),
    ("path", &["live", "replay", "gap_fill"]),
    ("result", &["ok", "error"]),
    ("reason", &["malformed", "forged"]),
    (
        "outcome",
        &["completed", "failed", "retried", "poison", "handed_back"],
    ),
];

/// Alerts the issue asks for (readiness, slow consumers, latency p99, gap detections,
/// breaker open, queue depth growing) plus forged messages and eviction spikes.
const REQUIRED_ALERTS: &[&str] = &[
    "ZiraaiGatewayNotReady",
    "ZiraaiWorkerNotReady",
    "ZiraaiSlowConsumerCloses",
    "ZiraaiDeliveryLatencyP99High",
    "ZiraaiGapFillsRising",
    "ZiraaiWorkerBreakerOpen",
    "ZiraaiJobQueueGrowing",
    "ZiraaiForgedLiveMessages",
    "ZiraaiConnectionLimitEvictionsSpike",
];

/// Where Debian installs promtool (`make promtool`); `ZIRAAI_TEST_PROMTOOL` overrides.
const PROMTOOL: &str = "/usr/bin/promtool";
/// Bound of one promtool run (the alert unit tests take well under a second).
const PROMTOOL_RUN: Duration = Duration::from_secs(60);

fn telemetry_dir() -> PathBuf {
    workspace_dir().join("infra").join("telemetry")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs `promtool <args>` in `infra/telemetry` and returns its stdout; fails the test
/// with promtool's own report when it exits non-zero.
async fn promtool(args: &[&str]) -> String {
    let bin =
        std::env::var_os("ZIRAAI_TEST_PROMTOOL").map_or_else(|| PROMTOOL.into(), PathBuf::from);
    assert!(
        bin.exists(),
        "promtool is not installed at {}: run `make promtool` (make test does; it runs \
         `apt-get install prometheus`)",
        bin.display()
    );
    let out = within_for(
        PROMTOOL_RUN,
        "promtool",
        tokio::process::Command::new(&bin)
            .args(args)
            .current_dir(telemetry_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn prometheus_config_and_rules_pass_promtool() {
    let config = promtool(&["check", "config", "prometheus.yml"]).await;
    assert!(config.contains("SUCCESS: 1 rule files found"), "{config}");
    let rules = promtool(&["check", "rules", "alerts.yml"]).await;
    let count = rule_file()
        .groups
        .iter()
        .map(|g| g.rules.len())
        .sum::<usize>();
    assert!(
        rules.contains(&format!("SUCCESS: {count} rules found")),
        "{rules}"
    );
}

#[tokio::test]
async fn alert_rules_fire_as_their_unit_tests_expect() {
    let out = promtool(&["test", "rules", "alerts.test.yml"]).await;
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert of the rule file has a unit test that shows it firing.
    let path = telemetry_dir().join("alerts.test.yml");
    let tests: Value =
        serde_norway::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let firing: BTreeSet<&str> = tests["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|case| case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|case| case["alertname"].as_str())
        .collect();
    for rule in rule_file().groups.iter().flat_map(|g| &g.rules) {
        assert!(
            firing.contains(rule.alert.as_str()),
            "alerts.test.yml has no firing case for {}",
            rule.alert
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

fn rule_file() -> RuleFile {
    let path = telemetry_dir().join("alerts.yml");
    serde_norway::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fails with every expression that names a metric outside the contract, or a label
/// value the contract does not have.
fn assert_contract(exprs: &[(String, String)]) {
    let mut problems = Vec::new();
    for (place, expr) in exprs {
        let metrics = promql::metric_names(expr);
        if metrics.is_empty() && !expr.contains("up{") {
            problems.push(format!("{place}: names no ziraai_ metric: {expr}"));
        }
        for name in metrics {
            if !is_exported(&name) {
                problems.push(format!("{place}: {name} is not an exported metric"));
            }
        }
        for (label, value) in promql::equality_matchers(expr) {
            if let Some((_, allowed)) = LABEL_VALUES.iter().find(|(l, _)| *l == label)
                && !allowed.contains(&value.as_str())
            {
                problems.push(format!(
                    "{place}: {label}=\"{value}\" is not one of {allowed:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn is_exported(name: &str) -> bool {
    EXPORTED.contains(&name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

#[test]
fn alert_rules_are_the_required_ones_over_exported_metrics() {
    let file = rule_file();
    let groups: BTreeSet<&str> = file.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups.len(), file.groups.len(), "group names repeat");
    // Every alert says how long it must hold, in minutes (`0m` on purpose for counters
    // that should never move: forged messages, poison jobs).
    for rule in file.groups.iter().flat_map(|g| &g.rules) {
        assert!(
            rule.for_.ends_with('m'),
            "{}: for {:?}",
            rule.alert,
            rule.for_
        );
    }
    let rules: Vec<AlertRule> = file.groups.into_iter().flat_map(|g| g.rules).collect();
    let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    assert_eq!(names.len(), rules.len(), "alert names repeat");
    for required in REQUIRED_ALERTS {
        assert!(names.contains(required), "alerts.yml lacks {required}");
    }
    for rule in &rules {
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{}: severity {severity:?}",
            rule.alert
        );
        for key in ["summary", "description"] {
            assert!(
                rule.annotations.get(key).is_some_and(|s| !s.is_empty()),
                "{} has no {key}",
                rule.alert
            );
        }
    }
    let exprs: Vec<(String, String)> = rules
        .iter()
        .map(|r| (r.alert.clone(), r.expr.clone()))
        .collect();
    assert_contract(&exprs);
    // The latency alert is the per-protocol p99 of the issue.
    let p99 = rules
        .iter()
        .find(|r| r.alert == "ZiraaiDeliveryLatencyP99High")
        .map(|r| r.expr.as_str());
    assert_eq!(
        p99,
        Some(
            "histogram_quantile(0.99, sum by (le, protocol) \
             (rate(ziraai_delivery_latency_seconds_bucket[5m]))) > 0.5"
        )
    );
}

/// Panels (and rows) of the 24-column grid never cover the same cell.
fn assert_no_overlap(panels: &Value) {
    let mut cells = BTreeSet::new();
    for panel in panels.as_array().into_iter().flatten() {
        let g = &panel["gridPos"];
        let at = |k: &str| g[k].as_u64().unwrap_or(0);
        assert!(at("w") > 0 && at("h") > 0 && at("x") + at("w") <= 24, "{g}");
        for x in at("x")..at("x") + at("w") {
            for y in at("y")..at("y") + at("h") {
                assert!(
                    cells.insert((x, y)),
                    "{} overlaps another panel",
                    panel["title"]
                );
            }
        }
    }
}

/// Every panel of the dashboard with its queries (rows may nest panels).
fn panels(list: &Value, out: &mut Vec<Value>) {
    for panel in list.as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            panels(&panel["panels"], out);
        } else {
            out.push(panel.clone());
        }
    }
}

#[test]
fn dashboard_is_importable_and_queries_exported_metrics() {
    let path = telemetry_dir().join("grafana").join("ziraai-realtime.json");
    let dash: Value = serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let ds_var = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "DS_PROMETHEUS");
    assert!(
        ds_var.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no datasource variable DS_PROMETHEUS"
    );
    let mut all = Vec::new();
    panels(&dash["panels"], &mut all);
    let ids: BTreeSet<u64> = all.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_no_overlap(&dash["panels"]);
    assert_eq!(ids.len(), all.len(), "panel ids missing or repeated");
    let mut exprs = Vec::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = target["expr"].as_str().unwrap_or_default();
            exprs.push((title.clone(), expr.to_owned()));
        }
    }
    assert_contract(&exprs);
    // The panels the issue names: every metric family of the contract is on the board.
    let shown: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| promql::metric_names(e))
        .map(|n| n.trim_end_matches("_bucket").to_owned())
        .collect();
    let missing: Vec<&&str> = EXPORTED.iter().filter(|m| !shown.contains(**m)).collect();
    assert!(missing.is_empty(), "dashboard shows none of {missing:?}");
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            exprs
                .iter()
                .any(|(_, e)| e
                    .starts_with(&format!("histogram_quantile({q}, sum by (le, protocol)"))),
            "no per-protocol p{q} delivery latency panel"
        );
    }
}
