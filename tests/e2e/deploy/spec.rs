//! What a manifest or a unit would run, extracted from the shipped files: the program,
//! its arguments, its environment (a container's `env` plus the ConfigMaps of its
//! `envFrom`; a unit's `EnvironmentFile=` plus `Environment=`), and the files it
//! reads, materialised under a temporary root: ConfigMap volumes with their data,
//! Secret volumes and systemd credentials with test secrets, files a unit's install
//! comment copies into place. Every absolute path in the environment is rewritten into
//! that root, and must point at something the manifest or unit provides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use ziraai_e2e::{NatsCluster, workspace_dir};

/// A JWT secret long enough for production (at least 32 bytes), fresh per run.
fn test_jwt_secret() -> String {
    format!("deploy-test-secret-{}-{}", nuid::next(), nuid::next())
}

/// Every YAML document of `path`, as JSON values.
pub(crate) fn yaml_docs(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

pub(crate) fn k8s_dir() -> PathBuf {
    workspace_dir().join("infra").join("k8s")
}

pub(crate) fn systemd_dir() -> PathBuf {
    workspace_dir().join("infra").join("systemd")
}

/// Every object of every manifest in `infra/k8s` (not the kustomization).
pub(crate) fn k8s_objects() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("infra/k8s")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            yaml_docs(&p)
                .into_iter()
                .map(move |d| (name.clone().unwrap_or_default(), d))
        })
        .collect()
}

/// The object of `kind` named `name`.
pub(crate) fn k8s_object(kind: &str, name: &str) -> Value {
    k8s_objects()
        .into_iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("infra/k8s has no {kind} {name}"))
}

/// The pod spec of a Deployment or a Job.
pub(crate) fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// What to start, and how the manifest or unit says it is probed and stopped.
pub(crate) struct Launch {
    pub(crate) what: String,
    /// The binary's file name (the tests run the one in ZIRAAI_TEST_BIN_DIR).
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    /// The environment as shipped, paths rewritten into `root`.
    pub(crate) env: BTreeMap<String, String>,
    /// `/health/ready` and `/health/live` of a container's probes, when it has them.
    pub(crate) ready_path: Option<String>,
    pub(crate) live_path: Option<String>,
    /// The container port the probes name.
    pub(crate) probe_port: Option<u16>,
    /// terminationGracePeriodSeconds or TimeoutStopSec.
    pub(crate) stop_limit: Duration,
    /// Kept for the files under it.
    pub(crate) _root: tempfile::TempDir,
}

impl Launch {
    /// The environment to start the process with here: the shipped one, with the NATS
    /// URLs of the test cluster and listen addresses on loopback port 0 (the
    /// [`invariants`](super::invariants) check the shipped ones).
    pub(crate) fn test_env(&self, nats: &NatsCluster) -> std::collections::HashMap<String, String> {
        let mut env: std::collections::HashMap<String, String> =
            self.env.clone().into_iter().collect();
        env.insert("ZIRAAI_NATS_URL".into(), nats.urls());
        let listen = match self.program.as_str() {
            "ziraai-gateway" => "ZIRAAI_GATEWAY_LISTEN",
            _ => "ZIRAAI_WORKER_LISTEN",
        };
        env.insert(listen.into(), "127.0.0.1:0".into());
        env
    }
}

/// Under `root`: `/a/b` becomes `<root>/a/b`.
fn rooted(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The content a secret file gets: the test server's password of the user the
/// environment names for `ZIRAAI_NATS_PASSWORD_FILE` (a placeholder without a
/// server), a fresh secret for the JWT.
fn secret_for(var: &str, env: &BTreeMap<String, String>, nats: Option<&NatsCluster>) -> String {
    match var {
        "ZIRAAI_NATS_PASSWORD_FILE" => {
            let user = env
                .get("ZIRAAI_NATS_USER")
                .unwrap_or_else(|| panic!("{var} without ZIRAAI_NATS_USER"));
            nats.map_or_else(|| "no-server".to_owned(), |n| n.password(user).to_owned())
        }
        "ZIRAAI_JWT_SECRET_FILE" => test_jwt_secret(),
        other => panic!("no test secret for {other}"),
    }
}

/// The one container of the Deployment or Job `kind`/`name`.
pub(crate) fn k8s_launch(kind: &str, name: &str, nats: Option<&NatsCluster>) -> Launch {
    let workload = k8s_object(kind, name);
    let pod = pod_spec(&workload);
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{name}: one container");
    let c = &containers[0];
    let root = tempfile::tempdir().expect("temp root");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().expect("a string").to_owned())
            .collect()
    };
    let command = strs(&c["command"]);
    let program = Path::new(command.first().expect("a command"))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("a binary");
    let mut args: Vec<String> = command[1..].to_vec();
    args.extend(strs(&c["args"]));
    // envFrom, then env (env wins, as in Kubernetes).
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let cm = k8s_object(
            "ConfigMap",
            from["configMapRef"]["name"].as_str().expect("a name"),
        );
        for (k, v) in cm["data"].as_object().expect("data") {
            env.insert(k.clone(), v.as_str().expect("a string").to_owned());
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let value = e["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {e} has no value"));
        env.insert(
            e["name"].as_str().expect("a name").to_owned(),
            value.to_owned(),
        );
    }
    // Mounted files: ConfigMap data as is, Secret items noted by their path.
    let mut secret_files = BTreeMap::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let mount = m["mountPath"].as_str().expect("mountPath");
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("{name}: no volume {}", m["name"]));
        if let Some(cm) = volume["configMap"]["name"].as_str() {
            for (key, text) in k8s_object("ConfigMap", cm)["data"]
                .as_object()
                .expect("data")
            {
                write(
                    &rooted(root.path(), &format!("{mount}/{key}")),
                    text.as_str().expect("text"),
                );
            }
        } else if volume["secret"].is_object() {
            for item in volume["secret"]["items"].as_array().expect("secret items") {
                let path = format!("{mount}/{}", item["path"].as_str().expect("path"));
                secret_files.insert(path, ());
            }
        } else {
            panic!("{name}: volume {volume} is neither a ConfigMap nor a Secret");
        }
    }
    for (var, value) in env.clone() {
        if !value.starts_with('/') {
            continue;
        }
        if secret_files.contains_key(&value) {
            write(&rooted(root.path(), &value), &secret_for(&var, &env, nats));
        }
        let local = rooted(root.path(), &value);
        assert!(
            local.exists(),
            "{name}: {var}={value} is not mounted in the container"
        );
        env.insert(var, local.to_string_lossy().into_owned());
    }
    let port_of = |probe: &Value| -> Option<u16> {
        let port = &probe["httpGet"]["port"];
        port.as_u64().map(|p| p as u16).or_else(|| {
            c["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == *port)
                .and_then(|p| p["containerPort"].as_u64())
                .map(|p| p as u16)
        })
    };
    let path_of = |probe: &Value| probe["httpGet"]["path"].as_str().map(str::to_owned);
    Launch {
        what: format!("{kind} {name}"),
        program,
        args,
        env,
        ready_path: path_of(&c["readinessProbe"]),
        live_path: path_of(&c["livenessProbe"]),
        probe_port: port_of(&c["readinessProbe"]),
        stop_limit: Duration::from_secs(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
        ),
        _root: root,
    }
}

