//! A strict reader of the Prometheus text exposition format (0.0.4), for asserting on
//! `/metrics`: every line is a `# HELP`, a `# TYPE` or a sample; names and label
//! names are valid; each family is declared once, before its samples, and every
//! sample belongs to the family declared last; histograms have monotonic buckets
//! ending in `+Inf`, equal to `_count`, and a `_sum`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Labels of one sample, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name → type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: HashMap<String, String>,
    /// (sample name, labels) → value.
    pub samples: HashMap<(String, Labels), f64>,
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    !s.contains(':') && valid_name(s)
}

/// `{a="x",b="y"}` (without the braces) into labels; values unescaped.
fn parse_labels(raw: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return Err(format!("junk after a label: {rest:?}")),
        };
    }
    Ok(labels)
}

fn parse_value(raw: &str) -> Result<f64, String> {
    match raw {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Whether `sample` is a sample name of family `family` of type `kind`.
fn belongs(sample: &str, family: &str, kind: &str) -> bool {
    match kind {
        "histogram" => ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| sample.strip_suffix(s) == Some(family)),
        "summary" => {
            sample == family
                || ["_sum", "_count"]
                    .iter()
                    .any(|s| sample.strip_suffix(s) == Some(family))
        }
        _ => sample == family,
    }
}

impl Exposition {
    /// Parses `text`, or says what is wrong (with the line).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        let mut helped = HashSet::new();
        let mut current: Option<(String, String)> = None;
        let body = text.strip_suffix('\n').ok_or("no final newline")?;
        for (n, line) in body.split('\n').enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                if !valid_name(name) || !helped.insert(name.to_owned()) {
                    return Err(at("bad or repeated HELP".into()));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE".into()))?;
                let known = ["counter", "gauge", "histogram", "summary", "untyped"];
                if !valid_name(name) || !known.contains(&kind) {
                    return Err(at("bad TYPE".into()));
                }
                if out.types.insert(name.into(), kind.into()).is_some() {
                    return Err(at("family declared twice".into()));
                }
                current = Some((name.into(), kind.into()));
            } else if line.starts_with('#') || line.is_empty() {
                return Err(at("not a HELP, TYPE or sample line".into()));
            } else {
                let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => {
                        let inner = rest.strip_suffix('}').ok_or_else(|| at("no }".into()))?;
                        (name, parse_labels(inner).map_err(at)?)
                    }
                    None => (series, Labels::new()),
                };
                if !valid_name(name) {
                    return Err(at("bad metric name".into()));
                }
                match &current {
                    Some((family, kind)) if belongs(name, family, kind) => {}
                    _ => return Err(at("sample outside its family".into())),
                }
                let value = parse_value(value).map_err(at)?;
                if out.samples.insert((name.into(), labels), value).is_some() {
                    return Err(at("sample repeated".into()));
                }
            }
        }
        out.check_histograms()?;
        Ok(out)
    }

    fn check_histograms(&self) -> Result<(), String> {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let bucket = format!("{family}_bucket");
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for ((name, labels), v) in &self.samples {
                if *name == bucket {
                    let mut rest = labels.clone();
                    let le = rest
                        .remove("le")
                        .ok_or(format!("{family}: bucket without le"))?;
                    series
                        .entry(rest)
                        .or_default()
                        .push((parse_value(&le)?, *v));
                }
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!("{family}{labels:?}: buckets not monotonic"));
                }
                let inf = buckets.last().filter(|b| b.0 == f64::INFINITY);
                let count = self.get(&format!("{family}_count"), &labels);
                let sum = self.get(&format!("{family}_sum"), &labels);
                match (inf, count, sum) {
                    (Some(inf), Some(count), Some(_)) if inf.1 == count => {}
                    _ => return Err(format!("{family}{labels:?}: +Inf, _count or _sum wrong")),
                }
            }
        }
        Ok(())
    }

    fn get(&self, name: &str, labels: &Labels) -> Option<f64> {
        self.samples
            .get(&(name.to_owned(), labels.clone()))
            .copied()
    }

    /// The value of `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.get(name, &labels)
    }

    /// Every family name declared with `# TYPE`.
    pub fn families(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_and_refuses_bad_expositions() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 2\n\
                    # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\n\
                    h_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
        let e = Exposition::parse(good).expect("valid");
        assert_eq!(e.value("a_total", &[("k", "v\"")]), Some(2.0));
        assert_eq!(e.value("h_count", &[]), Some(2.0));
        for bad in [
            "a 1",                              // no final newline
            "# TYPE a gauge\n\na 1\n",          // blank line
            "# TYPE a gauge\nb 1\n",            // outside its family
            "# TYPE a gauge\n# TYPE a gauge\n", // twice
            "# TYPE 1a gauge\n",                // bad name
            "# TYPE a gauge\na{k=v} 1\n",       // unquoted
            "# TYPE a gauge\na x\n",            // bad value
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // no _sum
            "# comment\n",
        ] {
            assert!(Exposition::parse(bad).is_err(), "{bad:?}");
        }
    }
}
