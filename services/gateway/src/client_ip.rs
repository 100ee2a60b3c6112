//! Who the client is, by address: the TCP peer, unless the peer is a trusted proxy
//! (`ZIRAAI_TRUSTED_PROXIES`), in which case the forwarded chain (`Forwarded` `for=`,
//! RFC 7239, else `X-Forwarded-For`) is read from the right and the first hop that is
//! not a trusted proxy is the client. An untrusted peer's forwarded headers are
//! ignored: anyone can write them.
//!
//! The serving loop resolves the address once per request and stores it as a
//! [`ClientIp`] extension; every per-IP limit ([`ClientIpKey`]) and allow-list reads it.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Request};
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor;
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

/// The client address of a request from `peer` with `headers`.
pub(crate) fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let peer = canonical(peer.ip());
    if !IpRange::any_contains(trusted, peer) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    // Walk from the proxy nearest to us towards the client; stop at the first hop we do
    // not trust (that is who connected to our proxies), or at an unreadable one (then
    // the last trusted hop is all we know).
    let mut client = peer;
    for hop in chain.iter().rev() {
        let Some(ip) = hop else { break };
        client = canonical(*ip);
        if !IpRange::any_contains(trusted, client) {
            break;
        }
    }
    client
}

/// The forwarded hops, client first: `Forwarded`'s `for=` values when that header is
/// present, else `X-Forwarded-For`'s. `None` marks a hop that is not an address
/// (`unknown`, an obfuscated `_name`, garbage).
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .map(|v| v.to_str().unwrap_or("unknown"))
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then(|| node(v))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("unknown").split(','))
        .map(node)
        .collect()
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

    fn trusted(list: &[&str]) -> Vec<IpRange> {
        list.iter()
            .map(|r| IpRange::parse(r).expect("range"))
            .collect()
    }

    #[test]
    fn an_untrusted_peers_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(resolve(peer("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
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
    fn forwarded_wins_and_accepts_rfc_7239_forms() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[
            (
                "forwarded",
                "for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=\"192.0.2.43:47011\";by=10.0.0.1")]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("192.0.2.43"));
        let h = headers(&[("forwarded", "for=\"[::ffff:192.0.2.9]\"")]);
        assert_eq!(resolve(peer("127.0.0.1"), &h, &t), ip("192.0.2.9"));
    }

    #[test]
    fn an_unreadable_hop_stops_the_walk_at_the_last_trusted_one() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4, unknown, 10.0.0.7")]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), ip("10.0.0.7"));
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(resolve(peer("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_peers_count_as_ipv4() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(resolve(peer("::ffff:127.0.0.1"), &h, &t), ip("1.2.3.4"));
        assert_eq!(
            resolve(peer("::ffff:9.9.9.9"), &HeaderMap::new(), &[]),
            ip("9.9.9.9")
        );
    }
}
