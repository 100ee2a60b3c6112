//! The report: one [`Row`] per measured case, the machine and the commit, written as
//! JSON (`<out>/<timestamp>.json`) and printed as a Markdown table with the feature
//! ratios under it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::procstat::Machine;

/// One measured case (a scenario, a rate of D, a protocol of B…). `None`: not measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) protocol: String,
    pub(crate) gateways: usize,
    pub(crate) sockets: usize,
    /// Paced rate (events/s); `None`: flat out or no events.
    pub(crate) target_rate: Option<u64>,
    /// Events acknowledged by JetStream, and failed publishes.
    pub(crate) acked: Option<u64>,
    pub(crate) publish_failed: u64,
    pub(crate) acked_per_s: Option<f64>,
    pub(crate) expected: Option<u64>,
    pub(crate) delivered: Option<u64>,
    pub(crate) lost: Option<u64>,
    pub(crate) duplicates: Option<u64>,
    /// Deliveries of events whose PubAck failed (stored anyway).
    pub(crate) extra: Option<u64>,
    pub(crate) delivered_per_s: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p90_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) p999_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
    pub(crate) connect_per_s: Option<f64>,
    /// Gateway RSS growth per socket (B, 100k).
    pub(crate) rss_per_socket_kib: Option<f64>,
    pub(crate) nats_rss_per_socket_kib: Option<f64>,
    pub(crate) client_rss_per_socket_kib: Option<f64>,
    /// Gateways' RSS (sum) and nats-server's at the end of the case.
    pub(crate) gateway_rss_kib: Option<u64>,
    /// Each gateway process's RSS at the end, and its CPU over the phase (ms).
    pub(crate) gateway_rss_each_kib: Vec<u64>,
    pub(crate) gateway_cpu_each_ms: Vec<u64>,
    pub(crate) nats_rss_kib: Option<u64>,
    /// CPU over the publishing phase, % of one core.
    pub(crate) gateway_cpu_pct: Option<f64>,
    pub(crate) nats_cpu_pct: Option<f64>,
    pub(crate) publisher_cpu_pct: Option<f64>,
    pub(crate) clients_cpu_pct: Option<f64>,
    /// Gateways' and nats-server's CPU per delivery.
    pub(crate) gateway_us_per_delivery: Option<f64>,
    pub(crate) nats_us_per_delivery: Option<f64>,
    /// C's delivered rate as a % of the ceiling's acked rate.
    pub(crate) of_ceiling_pct: Option<f64>,
    /// Storm: seconds from the restart (and from the kill) until every socket resumed.
    pub(crate) resumed_after_restart_s: Option<f64>,
    pub(crate) resumed_after_kill_s: Option<f64>,
    /// Gateways' total RSS sampled over a hold (KiB).
    pub(crate) rss_samples_kib: Vec<u64>,
    pub(crate) notes: Vec<String>,
}

/// A feature's cost: a variant against the baseline, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratio {
    pub(crate) name: String,
    pub(crate) cpu_per_delivery_x: Option<f64>,
    pub(crate) p50_x: Option<f64>,
    pub(crate) p99_x: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) started_utc: String,
    pub(crate) finished_utc: String,
    pub(crate) commit: String,
    pub(crate) machine: Machine,
    pub(crate) args: Vec<String>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) rows: Vec<Row>,
    pub(crate) ratios: Vec<Ratio>,
    pub(crate) errors: Vec<String>,
}

