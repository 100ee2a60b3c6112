//! `infra/helm/nats-values.yaml`, checked as far as it can be without Helm or a
//! cluster (neither is installable here): it parses; it uses only keys the `nats`
//! chart 1.x documents (its README's merge/patch table and "Common Configurations");
//! the cluster has the replicas the services ask for; JetStream stores files on a
//! PVC; the ConfigMap carries `nats/auth.conf` verbatim and nats.conf includes it;
//! every password variable auth.conf reads comes from the users' Secret, under the key
//! the services' pods mount. Not verified here: that the chart renders these values
//! (no `helm template` offline) and that the rendered server starts.

use std::collections::BTreeSet;

use serde_json::Value;
use ziraai_e2e::workspace_dir;

use super::spec::{k8s_object, k8s_objects, pod_spec, yaml_docs};

/// Paths of the chart's values these files may set (chart `nats` 1.x, README).
const CHART_KEYS: &[&str] = &[
    "config.cluster.enabled",
    "config.cluster.replicas",
    "config.jetstream.enabled",
    "config.jetstream.fileStore.enabled",
    "config.jetstream.fileStore.dir",
    "config.jetstream.fileStore.pvc.enabled",
    "config.jetstream.fileStore.pvc.size",
    "config.jetstream.memoryStore.enabled",
    "config.merge",
    "configMap.merge",
    "container.env",
    "podTemplate.topologySpreadConstraints",
    "natsBox.enabled",
];

fn values() -> Value {
    let path = workspace_dir().join("infra/helm/nats-values.yaml");
    let mut docs = yaml_docs(&path);
    assert_eq!(docs.len(), 1, "one document");
    docs.remove(0)
}

/// Every path of `v` down to a chart key of [`CHART_KEYS`] (whose content is free).
fn paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if CHART_KEYS.contains(&prefix) {
        out.push(prefix.to_owned());
        return;
    }
    match v.as_object() {
        Some(map) => {
            for (k, child) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                paths(child, &p, out);
            }
        }
        None => out.push(prefix.to_owned()),
    }
}

#[test]
fn nats_values_use_documented_keys_for_a_replicated_jetstream_cluster() {
    let v = values();
    let mut used = Vec::new();
    paths(&v, "", &mut used);
    let unknown: Vec<&String> = used
        .iter()
        .filter(|p| !CHART_KEYS.contains(&p.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "not documented keys of the nats chart: {unknown:?}"
    );
    assert_eq!(v["config"]["cluster"]["enabled"], true);
    let replicas = v["config"]["cluster"]["replicas"]
        .as_u64()
        .expect("replicas");
    let asked = k8s_object("ConfigMap", "ziraai-env")["data"]["ZIRAAI_NATS_REPLICAS"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok())
        .expect("ZIRAAI_NATS_REPLICAS");
    assert_eq!(
        (replicas, asked),
        (3, 3),
        "NATS servers and stream replicas"
    );
    let js = &v["config"]["jetstream"];
    assert_eq!(js["enabled"], true);
    assert_eq!(js["fileStore"]["enabled"], true);
    assert_eq!(js["fileStore"]["pvc"]["enabled"], true);
    // The services' URLs name one pod per server.
    let toml = std::fs::read_to_string(workspace_dir().join("infra/config/production.toml"))
        .expect("production.toml");
    for i in 0..replicas {
        assert!(
            toml.contains(&format!("nats://nats-{i}.nats-headless.")),
            "nats-{i}"
        );
    }
}

#[test]
fn nats_values_include_the_shipped_auth_conf_with_passwords_from_the_secret() {
    let v = values();
    let auth_conf =
        std::fs::read_to_string(workspace_dir().join("nats/auth.conf")).expect("nats/auth.conf");
    assert_eq!(
        v["configMap"]["merge"]["data"]["auth.conf"].as_str(),
        Some(auth_conf.as_str()),
        "infra/helm/nats-values.yaml's auth.conf differs from nats/auth.conf"
    );
    let includes: Vec<&Value> = v["config"]["merge"]
        .as_object()
        .expect("config.merge")
        .iter()
        .filter(|(k, _)| k.ends_with("$include"))
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        includes,
        [&Value::from("auth.conf")],
        "nats.conf includes auth.conf"
    );
    // auth.conf's `password: $VAR` lines, one per user.
    let needed: BTreeSet<String> = auth_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("password: $"))
        .map(str::to_owned)
        .collect();
    assert_eq!(needed.len(), 4, "{needed:?}");
    let env = v["container"]["env"].as_object().expect("container.env");
    let given: BTreeSet<String> = env.keys().cloned().collect();
    assert_eq!(given, needed, "the server's password variables");
    let mut secret_keys = BTreeSet::new();
    for (var, value) in env {
        let r = &value["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], "ziraai-nats-users", "{var}");
        let key = r["key"].as_str().expect("a key");
        assert_eq!(var, &format!("ZIRAAI_NATS_{}_PASSWORD", key.to_uppercase()));
        secret_keys.insert(key.to_owned());
    }
    // Every pod's NATS password is its own user's key of the same Secret.
    for (file, o) in k8s_objects() {
        let pod = pod_spec(&o);
        let Some(container) = pod["containers"].get(0) else {
            continue;
        };
        let user = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "ZIRAAI_NATS_USER")
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{file}: no ZIRAAI_NATS_USER"));
        assert!(
            secret_keys.contains(user),
            "{file}: {user} is no user of auth.conf"
        );
        let items: Vec<&Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|vol| vol["secret"]["secretName"] == "ziraai-nats-users")
            .flat_map(|vol| vol["secret"]["items"].as_array().into_iter().flatten())
            .map(|item| &item["key"])
            .collect();
        assert_eq!(
            items,
            [&Value::from(user)],
            "{file}: mounts only its own password"
        );
    }
}
