//! `ZIRAAI_NATS_REPLICAS` / `[nats] replicas`: defaults per environment, layering and
//! the one-line refusal of a value JetStream cannot take.

use std::collections::HashMap;

use super::super::{GatewayServiceConfig, WorkerServiceConfig};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/config");

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m.entry("ZIRAAI_CONFIG_DIR".into()).or_default();
    m
}

/// The worker's replicas with the shipped file of `env` and `extra` variables.
fn shipped_replicas(env: &str, extra: &[(&str, &str)]) -> Result<usize, Vec<String>> {
    let mut v = vars(&[
        ("ZIRAAI_ENV", env),
        ("ZIRAAI_CONFIG_DIR", SHIPPED),
        ("ZIRAAI_NATS_USER", "worker"),
        ("ZIRAAI_NATS_PASSWORD", "from-a-secret"),
    ]);
    for (k, val) in extra {
        v.insert((*k).to_owned(), (*val).to_owned());
    }
    WorkerServiceConfig::load(&v)
        .map(|c| c.nats.replicas)
        .map_err(|e| e.0)
}

#[test]
fn the_shipped_files_replicate_staging_and_production_only() {
    assert_eq!(shipped_replicas("development", &[]), Ok(1));
    assert_eq!(shipped_replicas("staging", &[]), Ok(3));
    assert_eq!(shipped_replicas("production", &[]), Ok(3));
    // Without any file: one replica, and the variable wins over the file.
    let c = GatewayServiceConfig::load(&vars(&[])).expect("defaults");
    assert_eq!(c.nats.replicas, 1);
    assert_eq!(
        shipped_replicas("production", &[("ZIRAAI_NATS_REPLICAS", "1")]),
        Ok(1)
    );
    assert_eq!(
        shipped_replicas("development", &[("ZIRAAI_NATS_REPLICAS", " 5 ")]),
        Ok(5)
    );
    let g = GatewayServiceConfig::load(&vars(&[("ZIRAAI_NATS_REPLICAS", "3")])).expect("valid");
    assert_eq!(g.nats.replicas, 3);
    assert!(g.warnings.is_empty(), "a known variable: {:?}", g.warnings);
}

#[test]
fn replicas_outside_one_to_five_are_one_line_each() {
    for bad in ["0", "6", "three", "-1", "3.0"] {
        let e =
            shipped_replicas("development", &[("ZIRAAI_NATS_REPLICAS", bad)]).expect_err("refused");
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert_eq!(
            e[0],
            format!(
                "ZIRAAI_NATS_REPLICAS: {bad:?} is not a number of replicas from 1 to 5 \
                 (1 for a single server, 3 for a 3-node cluster)"
            )
        );
    }
}

#[test]
fn replicas_in_the_file_are_checked_like_the_variable() {
    let dir = tempfile_dir("replicas");
    let d = dir.to_string_lossy().into_owned();
    std::fs::write(dir.join("development.toml"), "[nats]\nreplicas = 0\n").expect("write");
    let e = WorkerServiceConfig::load(&vars(&[("ZIRAAI_CONFIG_DIR", &d)])).expect_err("0");
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(
        e.0[0].starts_with("ZIRAAI_NATS_REPLICAS (from the config file): \"0\" is not"),
        "{e}"
    );
    std::fs::write(dir.join("development.toml"), "[nats]\nreplicas = 3\n").expect("write");
    let c = GatewayServiceConfig::load(&vars(&[("ZIRAAI_CONFIG_DIR", &d)])).expect("3");
    assert_eq!(c.nats.replicas, 3);
    std::fs::write(dir.join("development.toml"), "[nats]\nreplicas = \"3\"\n").expect("write");
    let e = WorkerServiceConfig::load(&vars(&[("ZIRAAI_CONFIG_DIR", &d)])).expect_err("string");
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(e.0[0].contains("replicas"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ziraai-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
