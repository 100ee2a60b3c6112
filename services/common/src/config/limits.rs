//! Process limits that set defaults: the open-file limit (the gateway's socket cap
//! defaults to a share of it), read from `/proc/self/limits` without a new dependency;
//! and the `N/s` rate syntax of per-socket frame limits.

use std::time::Duration;

use super::FrameRate;

/// Used when the open-file limit cannot be read (not Linux, no `/proc`).
const FALLBACK_OPEN_FILES: u64 = 1024;

/// The soft open-file limit of this process (`ulimit -n`).
pub fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| parse_open_files(&text))
        .unwrap_or(FALLBACK_OPEN_FILES)
}

/// The soft limit of the `Max open files` row (`unlimited` counts as `u64::MAX`).
fn parse_open_files(limits: &str) -> Option<u64> {
    let row = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = row
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// The default socket cap: `percent` of the open-file limit (at least 1).
pub(super) fn default_max_connections(percent: u64) -> usize {
    let cap = open_file_limit().saturating_mul(percent) / 100;
    usize::try_from(cap).unwrap_or(usize::MAX).max(1)
}

/// `100/s`, `6000/m`, `10/250ms`: a positive count per positive duration.
pub(super) fn parse_rate(raw: &str) -> Result<FrameRate, String> {
    let bad = || format!("{raw:?} is not a rate like 100/s or 6000/m");
    let (count, per) = raw.trim().split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = per.trim();
    // `/s` means one second: a bare unit gets the count 1.
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        super::parse::parse_duration(per).map_err(|_| bad())?
    } else {
        super::parse::parse_duration(&format!("1{per}")).map_err(|_| bad())?
    };
    if count == 0 || per.is_zero() {
        return Err(format!(
            "{raw:?} must be a positive count per a positive time"
        ));
    }
    Ok(FrameRate { count, per })
}

impl FrameRate {
    /// Time for one allowance to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_files_row() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63704                63704                processes \n\
                    Max open files            256                  4096                 files     \n";
        assert_eq!(parse_open_files(text), Some(256));
        assert_eq!(
            parse_open_files("Max open files            unlimited            unlimited   files"),
            Some(u64::MAX)
        );
        assert_eq!(parse_open_files("nothing here"), None);
        assert!(open_file_limit() > 0);
    }

    #[test]
    fn rates() {
        let r = parse_rate("100/s").expect("valid");
        assert_eq!((r.count, r.per), (100, Duration::from_secs(1)));
        assert_eq!(r.interval(), Duration::from_millis(10));
        assert_eq!(
            parse_rate(" 6000 / m ").map(|r| r.per),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            parse_rate("10/250ms").map(|r| r.per),
            Ok(Duration::from_millis(250))
        );
        for bad in ["", "100", "0/s", "100/0s", "x/s", "100/d", "-1/s", "1.5/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