impl Report {
    /// Writes `<dir>/<started>.json`; returns its path.
    pub(crate) fn write_json(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let name = self.started_utc.replace([':', '-'], "");
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(self)?)?;
        Ok(path)
    }

    /// The Markdown: a header, the table, the ratios, the notes.
    pub(crate) fn markdown(&self) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ziraai-loadgen {} → {} UTC, commit {}, {} cores ({}), {} MiB, load {} → {}\n",
            self.started_utc,
            self.finished_utc,
            self.commit,
            m.cores,
            m.cpu_model,
            m.mem_total_mib,
            self.load_before,
            self.load_after
        );
        s.push_str(&table(&self.rows));
        if !self.ratios.is_empty() {
            s.push_str("\nFeature cost (variant / baseline, same run):\n\n");
            s.push_str("| variant | gateway CPU per delivery | p50 | p99 |\n|---|--:|--:|--:|\n");
            for r in &self.ratios {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    r.name,
                    times(r.cpu_per_delivery_x),
                    times(r.p50_x),
                    times(r.p99_x)
                );
            }
        }
        let notes: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| r.notes.iter().map(move |n| format!("- {}: {n}", label(r))))
            .collect();
        if !notes.is_empty() {
            s.push('\n');
            s.push_str(&notes.join("\n"));
            s.push('\n');
        }
        for e in &self.errors {
            let _ = writeln!(s, "- ERROR: {e}");
        }
        s
    }
}

fn label(r: &Row) -> String {
    format!("{} ({})", r.scenario, r.protocol)
}

const HEADER: &str = "| scenario | protocol | gw | sockets | rate/s | acked/s | delivered/s | p50 ms | p99 ms | max ms | lost | dup | gw µs/deliv | nats µs/deliv | CPU % gw/nats/pub/cli | RSS KiB/socket gw/nats | connect/s | other |";

/// The rows as a Markdown table.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(HEADER);
    s.push('\n');
    let cols = HEADER.matches('|').count() - 1;
    s.push('|');
    for i in 0..cols {
        s.push_str(if i < 4 { "---|" } else { "--:|" });
    }
    s.push('\n');
    for r in rows {
        let mut other = Vec::new();
        if let Some(p) = r.of_ceiling_pct {
            other.push(format!("{p:.0} % of ceiling"));
        }
        if let Some(t) = r.resumed_after_restart_s {
            other.push(format!("all resumed {t:.2} s after restart"));
        }
        if let Some(t) = r.resumed_after_kill_s {
            other.push(format!("{t:.2} s after stop"));
        }
        if let Some(e) = r.extra.filter(|&e| e > 0) {
            other.push(format!("{e} unacked delivered"));
        }
        if r.publish_failed > 0 {
            other.push(format!("{} publishes failed", r.publish_failed));
        }
        if !r.rss_samples_kib.is_empty() {
            let min = r.rss_samples_kib.iter().min().copied().unwrap_or(0);
            let max = r.rss_samples_kib.iter().max().copied().unwrap_or(0);
            other.push(format!(
                "gw RSS over hold {} → {} MiB",
                min / 1024,
                max / 1024
            ));
        }
        let cpu = match (r.gateway_cpu_pct, r.nats_cpu_pct) {
            (None, None) => "–".to_owned(),
            _ => format!(
                "{}/{}/{}/{}",
                num(r.gateway_cpu_pct, 0),
                num(r.nats_cpu_pct, 0),
                num(r.publisher_cpu_pct, 0),
                num(r.clients_cpu_pct, 0)
            ),
        };
        let rss = match r.rss_per_socket_kib {
            None => "–".to_owned(),
            Some(_) => format!(
                "{}/{}",
                num(r.rss_per_socket_kib, 1),
                num(r.nats_rss_per_socket_kib, 1)
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.protocol,
            r.gateways,
            r.sockets,
            match (r.target_rate, r.acked) {
                (Some(n), _) => n.to_string(),
                (None, Some(_)) => "max".to_owned(),
                (None, None) => "–".to_owned(),
            },
            num(r.acked_per_s, 0),
            num(r.delivered_per_s, 0),
            num(r.p50_ms, 2),
            num(r.p99_ms, 2),
            num(r.max_ms, 1),
            r.lost.map_or("–".into(), |n| n.to_string()),
            r.duplicates.map_or("–".into(), |n| n.to_string()),
            num(r.gateway_us_per_delivery, 1),
            num(r.nats_us_per_delivery, 1),
            cpu,
            rss,
            num(r.connect_per_s, 0),
            if other.is_empty() {
                "".into()
            } else {
                other.join("; ")
            },
        );
    }
    s
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

fn times(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("x{v:.2}"))
}

