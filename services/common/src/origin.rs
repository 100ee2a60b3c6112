//! Browser origins allowed on the gateway's socket endpoints: exact origins
//! (`https://app.ziraai.com`), one-label wildcards (`https://*.ziraai.com` matches
//! `https://a.ziraai.com`, not `https://a.b.ziraai.com` nor `https://ziraai.com`), `*`
//! (any origin, development) and `null` (sandboxed or `file:` pages, refused in
//! production). Scheme and port must match exactly; comparison ignores ASCII case.
//!
//! Configuration validates every pattern at start-up with [`OriginPattern::parse`];
//! the gateway matches each request's `Origin` with [`allowed`].

/// One entry of `ZIRAAI_GATEWAY_ALLOWED_ORIGINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: any origin.
    Any,
    /// `null`: the opaque origin browsers send from sandboxed frames and `file:` pages.
    Null,
    /// `scheme://host[:port]`, or `scheme://*.suffix[:port]` (`wildcard`: exactly one
    /// label in front of `host`).
    Origin {
        scheme: String,
        wildcard: bool,
        host: String,
        port: Option<String>,
    },
}

impl OriginPattern {
    /// Parses one pattern; the error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        match s {
            "*" => return Ok(Self::Any),
            "null" => return Ok(Self::Null),
            _ => {}
        }
        let bad = |why: &str| format!("{raw:?} is not an origin pattern: {why}");
        let (scheme, host, port) = split(s).ok_or_else(|| {
            bad("expected scheme://host[:port], e.g. https://app.ziraai.com or https://*.ziraai.com")
        })?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if host.contains('*') {
            return Err(bad(
                "a wildcard stands only for the whole first label (https://*.example.com)",
            ));
        }
        if wildcard && !host.contains('.') {
            return Err(bad(
                "a wildcard needs a domain of at least two labels after it",
            ));
        }
        let host_ok = !host.is_empty()
            && !host.starts_with('.')
            && !host.ends_with('.')
            && !host.contains("..")
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':'));
        if !host_ok {
            return Err(bad("the host is not a valid name or address"));
        }
        Ok(Self::Origin {
            scheme: scheme.to_ascii_lowercase(),
            wildcard,
            host: host.to_ascii_lowercase(),
            port: port.map(str::to_owned),
        })
    }

    /// Whether this pattern allows `origin` (the request's `Origin`, already text).
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Null => origin == "null",
            Self::Origin {
                scheme,
                wildcard,
                host,
                port,
            } => {
                let Some((s, h, p)) = split(origin) else {
                    return false;
                };
                if !s.eq_ignore_ascii_case(scheme) || p != port.as_deref() {
                    return false;
                }
                if !wildcard {
                    return h.eq_ignore_ascii_case(host);
                }
                // Exactly one non-empty label in front of the suffix.
                match h.split_once('.') {
                    Some((label, rest)) => {
                        !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(host)
                    }
                    None => false,
                }
            }
        }
    }
}

/// Whether `origin` is allowed by any of `patterns` (unparsable patterns match nothing;
/// configuration refuses them before the gateway starts). `null` never passes in
/// production, whatever the list says.
pub fn allowed(patterns: &[String], origin: &str, production: bool) -> bool {
    if production && origin == "null" {
        return false;
    }
    patterns
        .iter()
        .filter_map(|p| OriginPattern::parse(p).ok())
        .any(|p| p.matches(origin))
}

/// `scheme://host[:port]` with nothing after it (an origin has no path).
fn split(s: &str) -> Option<(&str, &str, Option<&str>)> {
    let (scheme, authority) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        || authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    // An IPv6 literal keeps its brackets; the port follows the closing one.
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (h, rest) = authority.split_at(end + 1);
        match rest {
            "" => (h, None),
            r => (h, Some(r.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
        return None;
    }
    Some((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, origin: &str) -> bool {
        OriginPattern::parse(pattern)
            .expect("valid pattern")
            .matches(origin)
    }

    #[test]
    fn a_wildcard_matches_exactly_one_label() {
        let p = "https://*.ziraai.com";
        assert!(allows(p, "https://a.ziraai.com"));
        assert!(allows(p, "https://App.ZiraAI.com"));
        assert!(!allows(p, "https://a.b.ziraai.com"), "two labels");
        assert!(!allows(p, "https://ziraai.com"), "the apex");
        assert!(!allows(p, "https://.ziraai.com"), "an empty label");
        assert!(!allows(p, "http://a.ziraai.com"), "another scheme");
        assert!(!allows(p, "https://a.ziraai.com:8443"), "another port");
        assert!(!allows(p, "https://a.ziraai.com.evil.example"));
        assert!(!allows(p, "https://aziraai.com"));
        assert!(allows(
            "https://*.ziraai.com:8443",
            "https://a.ziraai.com:8443"
        ));
    }

    #[test]
    fn exact_origins_compare_scheme_host_and_port() {
        assert!(allows("https://app.example", "https://APP.example"));
        assert!(!allows("https://app.example", "https://app.example:443"));
        assert!(allows("http://[::1]:8080", "http://[::1]:8080"));
        assert!(!allows("https://app.example", "https://app.example/"));
        assert!(!allows("https://app.example", "null"));
    }

    #[test]
    fn null_and_any() {
        assert!(allows("null", "null"));
        assert!(!allows("null", "https://app.example"));
        assert!(allows("*", "https://anything.example"));
        let list = vec!["null".to_owned(), "*".to_owned()];
        assert!(allowed(&list, "null", false));
        assert!(
            !allowed(&list, "null", true),
            "null never passes in production"
        );
        assert!(allowed(&list, "https://x.example", true));
    }

    #[test]
    fn bad_patterns_say_why() {
        for bad in [
            "",
            "app.ziraai.com",
            "https://",
            "https://app.ziraai.com/",
            "https://app.ziraai.com/path",
            "https://a*.ziraai.com",
            "https://*.*.ziraai.com",
            "https://x.*.ziraai.com",
            "https://*.com",
            "https://app..com",
            "https://app.ziraai.com:",
            "https://app.ziraai.com:80x",
            "https://user@app.ziraai.com",
            "*.ziraai.com",
        ] {
            let e = OriginPattern::parse(bad).expect_err(bad);
            assert!(e.contains("is not an origin pattern"), "{bad}: {e}");
        }
    }
}
