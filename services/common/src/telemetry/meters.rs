//! OTLP metrics: when an endpoint is configured (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
//! else the generic one), an [`SdkMeterProvider`] whose `PeriodicReader` collects every
//! `OTEL_METRIC_EXPORT_INTERVAL` on its own thread and hands the batch to the OTLP
//! exporter (gRPC or HTTP/protobuf). The exporter runs inside a small Tokio runtime of
//! its own ([`OwnRuntime`]): tonic and hyper need one, and the services' runtime may be
//! shutting down when the last export happens. Instruments record into atomics only;
//! delivery never waits for an export. No endpoint: nothing is built.

use std::time::Duration;

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use super::settings::{MetricsSettings, Protocol};

/// A metric exporter driven inside its own runtime, whatever thread calls it.
struct OwnRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    inner: opentelemetry_otlp::MetricExporter,
}

impl OwnRuntime {
    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> Option<T> {
        self.runtime.as_ref().map(|rt| rt.block_on(f))
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // Never blocks, whatever context the last reference is dropped in.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PushMetricExporter for OwnRuntime {
    fn export(
        &self,
        metrics: &ResourceMetrics,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Called by the reader's thread (outside any runtime): block on our own.
        let result = self.run(self.inner.export(metrics)).unwrap_or(Ok(()));
        std::future::ready(result)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        // Prometheus (and /metrics) are cumulative: so are the exported sums.
        Temporality::Cumulative
    }
}

/// Builds the meter provider for `settings` (an endpoint is set), with `resource`.
pub(crate) fn build(
    settings: &MetricsSettings,
    endpoint: &str,
    timeout: Duration,
    resource: Resource,
) -> Result<SdkMeterProvider, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otel-metrics")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the metrics runtime: {e}"))?;
    let inner = {
        // tonic's channel spawns its worker at build: inside our runtime.
        let _guard = runtime.enter();
        exporter(settings, endpoint, timeout)?
    };
    let exporter = OwnRuntime {
        runtime: Some(runtime),
        inner,
    };
    let reader = PeriodicReader::builder(exporter)
        .with_interval(settings.interval)
        .build();
    Ok(SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(reader)
        .build())
}

fn exporter(
    settings: &MetricsSettings,
    endpoint: &str,
    timeout: Duration,
) -> Result<opentelemetry_otlp::MetricExporter, String> {
    let endpoint = endpoint.to_string();
    match settings.protocol {
        Protocol::Grpc => {
            let mut metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
            for (k, v) in &settings.headers {
                let key =
                    tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|e| format!("header {k}: {e}"))?;
                let value = v
                    .parse()
                    .map_err(|_| format!("header {k}: invalid value"))?;
                metadata.insert(key, value);
            }
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_metadata(metadata)
                .with_temporality(Temporality::Cumulative)
                .build()
        }
        Protocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_headers(settings.headers.iter().cloned().collect())
            .with_temporality(Temporality::Cumulative)
            .build(),
    }
    .map_err(|e| e.to_string())
}
