//! Who the client is, by address: the TCP peer, unless the peer is a trusted proxy
//! (`ZIRAAI_TRUSTED_PROXIES`), in which case the forwarded chain of the one header the
//! proxies write (`ZIRAAI_TRUSTED_PROXY_HEADER`: `X-Forwarded-For`, or RFC 7239
//! `Forwarded` `for=`) is read from the right and the first hop that is not a trusted
//! proxy is the client. The other header is never read: a proxy passes it through as
//! the client wrote it. An untrusted peer's forwarded headers are ignored, and a hop
//! that is not an address makes the client [`UNKNOWN_CLIENT`].
//!
//! The serving loop resolves the address once per request and stores it as a
//! [`ClientIp`] extension; every per-IP limit ([`ClientIpKey`]) and allow-list reads it.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Request};
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor;
use ziraai_common::config::{ForwardedHeader, TrustedProxies};
use ziraai_common::metrics::IpRange;

/// The client's address as the gateway believes it (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientIp(pub(crate) IpAddr);

/// The rate limiters' key: the request's [`ClientIp`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIpKey;

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        req.extensions()
            .get::<ClientIp>()
            .map(|c| c.0)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// The client of a request whose forwarded chain has a hop that is not an address
/// (`unknown`, `_hidden`, garbage): all such clients share one rate-limit bucket, and
/// no allow-list holds it (the proxy's own address would be a way in).
pub(crate) const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// The client address of a request from `peer` with `headers`.
pub(crate) fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer.ip());
    if !IpRange::any_contains(&trusted.ranges, peer) {
        return peer;
    }
    let chain = forwarded_chain(headers, trusted.header);
    // Walk from the proxy nearest to us towards the client; stop at the first hop we do
    // not trust (that is who connected to our proxies).
    let mut client = peer;
    for hop in chain.iter().rev() {
        let Some(ip) = hop else { return UNKNOWN_CLIENT };
        client = canonical(*ip);
        if !IpRange::any_contains(&trusted.ranges, client) {
            break;
        }
    }
    client
}

/// The forwarded hops of `header`, client first. `None` marks a hop that is not an
/// address (`unknown`, an obfuscated `_name`, garbage, a header that is not text).
fn forwarded_chain(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    match header {
        ForwardedHeader::Forwarded => headers
            .get_all("forwarded")
            .iter()
            .map(|v| v.to_str().unwrap_or("for=unknown"))
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then(|| node(v))
                })
            })
            .collect(),
        ForwardedHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("unknown").split(','))
            .map(node)
            .collect(),
    }
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"').trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // `[v6]` without a port.
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// IPv4-mapped IPv6 addresses as IPv4, so limits and lists see one form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 40000)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        trusted_by(list, ForwardedHeader::XForwardedFor)
    }

    fn trusted_by(list: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            ranges: ranges(list),
            header,
        }
    }

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter()
            .map(|r| IpRange::parse(r).expect("range"))
            .collect()
    }

    #[test]
    fn an_untrusted_peers_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            resolve(peer("9.9.9.9"), &h, &TrustedProxies::default()),
            ip("9.9.9.9")
        );
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(resolve(peer("9.9.9.9"), &h, &t), ip("9.9.9.9"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client wrote a fake first hop; our proxies appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5")]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), ip("1.2.3.4"));
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4:5555"),
        ]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), ip("1.2.3.4"));
        // Only proxies: the farthest one is all we know.
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            resolve(peer("10.0.0.1"), &HeaderMap::new(), &t),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn only_the_configured_header_is_read_and_forwarded_takes_rfc_7239_forms() {
        // The proxies write X-Forwarded-For: a Forwarded header from the client passes
        // through them untouched and must not be believed (nor the reverse).
        let h = headers(&[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "7.7.7.7")]);
        let t = trusted(&["127.0.0.1"]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("7.7.7.7"));
        let t = trusted_by(&["127.0.0.1"], ForwardedHeader::Forwarded);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("6.6.6.6"));
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=\"192.0.2.43:47011\";by=10.0.0.1")]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("192.0.2.43"));
        let h = headers(&[("forwarded", "for=\"[::ffff:192.0.2.9]\"")]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("192.0.2.9"));
    }

    #[test]
    fn an_unreadable_hop_makes_the_client_unknown_not_the_proxy() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4, unknown, 10.0.0.7")]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), UNKNOWN_CLIENT);
        let t = trusted_by(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), UNKNOWN_CLIENT);
        assert!(!IpRange::any_contains(
            &ranges(&["10.0.0.0/8"]),
            UNKNOWN_CLIENT
        ));
    }

    #[test]
    fn mapped_peers_count_as_ipv4() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(resolve(peer("::ffff:127.0.0.1"), &h, &t), ip("1.2.3.4"));
        assert_eq!(
            resolve(
                peer("::ffff:9.9.9.9"),
                &HeaderMap::new(),
                &TrustedProxies::default()
            ),
            ip("9.9.9.9")
        );
    }
}
