//! Logging and tracing set-up. Log lines: JSON in staging and production (with
//! `trace_id`/`span_id` inside a span), readable text in development; `RUST_LOG`
//! filters them (default `info` for services, `warn` for one-shot commands). Spans: the
//! standard `OTEL_*` variables (see [`settings`]) point an OTLP exporter (gRPC or
//! HTTP/protobuf) at a collector; `RUST_LOG` does not filter them, the sampler does. No
//! endpoint: no exporter, nothing attempted. Tokens and secrets are never logged nor put
//! in span attributes: the configuration types keep them in `SecretString`. Trace
//! context crosses NATS in W3C headers ([`propagation`]). Metrics: with a metrics
//! endpoint, a global OTel meter provider pushes every `OTEL_METRIC_EXPORT_INTERVAL`
//! ([`meters`]); the services' instruments come from `opentelemetry::global::meter`.

mod json_ids;
mod meters;
mod processor;
pub mod propagation;
pub mod settings;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

pub use processor::{dropped_spans, exported_spans};
pub use propagation::{extract, inject};
pub use settings::{OTEL_VARS, Protocol, SamplerKind, Settings};

use crate::config::LogFormat;

/// How long `main` waits for the last spans to leave at exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Who is tracing: the resource attributes besides `OTEL_RESOURCE_ATTRIBUTES`.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub default_name: &'static str,
    /// `service.version`.
    pub version: &'static str,
    /// `service.instance.id` (the gateway id; the worker's generated id).
    pub instance_id: String,
    /// `deployment.environment.name` (`development`, `staging`, `production`).
    pub environment: &'static str,
}

/// Keeps the tracer and meter providers; [`Telemetry::shutdown`] flushes them at exit.
#[must_use = "call shutdown() at exit so the last spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Whether spans are exported (an endpoint is set and the SDK is not disabled).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Whether metrics are pushed by OTLP (a metrics endpoint is set, SDK enabled).
    pub fn exporting_metrics(&self) -> bool {
        self.meters.is_some()
    }

    /// Flushes and stops the exporter, waiting at most `grace` (on a plain thread, not
    /// an async worker: without a collector the exporter retries for about a second).
    /// Both providers stop in parallel (the last metrics are pushed too).
    pub fn shutdown(self, grace: Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut waiting = 0;
        if let Some(provider) = self.provider {
            let tx = tx.clone();
            waiting += 1;
            std::thread::spawn(move || {
                let _ = tx.send(("span", provider.shutdown_with_timeout(grace)));
            });
        }
        if let Some(meters) = self.meters {
            waiting += 1;
            std::thread::spawn(move || {
                let _ = tx.send(("metric", meters.shutdown_with_timeout(grace)));
            });
        }
        let deadline = std::time::Instant::now() + grace + Duration::from_millis(100);
        for _ in 0..waiting {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((_, Ok(()))) => {}
                Ok((what, Err(e))) => tracing::debug!(error = %e, "{what} exporter shutdown"),
                Err(_) => break,
            }
        }
    }
}

/// Set once by [`init_service`] when spans go to an exporter.
static SPANS_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans (an OTLP endpoint is set and the SDK is on). A
/// hot path whose spans only matter to a trace backend (the gateway's deliveries and
/// acks) opens none without one, so tracing off costs it nothing.
pub fn spans_exported() -> bool {
    SPANS_EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global subscriber for a service (default level `info`) and, when the
/// `OTEL_*` variables of `vars` name an endpoint, the OTLP span pipeline. A second call
/// (tests) installs nothing and returns a handle without exporter. Returns the
/// handle and the warnings about the variables (log them once the subscriber is up).
pub fn init_service(
    format: LogFormat,
    service: ServiceInfo,
    vars: &HashMap<String, String>,
) -> (Telemetry, Vec<String>) {
    let (settings, mut warnings) = Settings::from_vars(vars, service.default_name);
    let resource = resource(&settings, &service);
    let meters = match settings.metrics.endpoint.as_deref() {
        Some(endpoint) => match meters::build(
            &settings.metrics,
            endpoint,
            settings.export_timeout,
            resource.clone(),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                warnings.push(format!("metrics are not exported: {e}"));
                None
            }
        },
        None => None,
    };
    // Without an endpoint (or with the SDK disabled) a provider without an exporter
    // still gives spans their ids and carries `traceparent` through this service, so a
    // producer's or the platform's trace is not cut here; nothing is exported.
    let mut exporting = false;
    let provider = match build_provider(&settings, settings.endpoint.as_deref(), resource.clone()) {
        Ok(p) => {
            exporting = settings.endpoint.is_some();
            Some(p)
        }
        Err(e) => {
            warnings.push(format!("traces are not exported: {e}"));
            build_provider(&settings, None, resource).ok()
        }
    };
    let otel = provider.as_ref().map(span_layer);
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(log_layer(format, "info"))
        .try_init()
        .is_ok();
    if !installed {
        // Not installed (a second call): stop the unused exporter threads.
        let unused = Telemetry { provider, meters };
        let _ = std::thread::spawn(move || unused.shutdown(SHUTDOWN_GRACE));
        let none = Telemetry {
            provider: None,
            meters: None,
        };
        return (none, warnings);
    }
    SPANS_EXPORTED.store(exporting, std::sync::atomic::Ordering::Relaxed);
    if let Some(p) = &provider {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    if let Some(m) = &meters {
        // Before the services build their instruments (they take the global meter).
        opentelemetry::global::set_meter_provider(m.clone());
    }
    (Telemetry { provider, meters }, warnings)
}

/// Installs the global subscriber for a service (default level `info`), logs only; a
/// second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format, "info"))
        .try_init();
}

