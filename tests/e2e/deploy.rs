//! The operator's deployment files cannot rot: every manifest of `infra/k8s` passes the
//! Kubernetes schemas (PyPI's `kubernetes-validate`, strict, for the oldest and the
//! newest version the files support), the kustomization lists exactly those files,
//! the NATS Helm values carry the shipped `nats/auth.conf` and the users' passwords,
//! the systemd units pass `systemd-analyze verify`, the invariants between the files
//! and the services' configuration hold, and the real binaries, started with the
//! environment and files each manifest and unit sets, become ready and stop cleanly.

mod helm;
mod invariants;
mod running;
mod spec;
mod units;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use ziraai_e2e::{within_for, workspace_dir};

use spec::{k8s_dir, yaml_docs};

/// The oldest Kubernetes the manifests support (the preStop `sleep` action is on by
/// default from 1.30) and the newest the validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// Bound of one validator run (about a second per version).
const VALIDATE_RUN: Duration = Duration::from_secs(120);

/// `make kubernetes-validate` installs it here; `ZIRAAI_TEST_KUBERNETES_VALIDATE` overrides.
fn kubernetes_validate() -> PathBuf {
    if let Some(p) = std::env::var_os("ZIRAAI_TEST_KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    let requirements = workspace_dir().join("infra/scripts/kubernetes-validate.txt");
    let pins = std::fs::read_to_string(&requirements).expect("read the pins");
    let version = pins
        .lines()
        .find_map(|l| l.strip_prefix("kubernetes-validate=="))
        .expect("kubernetes-validate is pinned");
    workspace_dir()
        .join(".tools")
        .join(format!("kubernetes-validate-{version}"))
        .join("bin")
        .join("kubernetes-validate")
}

/// The manifests: every YAML file of `infra/k8s` but the kustomization.
fn manifest_files() -> BTreeSet<String> {
    std::fs::read_dir(k8s_dir())
        .expect("infra/k8s")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect()
}

#[tokio::test]
async fn manifests_pass_the_kubernetes_schemas() {
    let bin = kubernetes_validate();
    assert!(
        bin.exists(),
        "kubernetes-validate is not installed at {}: run `make kubernetes-validate` \
         (make test does; it installs the pinned PyPI package into .tools/)",
        bin.display()
    );
    let files = manifest_files();
    let objects: usize = files
        .iter()
        .map(|f| yaml_docs(&k8s_dir().join(f)).len())
        .sum();
    for version in KUBERNETES_VERSIONS {
        let out = within_for(
            VALIDATE_RUN,
            "kubernetes-validate",
            tokio::process::Command::new(&bin)
                .args(["--strict", "--kubernetes-version", version])
                .args(&files)
                .current_dir(k8s_dir())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate {version} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        // One verdict per object, every one a pass (nothing skipped as unknown).
        let passed = stdout
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert_eq!(passed, objects, "{version}:\n{stdout}\n{stderr}");
    }
}

#[test]
fn the_kustomization_applies_every_manifest_in_the_namespace_of_the_config() {
    let k = &yaml_docs(&k8s_dir().join("kustomization.yaml"))[0];
    assert_eq!(k["kind"], "Kustomization");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file").to_owned())
        .collect();
    assert_eq!(listed, manifest_files(), "kustomization.yaml resources");
    // The services reach NATS at <pod>.nats-headless.<namespace>.svc: the namespace the
    // manifests land in.
    let namespace = k["namespace"].as_str().expect("a namespace");
    let toml = std::fs::read_to_string(workspace_dir().join("infra/config/production.toml"))
        .expect("production.toml");
    assert!(
        toml.contains(&format!(".nats-headless.{namespace}.svc:4222")),
        "production.toml's NATS URLs are not in namespace {namespace}"
    );
    // Every container runs the image the kustomization pins.
    let image = k["images"][0]["name"].as_str().expect("an image name");
    for (file, o) in spec::k8s_objects() {
        for c in spec::pod_spec(&o)["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(c["image"], image, "{file}: {}", c["name"]);
        }
    }
}
