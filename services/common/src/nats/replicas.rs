//! Replicas: refusing a NATS deployment with fewer JetStream servers than the
//! configured replicas, and never lowering a stream's replicas without being asked.
//!
//! Counting JetStream servers needs no privilege: the server's INFO (sent to every
//! client) has no `cluster` outside a cluster, so a single server is certain. Inside a
//! cluster, INFO only lists the servers up right now (`connect_urls`), which is fewer
//! than the cluster's size while a node restarts; there the meta leader's placement is
//! the authority, so a stream that cannot get its replicas is refused when it is
//! created or raised (JetStream error 10005, "no suitable peers for placement").

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::{Client, ServerInfo};

use super::NatsSetupError;

/// How to lower a stream's replicas on purpose (named by the warning that keeps them).
pub const LOWER_REPLICAS_COMMAND: &str = "ziraai-worker provision --lower-replicas";

/// Refuses a server outside a cluster when more than one replica is configured; in a
/// cluster with fewer servers up than replicas, warns (streams with replicas keep
/// working while a majority of their peers is up).
pub(super) fn check_servers(
    client: &Client,
    replicas: usize,
    urls: &str,
) -> Result<(), NatsSetupError> {
    let info = client.server_info();
    match servers(&info) {
        Servers::Single if replicas > 1 => Err(NatsSetupError::TooFewServers {
            urls: urls.to_owned(),
            servers: 1,
            replicas,
        }),
        Servers::Cluster { name, up: Some(up) } if up < replicas => {
            tracing::warn!(
                cluster = %name,
                up,
                replicas,
                "only {up} server(s) of NATS cluster {name} are up and {replicas} replicas are configured; streams that already have their replicas keep working, new ones are refused if the cluster is smaller"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What the server's INFO says about the servers behind it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Servers {
    /// Not in a cluster: exactly one JetStream server.
    Single,
    /// In cluster `name`, with `up` servers advertising client URLs (none known when
    /// the servers do not advertise).
    Cluster { name: String, up: Option<usize> },
}

pub(super) fn servers(info: &ServerInfo) -> Servers {
    match info.cluster.as_deref().filter(|c| !c.is_empty()) {
        None => Servers::Single,
        Some(name) => {
            let mut urls = info.connect_urls.clone();
            urls.sort();
            urls.dedup();
            Servers::Cluster {
                name: name.to_owned(),
                up: (!urls.is_empty()).then_some(urls.len()),
            }
        }
    }
}

/// Whether the server refused a stream because it cannot place its replicas.
pub(super) fn is_placement_error(e: &CreateStreamError) -> bool {
    match e.kind() {
        CreateStreamErrorKind::JetStream(js) => matches!(
            js.error_code(),
            ErrorCode::CLUSTER_NO_PEERS | ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
        ),
        _ => false,
    }
}

/// Whether the server answered with JetStream error `code`.
pub(super) fn is_error_code(e: &CreateStreamError, code: ErrorCode) -> bool {
    matches!(e.kind(), CreateStreamErrorKind::JetStream(js) if js.error_code() == code)
}

/// The warning when the server has more replicas than configured (they are kept).
pub(super) fn kept_warning(stream: &str, server: usize, configured: usize) -> String {
    format!(
        "stream {stream} has {server} replicas on the server, more than the {configured} configured (ZIRAAI_NATS_REPLICAS); keeping {server}. To lower it on purpose: {LOWER_REPLICAS_COMMAND} (with the operator credential)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> ServerInfo {
        serde_json::from_str(json).expect("INFO JSON")
    }

    #[test]
    fn a_server_outside_a_cluster_is_one_and_a_cluster_counts_its_servers_up() {
        // As the pinned 2.15.1 sends it, alone and in a 3-node cluster.
        let single = info(r#"{"server_name":"ziraai-dev","version":"2.15.1","jetstream":true}"#);
        assert_eq!(servers(&single), Servers::Single);
        let clustered = info(
            r#"{"server_name":"n1","jetstream":true,"cluster":"zc",
                "connect_urls":["127.0.0.1:35537","127.0.0.1:36475","127.0.0.1:43861"]}"#,
        );
        assert_eq!(
            servers(&clustered),
            Servers::Cluster {
                name: "zc".into(),
                up: Some(3)
            }
        );
        let no_advertise = info(r#"{"server_name":"n1","cluster":"zc"}"#);
        assert_eq!(
            servers(&no_advertise),
            Servers::Cluster {
                name: "zc".into(),
                up: None
            }
        );
    }

    #[test]
    fn the_refusal_names_the_server_both_numbers_and_the_fix() {
        let e = NatsSetupError::TooFewServers {
            urls: "nats://127.0.0.1:4222".into(),
            servers: 1,
            replicas: 3,
        };
        assert_eq!(
            e.to_string(),
            "NATS at nats://127.0.0.1:4222 has 1 JetStream server(s); ZIRAAI_NATS_REPLICAS=3 \
             needs at least 3 (set ZIRAAI_NATS_REPLICAS=1 for a single server)"
        );
        assert!(e.is_refusal());
        assert_eq!(
            kept_warning("NOTIFY", 3, 1),
            "stream NOTIFY has 3 replicas on the server, more than the 1 configured \
             (ZIRAAI_NATS_REPLICAS); keeping 3. To lower it on purpose: ziraai-worker provision \
             --lower-replicas (with the operator credential)"
        );
    }
}
