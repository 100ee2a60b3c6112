//! "Apply" a definition without needing the right to change it.
//!
//! Services start with a least-privilege credential that may read their streams'
//! definitions (`STREAM.INFO`, `CONSUMER.INFO`) but not create or update them (the
//! operator provisions them, `ziraai-worker provision`). So a service first reads what
//! the server has and changes it only when it differs from the shipped definition:
//! with provisioned streams no management request is ever sent; on a development
//! server without authorization the services still create what is missing.

use serde::Serialize;
use serde_json::Value;

/// Keys the server fills in or owns, never set by the shipped definitions.
const SERVER_OWNED: &[&str] = &["metadata", "created", "first_seq"];

/// Whether every field the definition sets has the same value on the server.
///
/// Both sides go through the client's own serializer, so defaults and units (durations
/// in nanoseconds) are written the same way; fields only the server has do not count.
pub(super) fn matches(wanted: &impl Serialize, actual: &impl Serialize) -> bool {
    match differing_field(wanted, actual) {
        None => true,
        Some(field) => {
            tracing::info!(field, "definition differs from the server's; applying it");
            false
        }
    }
}

/// The first field the definition sets that the server has otherwise.
fn differing_field(wanted: &impl Serialize, actual: &impl Serialize) -> Option<String> {
    let (Ok(Value::Object(wanted)), Ok(Value::Object(actual))) =
        (serde_json::to_value(wanted), serde_json::to_value(actual))
    else {
        return Some("(not an object)".into());
    };
    wanted
        .iter()
        .filter(|(k, _)| !SERVER_OWNED.contains(&k.as_str()))
        .find(|(k, v)| !actual.get(*k).map_or(is_zero(v), |a| same(v, a)))
        .map(|(k, _)| k.clone())
}

/// Equal, where a missing field and its zero value are the same, and an unset limit
/// (0 in a definition) is the server's "unlimited" (-1).
fn same(wanted: &Value, actual: &Value) -> bool {
    match (wanted, actual) {
        (Value::Object(w), Value::Object(a)) => w
            .iter()
            .all(|(k, v)| a.get(k).map_or(is_zero(v), |a| same(v, a))),
        (Value::Number(w), Value::Number(a)) if w.as_i64() == Some(0) => {
            a.as_i64() == Some(-1) || a.as_i64() == Some(0)
        }
        _ => wanted == actual,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_fields_a_definition_sets_count() {
        let wanted = json!({"name": "N", "max_age": 5, "republish": {"src": "a.>", "dest": "b.>"}});
        let server = json!({"name": "N", "max_age": 5, "metadata": {"_nats.level": "1"},
            "republish": {"src": "a.>", "dest": "b.>", "headers_only": false}, "sealed": false});
        assert!(matches(&wanted, &server));
        let changed =
            json!({"name": "N", "max_age": 6, "republish": {"src": "a.>", "dest": "b.>"}});
        assert!(!matches(&wanted, &changed), "a changed value is an update");
        let missing = json!({"name": "N", "max_age": 5});
        assert!(!matches(&wanted, &missing), "a missing field is an update");
        assert_eq!(
            differing_field(&wanted, &changed).as_deref(),
            Some("max_age")
        );
        assert!(
            matches(&json!({"metadata": {"x": "1"}}), &json!({})),
            "server-owned"
        );
        assert!(matches(
            &json!({"max_msgs_per_subject": 0}),
            &json!({"max_msgs_per_subject": -1})
        ));
    }
}
