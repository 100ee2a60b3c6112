//! Just enough PromQL reading for the contract check: the `ziraai_*` metric names an
//! expression selects and its `label="value"` matchers. Quoted strings are skipped, so a
//! regex like `job=~"ziraai-gateway"` or a label value is never taken for a metric.

/// Splits `expr` into (is_string, text) pieces: double-quoted literals and the rest.
fn pieces(expr: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in expr.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                out.push((true, std::mem::take(&mut current)));
                in_string = false;
                continue;
            }
            current.push(c);
        } else if c == '"' {
            out.push((false, std::mem::take(&mut current)));
            in_string = true;
        } else {
            current.push(c);
        }
    }
    out.push((in_string, current));
    out
}

/// The `ziraai_*` identifiers of `expr` outside string literals, in order.
pub(super) fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (is_string, text) in pieces(expr) {
        if is_string {
            continue;
        }
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if token.starts_with("ziraai_") {
                names.push(token.to_owned());
            }
        }
    }
    names
}

/// The `label="value"` (equality) matchers inside `{…}` selectors of `expr`.
pub(super) fn equality_matchers(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_selector = false;
    let mut pending_label: Option<String> = None;
    for (is_string, text) in pieces(expr) {
        if is_string {
            if let Some(label) = pending_label.take() {
                out.push((label, text));
            }
            continue;
        }
        pending_label = None;
        for c in text.chars() {
            match c {
                '{' => in_selector = true,
                '}' => in_selector = false,
                _ => {}
            }
        }
        if in_selector {
            // The text before a literal ends with `label=` for an equality matcher.
            let tail = text.rsplit([',', '{']).next().unwrap_or_default().trim();
            if let Some(label) = tail.strip_suffix('=')
                && !label.ends_with(['!', '=', '~'])
            {
                pending_label = Some(label.trim().to_owned());
            }
        }
    }
    out
}

#[test]
fn reads_names_and_matchers_but_not_strings() {
    let expr = r#"sum by (path) (rate(ziraai_gateway_events_total{path="gap_fill", job=~"ziraai_x|y"}[5m])) / ziraai_delivery_latency_seconds_count and up{instance!="ziraai_z"}"#;
    assert_eq!(
        metric_names(expr),
        [
            "ziraai_gateway_events_total",
            "ziraai_delivery_latency_seconds_count"
        ]
    );
    assert_eq!(
        equality_matchers(expr),
        [("path".to_owned(), "gap_fill".to_owned())]
    );
}
