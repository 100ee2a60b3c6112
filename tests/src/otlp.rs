//! An OTLP receiver for tests: real OTLP over gRPC (the collector's `TraceService` and
//! `MetricsService`, tonic with the `opentelemetry-proto` types) or HTTP/protobuf
//! (`POST /v1/traces`, `POST /v1/metrics`), on `127.0.0.1:0`, collecting every span
//! and metric data point ([`metrics`]) for assertions. Two broken collectors too:
//! [`OtlpReceiver::stalled`] accepts connections and never answers, and
//! [`OtlpReceiver::unreachable`] is a closed port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) mod metrics;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One received span, flattened for assertions (ids in lowercase hex).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    /// The exporting service's resource attributes.
    pub resource: HashMap<String, String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// Export requests received (a sampler at 0 sends none).
    requests: Mutex<u64>,
    changed: Notify,
}

impl Collected {
    fn add(&self, req: ExportTraceServiceRequest) {
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(ReceivedSpan {
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: attributes(&s.attributes),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        resource: resource.clone(),
                    });
                }
            }
        }
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(out);
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_waiters();
    }
}

/// `POST` of one OTLP/HTTP protobuf export request (`/v1/traces`, `/v1/metrics`):
/// `add` keeps it, the answer is the empty (fully accepted) response.
fn protobuf_route<Req, Resp>(
    add: impl Fn(Req) + Clone + Send + Sync + 'static,
) -> axum::routing::MethodRouter
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + Default,
{
    axum::routing::post(move |body: Bytes| {
        let add = add.clone();
        async move {
            match Req::decode(body) {
                Ok(req) => {
                    add(req);
                    (
                        axum::http::StatusCode::OK,
                        [("content-type", "application/x-protobuf")],
                        Resp::default().encode_to_vec(),
                    )
                }
                Err(_) => (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "text/plain")],
                    b"not an OTLP export request".to_vec(),
                ),
            }
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attributes by key. A key exported twice is a bug (an attribute recorded
/// more than once is sent once per record): its value becomes `DUPLICATE:…` so any
/// assertion on it fails and names the problem.
fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for kv in kvs {
        let v = value(kv.value.as_ref());
        if let Some(first) = out.get(&kv.key) {
            let both = format!("DUPLICATE:{first}|{v}");
            out.insert(kv.key.clone(), both);
        } else {
            out.insert(kv.key.clone(), v);
        }
    }
    out
}

fn value(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

struct Grpc(Arc<Collected>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Which collector to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The `OTEL_EXPORTER_OTLP_PROTOCOL` value.
    pub fn env_value(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// A test collector (stops when dropped).
pub struct OtlpReceiver {
    addr: SocketAddr,
    protocol: OtlpProtocol,
    collected: Arc<Collected>,
    metrics: Arc<metrics::Collected>,
    stop: CancellationToken,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl OtlpReceiver {
    /// A working collector speaking `protocol`.
    pub async fn start(protocol: OtlpProtocol) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let collected = Arc::new(Collected::default());
        let points = Arc::new(metrics::Collected::default());
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        match protocol {
            OtlpProtocol::Grpc => {
                let incoming = tokio_stream_from(listener);
                let server = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Grpc(collected.clone())))
                    .add_service(MetricsServiceServer::new(metrics::Grpc(points.clone())))
                    .serve_with_incoming_shutdown(incoming, shutdown);
                tokio::spawn(async move {
                    let _ = server.await;
                });
            }
            OtlpProtocol::HttpProtobuf => {
                let (c, m) = (collected.clone(), points.clone());
                let app = axum::Router::new()
                    .route(
                        "/v1/traces",
                        protobuf_route::<ExportTraceServiceRequest, ExportTraceServiceResponse>(
                            move |req| c.add(req),
                        ),
                    )
                    .route(
                        "/v1/metrics",
                        protobuf_route::<
                            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
                            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse,
                        >(move |req| m.add(req)),
                    );
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .await;
                });
            }
        }
        Ok(Self {
            addr,
            protocol,
            collected,
            metrics: points,
            stop,
        })
    }

    /// A collector that accepts connections and never answers (nor reads).
    pub async fn stalled() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => held.push(socket),
                        Err(_) => return,
                    },
                }
            }
        });
        Ok(Self {
            addr,
            protocol: OtlpProtocol::Grpc,
            collected: Arc::default(),
            metrics: Arc::default(),
            stop,
        })
    }

    /// A closed port: connections are refused.
    pub async fn unreachable() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        drop(listener);
        Ok(Self {
            addr,
            protocol: OtlpProtocol::Grpc,
            collected: Arc::default(),
            metrics: Arc::default(),
            stop: CancellationToken::new(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `OTEL_EXPORTER_OTLP_ENDPOINT` of this collector.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `OTEL_*` variables that point a service here, exporting every 100 ms.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), self.endpoint()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".into(),
                self.protocol.env_value().into(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        *self
            .collected
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `done` holds for the received spans; the spans, or an error
    /// naming what arrived by the deadline.
    pub async fn wait_for<F>(&self, timeout: Duration, done: F) -> anyhow::Result<Vec<ReceivedSpan>>
    where
        F: Fn(&[ReceivedSpan]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.collected.changed.notified();
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
                anyhow::bail!("spans not as expected within {timeout:?}; received {names:?}");
            }
        }
    }
}

impl OtlpReceiver {
    /// Every metric data point received so far, in arrival order.
    pub fn points(&self) -> Vec<metrics::ReceivedPoint> {
        self.metrics.points()
    }

    /// The latest data point of `name` whose attributes include `attrs`.
    pub fn latest_point(
        &self,
        name: &str,
        attrs: &[(&str, &str)],
    ) -> Option<metrics::ReceivedPoint> {
        self.points().into_iter().rev().find(|p| {
            p.name == name
                && attrs
                    .iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Waits until `done` holds for the received data points; them, or an error
    /// naming the metrics that arrived by the deadline.
    pub async fn wait_for_points<F>(
        &self,
        timeout: Duration,
        done: F,
    ) -> anyhow::Result<Vec<metrics::ReceivedPoint>>
    where
        F: Fn(&[metrics::ReceivedPoint]) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.metrics.changed.notified();
            let points = self.points();
            if done(&points) {
                return Ok(points);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let mut names: Vec<_> = points.iter().map(|p| p.name.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                anyhow::bail!("metrics not as expected within {timeout:?}; received {names:?}");
            }
        }
    }
}

/// The listener as tonic's incoming stream of connections.
fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}
