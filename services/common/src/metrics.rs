//! What both services' metrics share: the IP allow-list guarding `/metrics`, the
//! latency histogram buckets, and helpers to encode values kept elsewhere (atomics
//! also shown by `/health`) through `prometheus-client` at scrape time.

use std::net::IpAddr;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// An address or a CIDR range (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    net: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// `127.0.0.1` and `::1`: the default allow-list.
    pub fn loopback() -> Vec<Self> {
        vec![
            Self {
                net: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                prefix: 32,
            },
            Self {
                net: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }

    /// Whether any range of `list` contains `ip`.
    pub fn any_contains(list: &[Self], ip: IpAddr) -> bool {
        list.iter().any(|r| r.contains(ip))
    }

    /// Parses `a.b.c.d`, `a.b.c.d/n`, or the IPv6 forms.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{raw:?} is not an IP address or CIDR range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{raw:?} has a bad prefix length")),
            },
        };
        Ok(Self { net, prefix })
    }

    /// Whether `ip` is inside the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask(u32::from(n).into(), u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => mask(u128::from(n), u128::from(a), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, addr: u128, prefix: u8, bits: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - u32::from(prefix);
    (net >> shift) == (addr >> shift)
}

/// One label of a metric family: `[(key, value)]`.
pub type Label = [(&'static str, &'static str); 1];

/// Histogram buckets (seconds) for deliveries: 0.1 ms to 10 s, about 2.5x apart.
pub const DELIVERY_LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Histogram buckets (seconds) for analyzer calls: 1 ms to 60 s.
pub const ANALYZER_LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A delivery latency histogram (a `fn`, so a [`Family`] can build its children).
///
/// [`Family`]: prometheus_client::metrics::family::Family
pub fn delivery_histogram() -> Histogram {
    Histogram::new(DELIVERY_LATENCY_BUCKETS)
}

/// A histogram for analyzer calls.
pub fn analyzer_histogram() -> Histogram {
    Histogram::new(ANALYZER_LATENCY_BUCKETS)
}

/// Encodes one counter family whose values live elsewhere (atomics the service keeps
/// for `/health` too), one sample per label value. Used by [`Collector`]s at scrape.
///
/// `name` is given without `_total` (the encoder adds it).
///
/// [`Collector`]: prometheus_client::collector::Collector
pub fn encode_counters(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    label_key: &'static str,
    values: &[(&'static str, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let label: Label = [(label_key, value)];
        ConstCounter::new(*count).encode(family.encode_family(&label)?)?;
    }
    Ok(())
}

/// Encodes one unlabelled counter whose value lives elsewhere.
pub fn encode_counter(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    value: u64,
) -> std::fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// The span exporter's counters (both services): spans sent to the collector, and
/// spans dropped (queue full, or an export that failed or timed out).
pub fn encode_span_counters(encoder: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    encode_counter(
        encoder,
        (
            "ziraai_telemetry_spans_exported",
            "Spans exported to the OTLP collector.",
        ),
        crate::telemetry::exported_spans(),
    )?;
    encode_counter(
        encoder,
        (
            "ziraai_telemetry_spans_dropped",
            "Spans dropped: the export queue was full, or an export failed or timed out.",
        ),
        crate::telemetry::dropped_spans(),
    )
}

/// Encodes one unlabelled gauge read at scrape time.
pub fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    value: i64,
) -> std::fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// The registry in the Prometheus text format (0.0.4), as `prometheus-client` writes it.
pub fn encode_text(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(e) = prometheus_text::encode(&mut text, registry) {
        // Only a failing writer errs, and a `String` does not fail.
        tracing::error!(error = %e, "metrics not encoded");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let lo = IpRange::parse("127.0.0.1").expect("valid");
        assert!(lo.contains("127.0.0.1".parse().expect("ip")));
        assert!(!lo.contains("127.0.0.2".parse().expect("ip")));
        assert!(
            lo.contains("::ffff:127.0.0.1".parse().expect("ip")),
            "mapped IPv4"
        );
        let ten = IpRange::parse("10.0.0.0/8").expect("valid");
        assert!(ten.contains("10.20.30.40".parse().expect("ip")));
        assert!(!ten.contains("11.0.0.1".parse().expect("ip")));
        assert!(
            IpRange::parse("::1")
                .expect("valid")
                .contains("::1".parse().expect("ip"))
        );
        assert!(
            IpRange::parse("0.0.0.0/0")
                .expect("valid")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in ["", "localhost", "10.0.0.0/33", "1.2.3.4/x"] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[derive(Debug)]
    struct Kept(u64);

    impl prometheus_client::collector::Collector for Kept {
        fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
            encode_counter(&mut e, ("x", "Things."), self.0)?;
            encode_counters(&mut e, ("y", "By kind."), "kind", &[("a", 1), ("b", 2)])?;
            encode_gauge(&mut e, ("z", "Level."), -1)
        }
    }

    #[test]
    fn kept_values_encode_as_prometheus_text() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Kept(3)));
        let h = delivery_histogram();
        registry.register("lat_seconds", "Latency.", h.clone());
        h.observe(0.002);
        let text = encode_text(&registry);
        for line in [
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n",
            "y_total{kind=\"a\"} 1\ny_total{kind=\"b\"} 2\n",
            "# TYPE z gauge\nz -1\n",
            "lat_seconds_bucket{le=\"0.001\"} 0\n",
            "lat_seconds_bucket{le=\"0.0025\"} 1\n",
            "lat_seconds_bucket{le=\"+Inf\"} 1\n",
            "lat_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "Prometheus text, not OpenMetrics");
    }
}