/// `[Service]` (and other sections') settings of a unit, in order, repeated keys kept.
pub(crate) fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {l}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// The single value of `key` in a unit.
pub(crate) fn unit_value<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `KEY=VALUE` lines of an environment file (comments and blank lines skipped).
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The files the unit's header comment installs (`install … SRC DST`): DST → SRC.
fn installed_files(text: &str) -> BTreeMap<String, PathBuf> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(str::trim)
        .filter(|l| l.starts_with("install "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let (src, dst) = (words[words.len() - 2], words[words.len() - 1]);
            let dst = if dst.ends_with('/') {
                format!(
                    "{dst}{}",
                    Path::new(src)
                        .file_name()
                        .expect("a file")
                        .to_string_lossy()
                )
            } else {
                dst.to_owned()
            };
            (dst, workspace_dir().join(src))
        })
        .collect()
}

/// What the unit `infra/systemd/<unit>` would start: the installed files of its header
/// comment placed under a temporary root, its credentials in a credentials directory
/// (`%d`), `EnvironmentFile=` then `Environment=` (the later wins, as in systemd).
pub(crate) fn systemd_launch(unit: &str, nats: Option<&NatsCluster>) -> Launch {
    let text = std::fs::read_to_string(systemd_dir().join(unit)).expect("read the unit");
    let settings = unit_settings(&text);
    let root = tempfile::tempdir().expect("temp root");
    for (dst, src) in installed_files(&text) {
        let to = rooted(root.path(), &dst);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&src, &to)
            .unwrap_or_else(|e| panic!("{unit}: install {}: {e}", src.display()));
    }
    let creds = root.path().join("run/credentials").join(unit);
    let mut env = BTreeMap::new();
    for (key, value) in &settings {
        match key.as_str() {
            "EnvironmentFile" => {
                let local = rooted(root.path(), value);
                assert!(
                    local.exists(),
                    "{unit}: EnvironmentFile {value} is not installed"
                );
                env.extend(env_file(&local));
            }
            "Environment" => {
                let (k, v) = value.split_once('=').expect("KEY=VALUE");
                let v = v.replace("%d", &creds.to_string_lossy());
                env.insert(k.to_owned(), v);
            }
            _ => {}
        }
    }
    let credentials: Vec<String> = settings
        .iter()
        .filter(|(k, _)| k == "LoadCredential")
        .map(|(_, v)| v.split_once(':').expect("ID:PATH").0.to_owned())
        .collect();
    for (var, value) in env.clone() {
        if let Some(id) = value.strip_prefix(&format!("{}/", creds.to_string_lossy())) {
            assert!(
                credentials.iter().any(|c| c == id),
                "{unit}: {var} names no credential"
            );
            write(&creds.join(id), &secret_for(&var, &env, nats));
        } else if value.starts_with('/') {
            let local = rooted(root.path(), &value);
            assert!(local.exists(), "{unit}: {var}={value} is not installed");
            env.insert(var, local.to_string_lossy().into_owned());
        }
    }
    let exec: Vec<String> = unit_value(&settings, "ExecStart")
        .expect("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let program = Path::new(&exec[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("a binary");
    let stop = unit_value(&settings, "TimeoutStopSec").expect("TimeoutStopSec");
    Launch {
        what: unit.to_owned(),
        program,
        args: exec[1..].to_vec(),
        env,
        ready_path: None,
        live_path: None,
        probe_port: None,
        stop_limit: Duration::from_secs(stop.parse().expect("TimeoutStopSec in seconds")),
        _root: root,
    }
}
