//! Credentials never travel inside a URL given to the NATS client.
//!
//! async-nats keeps each server URL as it was given and prints it at `debug` level
//! (`server = ?addr` while connecting, reconnecting or failing), so a password or
//! token in `nats://user:pw@host` would reach the logs. Here the user info is taken out
//! of every URL and handed to the client as options, which it never prints; the URLs
//! it sees carry only scheme, host and port.

use secrecy::{ExposeSecret, SecretString};

use crate::config::NatsConfig;

/// Credentials found in a URL's user info.
#[derive(Debug)]
pub(super) enum UrlAuth {
    /// `nats://user:password@host`.
    UserPassword(String, SecretString),
    /// `nats://token@host`.
    Token(SecretString),
}

/// The server URLs without user info, and the credentials to use instead.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) urls: Vec<String>,
    /// From the first URL that had user info; only used when no credential option
    /// (creds file, token, user and password) is configured.
    pub(super) url_auth: Option<UrlAuth>,
}

impl Target {
    pub(super) fn new(cfg: &NatsConfig) -> Self {
        let mut url_auth = None;
        let urls = cfg
            .urls
            .iter()
            .map(|u| {
                let (url, auth) = split(u);
                if url_auth.is_none() {
                    url_auth = auth;
                }
                url
            })
            .collect();
        Self { urls, url_auth }
    }
}

/// `nats://user:pw@host:4222` → (`nats://host:4222`, user and password).
fn split(url: &str) -> (String, Option<UrlAuth>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None);
    };
    let userinfo = &rest[..at];
    let host = &rest[at + 1..];
    let clean = match scheme {
        Some(scheme) => format!("{scheme}://{host}"),
        None => host.to_owned(),
    };
    let auth = match userinfo.split_once(':') {
        Some((user, pw)) => {
            UrlAuth::UserPassword(percent_decode(user), SecretString::from(percent_decode(pw)))
        }
        None => UrlAuth::Token(SecretString::from(percent_decode(userinfo))),
    };
    (clean, Some(auth))
}

/// `%40` → `@` (user info may escape `:`, `@` and `/`); invalid escapes stay as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a test may compare without exposing the secret in an assertion message.
#[cfg(test)]
fn describe(auth: &Option<UrlAuth>) -> String {
    match auth {
        None => "none".into(),
        Some(UrlAuth::UserPassword(u, p)) => format!("user {u} password {}", p.expose_secret()),
        Some(UrlAuth::Token(t)) => format!("token {}", t.expose_secret()),
    }
}

/// Adds the URL's credentials to `opts`, unless a credential option is configured
/// (options win over user info, as they are the documented way).
pub(super) fn apply(
    opts: async_nats::ConnectOptions,
    cfg: &NatsConfig,
    auth: Option<UrlAuth>,
) -> async_nats::ConnectOptions {
    let explicit = cfg.creds_file.is_some()
        || cfg.token.is_some()
        || (cfg.user.is_some() && cfg.password.is_some());
    match auth {
        Some(_) if explicit => opts,
        Some(UrlAuth::UserPassword(user, pw)) => {
            opts.user_and_password(user, pw.expose_secret().to_owned())
        }
        Some(UrlAuth::Token(token)) => opts.token(token.expose_secret().to_owned()),
        None => opts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_leaves_every_url() {
        let (url, auth) = split("nats://svc:s3cr%40t@nats-1:4222");
        assert_eq!(url, "nats://nats-1:4222");
        assert_eq!(describe(&auth), "user svc password s3cr@t");
        let (url, auth) = split("tls://tok3n@nats-2:4222/");
        assert_eq!(url, "tls://nats-2:4222/");
        assert_eq!(describe(&auth), "token tok3n");
        let (url, auth) = split("u:p@127.0.0.1:4333");
        assert_eq!(url, "127.0.0.1:4333");
        assert_eq!(describe(&auth), "user u password p");
        let (url, auth) = split("nats://127.0.0.1:4333");
        assert_eq!(url, "nats://127.0.0.1:4333");
        assert_eq!(describe(&auth), "none");
    }

    #[test]
    fn the_first_url_with_credentials_wins_and_all_are_cleaned() {
        let cfg = NatsConfig {
            urls: vec![
                "nats://a:4222".into(),
                "nats://x:hunter2@b:4222".into(),
                "nats://z:w@c:4222".into(),
            ],
            creds_file: None,
            token: None,
            user: None,
            password: None,
            connect_timeout: std::time::Duration::from_secs(1),
            replicas: 1,
        };
        let t = Target::new(&cfg);
        assert_eq!(t.urls, ["nats://a:4222", "nats://b:4222", "nats://c:4222"]);
        assert_eq!(describe(&t.url_auth), "user x password hunter2");
        assert!(
            !format!("{:?}", t.url_auth).contains("hunter2"),
            "Debug redacts"
        );
    }
}
