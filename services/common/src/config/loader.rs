//! Reading single values: a variable wins over the file's value, which wins over the
//! default; problems are collected, not returned one by one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use super::parse::parse_duration;

/// Collects problems instead of stopping at the first.
pub(super) struct Loader<'a> {
    pub(super) vars: &'a HashMap<String, String>,
    pub(super) errors: Vec<String>,
}

impl Loader<'_> {
    pub(super) fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Variable wins over the file value; `parse` turns text into the type.
    pub(super) fn pick<T>(
        &mut self,
        var: &str,
        file: Option<String>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        let (source, raw) = match (self.var(var), file) {
            (Some(v), _) => (var.to_owned(), v.to_owned()),
            (None, Some(f)) => (format!("{var} (from the config file)"), f),
            (None, None) => return default,
        };
        match parse(&raw) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(format!("{source}: {e}"));
                default
            }
        }
    }

    /// A secret from `NAME` or from the file named by `NAME_FILE` (not both).
    pub(super) fn secret(&mut self, name: &str) -> Option<SecretString> {
        let file_var = format!("{name}_FILE");
        match (self.var(name), self.var(&file_var)) {
            (Some(_), Some(_)) => {
                self.errors
                    .push(format!("set {name} or {file_var}, not both"));
                None
            }
            (Some(v), None) => Some(SecretString::from(v.to_owned())),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(s) => Some(SecretString::from(
                    s.trim_end_matches(['\r', '\n']).to_owned(),
                )),
                Err(e) => {
                    self.errors
                        .push(format!("{file_var}: cannot read {path:?}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }
}

pub(super) fn parse_positive(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{raw:?} is not a positive integer")),
    }
}

/// A positive count that fits in `u32` (larger values are capped).
pub(super) fn parse_positive_u32(raw: &str) -> Result<u32, String> {
    parse_positive(raw).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) fn parse_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("{raw:?} is not an address like 127.0.0.1:8080"))
}

/// A built-in default address (the constants are valid; the tests load them).
pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

pub(super) fn parse_nonzero_duration(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    if d.is_zero() {
        return Err(format!("{raw:?} must be greater than zero"));
    }
    Ok(d)
}
