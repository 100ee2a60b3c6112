//! Prometheus text exposition and the IP allow-list guarding `/metrics`.

use std::fmt::Write as _;
use std::net::IpAddr;

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

/// Builds a Prometheus text exposition.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    /// Adds one metric with its help line and type (`gauge` or `counter`).
    pub fn metric(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl std::fmt::Display,
    ) -> &mut Self {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
        self
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
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

    #[test]
    fn exposition_format() {
        let text = Exposition::default()
            .metric("x_total", "counter", "Things.", 3)
            .finish();
        assert_eq!(
            text,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n"
        );
    }
}
