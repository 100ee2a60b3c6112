//! The metrics half of the test OTLP receiver: the collector's `MetricsService` (gRPC)
//! and `POST /v1/metrics` (HTTP/protobuf), decoded with the `opentelemetry-proto`
//! types into flat data points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use tokio::sync::Notify;

use super::attributes;

/// One received data point, flattened (the latest export of a series is last).
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    pub name: String,
    /// `sum`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Sums: whether monotonic (a Prometheus `_total` counter).
    pub monotonic: bool,
    pub attributes: HashMap<String, String>,
    /// Sum or gauge value; a histogram's sum.
    pub value: f64,
    /// A histogram's count (0 otherwise).
    pub count: u64,
    /// A histogram's explicit bounds.
    pub bounds: Vec<f64>,
    pub resource: HashMap<String, String>,
}

#[derive(Default)]
pub(super) struct Collected {
    points: Mutex<Vec<ReceivedPoint>>,
    pub(super) changed: Notify,
}

impl Collected {
    pub(super) fn add(&self, req: ExportMetricsServiceRequest) {
        let mut out = Vec::new();
        for rm in req.resource_metrics {
            let resource = rm
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let point = |kind, monotonic, attrs, value, count, bounds| ReceivedPoint {
                        name: m.name.clone(),
                        kind,
                        monotonic,
                        attributes: attributes(attrs),
                        value,
                        count,
                        bounds,
                        resource: resource.clone(),
                    };
                    match &m.data {
                        Some(Data::Sum(s)) => out.extend(s.data_points.iter().map(|p| {
                            point(
                                "sum",
                                s.is_monotonic,
                                &p.attributes,
                                number(&p.value),
                                0,
                                vec![],
                            )
                        })),
                        Some(Data::Gauge(g)) => out.extend(g.data_points.iter().map(|p| {
                            point("gauge", false, &p.attributes, number(&p.value), 0, vec![])
                        })),
                        Some(Data::Histogram(h)) => out.extend(h.data_points.iter().map(|p| {
                            let (sum, count) = (p.sum.unwrap_or(0.0), p.count);
                            point(
                                "histogram",
                                false,
                                &p.attributes,
                                sum,
                                count,
                                p.explicit_bounds.clone(),
                            )
                        })),
                        _ => {}
                    }
                }
            }
        }
        self.points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(out);
        self.changed.notify_waiters();
    }

    pub(super) fn points(&self) -> Vec<ReceivedPoint> {
        self.points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    }
}

pub(super) struct Grpc(pub(super) Arc<Collected>);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}