/// Installs the global subscriber for a command-line tool whose stdout is its result:
/// default level `warn`, so connection chatter stays out of the terminal; spans are
/// not exported, only carried (`traceparent`) to what the command publishes.
pub fn init_cli(format: LogFormat) {
    // Spans without an exporter: a published event or submitted job still carries a
    // `traceparent`, so the services' spans of it form one trace.
    let provider = SdkTracerProvider::builder().build();
    let installed = tracing_subscriber::registry()
        .with(span_layer(&provider))
        .with(log_layer(format, "warn"))
        .try_init()
        .is_ok();
    if installed {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
    }
}

/// The span layer: only this project's spans at info or above (never the exporter's
/// HTTP/2 client, a feedback loop, nor other libraries'), and not `RUST_LOG`: log
/// quietness must not hide spans.
fn span_layer<S>(provider: &SdkTracerProvider) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ziraai"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_filter(
            filter::filter_fn(|m| {
                m.target().starts_with("ziraai") && *m.level() <= tracing::Level::INFO
            })
            // Every filter states its most verbose level: the global maximum (and the
            // `log` crate's, set from it) is then the loosest of them, so a disabled
            // `debug!`/`trace!` (the WebSocket libraries log each frame read) costs a
            // compare instead of a trip through the bridge and every layer's filter.
            .with_max_level_hint(filter::LevelFilter::INFO),
        )
        .boxed()
}

/// Trace lines of the WebSocket libraries (bridged from `log`), which print frames.
fn prints_frames(m: &tracing::Metadata<'_>) -> bool {
    *m.level() == tracing::Level::TRACE
        && (m.target().starts_with("tungstenite") || m.target().starts_with("tokio_tungstenite"))
}

/// The log-line layer, filtered by `RUST_LOG` (per layer: the span layer is not).
fn log_layer<S>(format: LogFormat, default_level: &str) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Whatever RUST_LOG says, never the WebSocket library's trace lines: they print
    // whole frames, and a client's `auth` frame carries its token.
    // `and` keeps `RUST_LOG`'s level as the hint only if both sides give one.
    let filter = filter::FilterExt::and(
        env,
        filter::filter_fn(|m| !prints_frames(m)).with_max_level_hint(filter::LevelFilter::TRACE),
    );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        // JSON lines name their span by `trace_id`/`span_id` only: the layer skips spans
        // (no field formatting per delivery span on the hot path).
        LogFormat::Json => fmt
            .fmt_fields(json_ids::JsonWithIds::fields())
            .event_format(json_ids::JsonWithIds::default())
            .with_filter(filter::FilterExt::and(
                filter,
                filter::filter_fn(|m| !m.is_span()).with_max_level_hint(filter::LevelFilter::TRACE),
            ))
            .boxed(),
        LogFormat::Pretty => fmt.compact().with_filter(filter).boxed(),
    }
}

/// The resource of both signals: `OTEL_RESOURCE_ATTRIBUTES` and the service's own.
fn resource(settings: &Settings, service: &ServiceInfo) -> Resource {
    let mut attrs: Vec<KeyValue> = settings
        .resource
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    attrs.push(KeyValue::new("service.version", service.version));
    attrs.push(KeyValue::new(
        "service.instance.id",
        service.instance_id.clone(),
    ));
    attrs.push(KeyValue::new(
        "deployment.environment.name",
        service.environment,
    ));
    Resource::builder_empty()
        .with_attributes(attrs)
        .with_service_name(settings.service_name.clone())
        .build()
}

/// The tracer provider: with the bounded OTLP export when `endpoint` is given, else
/// without any span processor (ids and propagation only, nothing attempted).
fn build_provider(
    settings: &Settings,
    endpoint: Option<&str>,
    resource: Resource,
) -> Result<SdkTracerProvider, String> {
    let Some(endpoint) = endpoint else {
        return Ok(SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler(settings.sampler))
            .build());
    };
    let limits = processor::Limits {
        queue: settings.queue_size,
        batch: settings.batch_size,
        delay: settings.schedule_delay,
        export_timeout: settings.export_timeout,
    };
    let endpoint = endpoint.to_string();
    let headers = settings.headers.clone();
    let timeout = settings.export_timeout;
    let exporter_resource = resource.clone();
    let processor = match settings.protocol {
        Protocol::Grpc => processor::BoundedBatch::start(limits, move || {
            let mut metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
            for (k, v) in &headers {
                let key =
                    tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|e| format!("header {k}: {e}"))?;
                let value = v
                    .parse()
                    .map_err(|_| format!("header {k}: invalid value"))?;
                metadata.insert(key, value);
            }
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_metadata(metadata)
                .build()
                .map_err(|e| e.to_string())?;
            opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &exporter_resource);
            Ok(exporter)
        }),
        Protocol::HttpProtobuf => processor::BoundedBatch::start(limits, move || {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(timeout)
                .with_headers(headers.into_iter().collect())
                .build()
                .map_err(|e| e.to_string())?;
            opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &exporter_resource);
            Ok(exporter)
        }),
    }
    .map_err(|e| format!("cannot start the export thread: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler(settings.sampler))
        .with_span_processor(processor)
        .build())
}

fn sampler(kind: SamplerKind) -> Sampler {
    match kind {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::Ratio(r) => Sampler::TraceIdRatioBased(r),
        SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentBasedRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}
