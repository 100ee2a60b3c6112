//! What the bench reads about the machine and the gateway process (`/proc`), and the
//! side-by-side table of the runs.

use std::time::Duration;

/// Figures of one run against one gateway process.
pub(crate) struct Figures {
    pub(crate) label: &'static str,
    pub(crate) open_time: Duration,
    pub(crate) rss_per_socket_kib: f64,
    pub(crate) publish_time: Duration,
    pub(crate) expected: usize,
    /// Publish-to-receive latencies, sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Gateway user + system CPU from the first publish until the spans settled.
    pub(crate) cpu_ms: u64,
    /// Spans the collector received; `None` without a collector.
    pub(crate) spans_received: Option<usize>,
    /// `notify.deliver` spans received, and how many of them have a parent (the
    /// event's `traceparent`).
    pub(crate) deliver_spans: (usize, usize),
    /// The gateway's `/health` `traces.exported` / `traces.dropped`.
    pub(crate) spans_exported: u64,
    pub(crate) spans_dropped: u64,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
}

impl Figures {
    pub(crate) fn deliveries(&self) -> usize {
        self.latencies.len()
    }

    pub(crate) fn cpu_per_delivery_us(&self) -> f64 {
        self.cpu_ms as f64 * 1000.0 / self.deliveries().max(1) as f64
    }

    fn pct(&self, p: f64) -> Duration {
        let sorted = &self.latencies;
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i]
    }
}

/// One cell of a row, from a run's figures.
type Cell = Box<dyn Fn(&Figures) -> String>;

/// Prints the runs as one table, a column per run.
pub(crate) fn print_table(runs: &[Figures]) {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    let rows: Vec<(&str, Cell)> = vec![
        (
            "deliveries (received/expected)",
            Box::new(|f| format!("{}/{}", f.deliveries(), f.expected)),
        ),
        (
            "events published in (s)",
            Box::new(|f| format!("{:.2}", f.publish_time.as_secs_f64())),
        ),
        ("gateway CPU (ms)", Box::new(|f| f.cpu_ms.to_string())),
        (
            "CPU per delivery (µs)",
            Box::new(|f| format!("{:.1}", f.cpu_per_delivery_us())),
        ),
        ("latency p50 (ms)", Box::new(move |f| ms(f.pct(0.5)))),
        ("latency p90 (ms)", Box::new(move |f| ms(f.pct(0.9)))),
        ("latency p99 (ms)", Box::new(move |f| ms(f.pct(0.99)))),
        (
            "latency max (ms)",
            Box::new(move |f| ms(f.latencies.last().copied().unwrap_or_default())),
        ),
        (
            "spans received by collector",
            Box::new(|f| f.spans_received.map_or("-".into(), |n| n.to_string())),
        ),
        (
            "notify.deliver spans (parented)",
            Box::new(|f| match f.spans_received {
                Some(_) => format!("{} ({})", f.deliver_spans.0, f.deliver_spans.1),
                None => "-".into(),
            }),
        ),
        (
            "spans exported (gateway)",
            Box::new(|f| f.spans_exported.to_string()),
        ),
        (
            "spans dropped (gateway)",
            Box::new(|f| f.spans_dropped.to_string()),
        ),
        (
            "sockets opened in (s)",
            Box::new(|f| format!("{:.2}", f.open_time.as_secs_f64())),
        ),
        (
            "RSS per socket (KiB)",
            Box::new(|f| format!("{:.1}", f.rss_per_socket_kib)),
        ),
        ("load avg before", Box::new(|f| f.load_before.clone())),
        ("load avg after", Box::new(|f| f.load_after.clone())),
    ];
    let mut header = format!("| {:<32}", "");
    let mut rule = format!("|{}", "-".repeat(33));
    for f in runs {
        header.push_str(&format!("| {:>16} ", f.label));
        rule.push_str(&format!("|{}:", "-".repeat(17)));
    }
    println!("{header}|");
    println!("{rule}|");
    for (name, cell) in &rows {
        let mut line = format!("| {name:<32}");
        for f in runs {
            line.push_str(&format!("| {:>16} ", cell(f)));
        }
        println!("{line}|");
    }
    if let [off, on, ..] = runs
        && off.cpu_per_delivery_us() > 0.0
    {
        println!(
            "tracing on / off: CPU per delivery x{:.2}, p50 x{:.2}, p99 x{:.2}",
            on.cpu_per_delivery_us() / off.cpu_per_delivery_us(),
            ratio(on.pct(0.5), off.pct(0.5)),
            ratio(on.pct(0.99), off.pct(0.99)),
        );
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, in milliseconds.
pub(crate) fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 here, in ticks of 10 ms.
    (fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)) * 10
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}
