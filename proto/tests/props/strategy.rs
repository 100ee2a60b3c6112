//! Strategies shared by the property suites: JSON values of every shape the codecs
//! carry, and the strings clients and producers send.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Any string: ASCII, controls, quotes, backslashes, multi-byte and astral characters.
pub(crate) fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        "[\\\\\"\\x00-\\x1f/]{0,8}",
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
}

/// A JSON number as serde_json holds it: i64, u64 above i64, or a finite float.
pub(crate) fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        (i64::MAX as u64..=u64::MAX).prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        (-1000.0f64..1000.0).prop_filter_map("finite", Number::from_f64),
    ]
}

/// A scalar JSON value.
pub(crate) fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        any_text().prop_map(Value::String),
    ]
}

/// Any JSON value, nested up to four levels.
pub(crate) fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any_text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object, as `data` of an envelope or an event.
pub(crate) fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(any_text(), value(), 0..6).prop_map(|m| m.into_iter().collect())
}

/// A JSON object whose keys are random or one of `known`, and whose values are random:
/// plausible frames with wrong, missing or surplus fields.
pub(crate) fn object_with_keys(known: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(known).prop_map(str::to_owned),
        any_text()
    ];
    prop::collection::btree_map(key, value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// `depth` arrays nested in each other around `null` (`[[[…null…]]]`).
pub(crate) fn nested_arrays(depth: usize) -> Value {
    (0..depth).fold(Value::Null, |v, _| Value::Array(vec![v]))
}
