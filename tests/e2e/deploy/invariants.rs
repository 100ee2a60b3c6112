//! What must hold between the manifests and the services' own configuration, read by
//! the services' real loaders from the environment and files the manifests set: the
//! grace period covers the preStop pause, the drain and the final flushes; probes
//! name the paths the services serve on the port they listen on; the autoscaler, the
//! disruption budget, the Service and the network policies select the gateway's pods.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use ziraai_common::{GatewayServiceConfig, WorkerServiceConfig};
use ziraai_e2e::workspace_dir;

use super::spec::{Launch, k8s_launch, k8s_object, k8s_objects, pod_spec};

/// After the socket drain the gateway takes at most about this long to exit: delivery
/// tracking flush 1 s, connection-limit entries 2 s, NATS drain 2 s, span export 2 s.
pub(crate) const GATEWAY_FINAL_STEPS: Duration = Duration::from_secs(7);
/// The worker after its grace: hand-back 2 s, final flush 2 s, span export 2 s.
pub(crate) const WORKER_FINAL_STEPS: Duration = Duration::from_secs(6);

fn vars(launch: &Launch) -> HashMap<String, String> {
    launch.env.clone().into_iter().collect()
}

/// The gateway's configuration as its Deployment sets it.
pub(crate) fn gateway_config(launch: &Launch) -> GatewayServiceConfig {
    GatewayServiceConfig::load(&vars(launch)).unwrap_or_else(|e| {
        panic!(
            "{}: the gateway refuses its configuration: {e}",
            launch.what
        )
    })
}

/// The worker's configuration as its Deployment sets it.
pub(crate) fn worker_config(launch: &Launch) -> WorkerServiceConfig {
    WorkerServiceConfig::load(&vars(launch))
        .unwrap_or_else(|e| panic!("{}: the worker refuses its configuration: {e}", launch.what))
}

fn labels(v: &Value) -> &serde_json::Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a label map: {v}"))
}

/// Whether every label of `selector` is on `pod`.
fn selects(selector: &Value, pod: &Value) -> bool {
    labels(selector).iter().all(|(k, v)| pod.get(k) == Some(v))
}

#[test]
fn the_gateway_grace_covers_prestop_drain_and_flushes() {
    let launch = k8s_launch("Deployment", "ziraai-gateway", None);
    let config = gateway_config(&launch);
    assert_eq!(config.env, ziraai_common::Environment::Production);
    let grace = config.gateway.shutdown_grace;
    assert_eq!(
        grace,
        Duration::from_secs(25),
        "production.toml's shutdown_grace"
    );
    let deployment = k8s_object("Deployment", "ziraai-gateway");
    let pod = pod_spec(&deployment);
    let pre_stop = Duration::from_secs(
        pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .expect("a preStop sleep"),
    );
    assert!(
        pre_stop >= Duration::from_secs(5),
        "preStop {pre_stop:?}: endpoints need time"
    );
    assert!(
        launch.stop_limit > pre_stop + grace + GATEWAY_FINAL_STEPS,
        "terminationGracePeriodSeconds {:?} <= preStop {pre_stop:?} + shutdown_grace {grace:?} + {GATEWAY_FINAL_STEPS:?}",
        launch.stop_limit
    );
    // A rolling update never lowers the number of ready gateways.
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    // The autoscaler owns the count: a `replicas` here would reset it at each apply.
    assert!(deployment["spec"].get("replicas").is_none());
}

#[test]
fn the_worker_grace_covers_its_jobs_and_flushes() {
    let launch = k8s_launch("Deployment", "ziraai-worker", None);
    let grace = worker_config(&launch).worker.shutdown_grace;
    assert!(
        launch.stop_limit > grace + WORKER_FINAL_STEPS,
        "terminationGracePeriodSeconds {:?} <= shutdown grace {grace:?} + {WORKER_FINAL_STEPS:?}",
        launch.stop_limit
    );
}

