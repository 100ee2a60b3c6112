//! The SignalR load client (in progress).

use tokio_util::sync::CancellationToken;

use super::{ClientConfig, Reporter};

pub(super) async fn run(_cfg: ClientConfig, report: Reporter, _cancel: CancellationToken) {
    report.disconnected(None, "the SignalR load client is not built yet".into());
}
