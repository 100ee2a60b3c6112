//! Small parsers for configuration values: durations, booleans, lists.

use std::time::Duration;

/// Longest duration any setting takes: one year.
const MAX_DURATION_SECS: u64 = 365 * 24 * 3600;

/// Parses `250ms`, `10s`, `5m`, `1h` (a bare number means seconds), at most a year.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 250ms, 10s, 5m or 1h"))?;
    let secs_per_unit = match unit.trim() {
        "ms" if n <= MAX_DURATION_SECS * 1000 => return Ok(Duration::from_millis(n)),
        "ms" => return Err(format!("{raw:?} is too long (at most 8760h)")),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{raw:?} has an unknown unit (use ms, s, m or h)")),
    };
    // A year bounds every setting (and keeps `Instant + d` from overflowing).
    n.checked_mul(secs_per_unit)
        .filter(|secs| *secs <= MAX_DURATION_SECS)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long (at most 8760h)"))
}

pub(super) fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{raw:?} is not a boolean (true/false)")),
    }
}

pub(super) fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
        // Overflowing seconds are an error, not a panic or a wrapped value.
        for long in [
            "9999999999999999h",
            "8761h",
            "31536001s",
            "18446744073709551615ms",
        ] {
            let e = parse_duration(long).expect_err("too long");
            assert!(e.contains("too long"), "{e}");
        }
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
        for bad in ["", "s", "-1s", "1.5s", "3 weeks", "10d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bools_and_lists() {
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert_eq!(parse_bool("off"), Ok(false));
        assert!(parse_bool("maybe").is_err());
        assert_eq!(split_list(" a, ,b "), vec!["a", "b"]);
    }
}