/// `a / b` when both are there and `b` is not 0.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: Vec<Row>) -> Report {
        Report {
            started_utc: "2026-11-26T10:00:00Z".into(),
            finished_utc: "2026-11-26T10:05:00Z".into(),
            commit: "abc1234".into(),
            machine: Machine {
                cores: 2,
                cpu_model: "Test CPU".into(),
                mem_total_mib: 1024,
                kernel: "6.1".into(),
            },
            args: vec![],
            load_before: "1.00 1.00 1.00".into(),
            load_after: "2.00 1.50 1.10".into(),
            rows,
            ratios: vec![Ratio {
                name: "tracking off".into(),
                cpu_per_delivery_x: Some(0.75),
                p50_x: None,
                p99_x: Some(1.1),
            }],
            errors: vec!["storm: not resumed".into()],
        }
    }

    #[test]
    fn markdown_has_a_row_per_case_with_dashes_for_unmeasured_cells() {
        let rows = vec![
            Row {
                scenario: "A".into(),
                protocol: "json".into(),
                gateways: 2,
                sockets: 2000,
                target_rate: Some(1000),
                acked_per_s: Some(1000.4),
                delivered_per_s: Some(999.6),
                p50_ms: Some(0.281),
                p99_ms: Some(1.29),
                max_ms: Some(7.04),
                lost: Some(0),
                duplicates: Some(0),
                gateway_us_per_delivery: Some(171.66),
                gateway_cpu_pct: Some(18.0),
                nats_cpu_pct: Some(20.0),
                publisher_cpu_pct: Some(3.0),
                clients_cpu_pct: Some(9.0),
                notes: vec!["shared machine".into()],
                ..Row::default()
            },
            Row {
                scenario: "C".into(),
                protocol: "json".into(),
                acked: Some(5),
                of_ceiling_pct: Some(71.2),
                publish_failed: 2,
                ..Row::default()
            },
        ];
        let md = report(rows).markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines[0].contains("commit abc1234, 2 cores (Test CPU)"),
            "{md}"
        );
        let head = lines
            .iter()
            .position(|l| l.starts_with("| scenario"))
            .expect("header");
        let cols = lines[head].matches('|').count();
        assert_eq!(lines[head + 1].matches('|').count(), cols);
        let a = lines[head + 2];
        assert_eq!(a.matches('|').count(), cols, "{a}");
        assert!(a.starts_with("| A | json | 2 | 2000 | 1000 | 1000 | 1000 | 0.28 | 1.29 | 7.0 | 0 | 0 | 171.7 | – | 18/20/3/9 | – |"), "{a}");
        let c = lines[head + 3];
        assert!(
            c.contains("| max |") && c.contains("71 % of ceiling; 2 publishes failed"),
            "{c}"
        );
        assert!(md.contains("| tracking off | x0.75 | – | x1.10 |"), "{md}");
        assert!(md.contains("- A (json): shared machine"));
        assert!(md.contains("- ERROR: storm: not resumed"));
    }

    #[test]
    fn json_report_is_written_under_its_start_time() {
        let dir = tempfile_dir();
        let path = report(vec![Row::default()])
            .write_json(&dir)
            .expect("written");
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some("20261126T100000Z.json")
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        assert_eq!(v["machine"]["cores"], 2);
        assert_eq!(v["rows"][0]["lost"], serde_json::Value::Null);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        std::env::temp_dir().join(format!("loadgen-report-{}", nuid::next()))
    }

    #[test]
    fn ratios_need_both_sides() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
    }
}