#[test]
fn probes_name_the_health_paths_on_the_listen_port() {
    let gateway = k8s_launch("Deployment", "ziraai-gateway", None);
    let worker = k8s_launch("Deployment", "ziraai-worker", None);
    let listens = [
        (&gateway, gateway_config(&gateway).gateway.listen),
        (&worker, worker_config(&worker).worker.listen),
    ];
    for (launch, listen) in listens {
        assert_eq!(
            launch.ready_path.as_deref(),
            Some("/health/ready"),
            "{}",
            launch.what
        );
        assert_eq!(
            launch.live_path.as_deref(),
            Some("/health/live"),
            "{}",
            launch.what
        );
        assert_eq!(
            launch.probe_port,
            Some(listen.port()),
            "{}: probe port",
            launch.what
        );
        // The kubelet probes the pod's address, not loopback.
        assert!(
            listen.ip().is_unspecified(),
            "{}: listens on {listen}",
            launch.what
        );
    }
}

#[test]
fn autoscaler_budget_service_and_policies_select_the_pods() {
    let deployment = k8s_object("Deployment", "ziraai-gateway");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert!(selects(selector, pod_labels), "the Deployment's selector");
    let hpa = k8s_object("HorizontalPodAutoscaler", "ziraai-gateway");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (&target["apiVersion"], &target["kind"], &target["name"]),
        (
            &deployment["apiVersion"],
            &deployment["kind"],
            &deployment["metadata"]["name"]
        )
    );
    assert!(
        hpa["spec"]["minReplicas"].as_u64() >= Some(2),
        "one gateway is a SPOF"
    );
    // CPU utilisation is relative to the request: the container must have one.
    let container = &pod_spec(&deployment)["containers"][0];
    assert!(container["resources"]["requests"]["cpu"].is_string());
    let pdb = k8s_object("PodDisruptionBudget", "ziraai-gateway");
    assert_eq!(
        &pdb["spec"]["selector"]["matchLabels"], selector,
        "the PDB's selector"
    );
    assert!(pdb["spec"]["maxUnavailable"].as_u64() < hpa["spec"]["minReplicas"].as_u64());
    let service = k8s_object("Service", "ziraai-gateway");
    assert!(
        selects(&service["spec"]["selector"], pod_labels),
        "the Service's selector"
    );
    let named = |port: &Value| {
        container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == *port || p["containerPort"] == *port)
    };
    for port in service["spec"]["ports"].as_array().expect("ports") {
        assert!(named(&port["targetPort"]), "Service port {port}");
    }
    // Each network policy selects one workload's pods and opens exactly its ports.
    for (_, policy) in k8s_objects()
        .iter()
        .filter(|(_, o)| o["kind"] == "NetworkPolicy")
    {
        let name = policy["metadata"]["name"].as_str().expect("a name");
        let workload = k8s_objects()
            .into_iter()
            .map(|(_, o)| o)
            .find(|o| o["kind"] != "NetworkPolicy" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("NetworkPolicy {name} has no workload"));
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&policy["spec"]["podSelector"]["matchLabels"], labels),
            "{name}"
        );
        let open: Vec<&Value> = policy["spec"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
            .map(|p| &p["port"])
            .collect();
        let ports: Vec<&Value> = pod_spec(&workload)["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| &p["containerPort"])
            .collect();
        assert_eq!(open, ports, "NetworkPolicy {name}");
    }
}

#[test]
fn the_config_map_holds_the_shipped_production_toml() {
    let cm = k8s_object("ConfigMap", "ziraai-config");
    let shipped = std::fs::read_to_string(workspace_dir().join("infra/config/production.toml"))
        .expect("production.toml");
    assert_eq!(
        cm["data"]["production.toml"].as_str(),
        Some(shipped.as_str()),
        "infra/k8s/config.yaml's production.toml differs from infra/config/production.toml"
    );
    let env = k8s_object("ConfigMap", "ziraai-env");
    assert_eq!(env["data"]["ZIRAAI_ENV"], "production");
    assert_eq!(env["data"]["ZIRAAI_CONFIG_DIR"], "/etc/ziraai/config");
}
