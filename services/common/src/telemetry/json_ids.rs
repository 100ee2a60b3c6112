//! JSON log lines with `trace_id` and `span_id` of the current span, so an operator
//! goes from a log line to its trace in the collector's backend.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// tracing-subscriber's flattened JSON line, plus `trace_id`/`span_id` when inside a
/// span that belongs to a valid trace.
pub(super) struct JsonWithIds {
    inner: Format<Json>,
}

impl Default for JsonWithIds {
    fn default() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                // The ids say which span; its fields are in the trace.
                .with_span_list(false),
        }
    }
}

impl JsonWithIds {
    /// The field formatter the JSON line format needs.
    pub(super) fn fields() -> JsonFields {
        JsonFields::new()
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        // The dispatcher's current span (this layer itself skips spans); before
        // formatting: `context()` takes the span's extensions for writing.
        let current = tracing::Span::current();
        let ids = (!current.is_none())
            .then(|| current.context())
            .and_then(|cx| {
                let span = cx.span();
                let sc = span.span_context();
                sc.is_valid()
                    .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
            });
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end();
        match body.strip_suffix('}') {
            Some(open) => {
                let sep = if open.ends_with('{') { "" } else { "," };
                writeln!(
                    writer,
                    "{open}{sep}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
                )
            }
            None => writer.write_str(&line),
        }
    }
}
