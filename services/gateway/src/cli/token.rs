//! `ziraai-gateway token`: mint a development token signed with the configured secret.
//!
//! Development tooling only: outside `ZIRAAI_ENV=development` it refuses, so a
//! production secret never signs a hand-made token. `--role Admin` adds the role claim
//! the admin endpoints check ([`crate::auth::Identity::is_admin`]).

use std::time::Duration;

use secrecy::ExposeSecret;
use ziraai_common::config::{Environment, GatewayServiceConfig as Config, parse_duration};
use ziraai_proto::UserId;

use crate::auth;

/// Arguments of `ziraai-gateway token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// User id the token names (claim `userId`); `[A-Za-z0-9_-]{1,64}`.
    #[arg(long)]
    pub user: String,
    /// Role claim to add (repeatable); `Admin` may call `/api/v1/admin/*`.
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Lifetime of the token: a duration like 90s, 30m or 1h.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

/// Why no token was minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "refusing to mint a token with ZIRAAI_ENV={0}: `token` is development tooling; \
         tokens for staging and production come from the platform's identity service"
    )]
    NotDevelopment(&'static str),
    #[error("--user {user:?} {reason}")]
    BadUser {
        user: String,
        reason: ziraai_proto::InvalidId,
    },
    #[error("no JWT secret configured")]
    NoSecret,
    #[error(
        "--ttl {ttl:?} is longer than ZIRAAI_JWT_MAX_TTL ({max:?}): the gateway would refuse the token"
    )]
    TtlTooLong { ttl: Duration, max: Duration },
}

/// A lifetime: the configuration's duration syntax (at most a year), above zero; the
/// configured `ZIRAAI_JWT_MAX_TTL` bounds it further when minting.
fn parse_ttl(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err("the lifetime must be above zero".into()),
        d => Ok(d),
    }
}

/// Mints the token `args` describe with `config`'s secret (development only).
pub fn mint(args: &TokenArgs, config: &Config) -> Result<String, TokenError> {
    if config.env != Environment::Development {
        return Err(TokenError::NotDevelopment(config.env.as_str()));
    }
    UserId::parse(&args.user).map_err(|reason| TokenError::BadUser {
        user: args.user.clone(),
        reason,
    })?;
    if config.auth.jwt_secret.expose_secret().is_empty() {
        return Err(TokenError::NoSecret);
    }
    if args.ttl > config.auth.max_ttl {
        return Err(TokenError::TtlTooLong {
            ttl: args.ttl,
            max: config.auth.max_ttl,
        });
    }
    let roles: Vec<&str> = args.roles.iter().map(String::as_str).collect();
    // The max TTL bounds the lifetime (at most a year); a sub-second rest rounds up.
    let ttl = i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    // With the configured issuer and audience, so the gateway accepts it.
    Ok(auth::mint_for(&config.auth, &args.user, ttl, &roles))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(user: &str, roles: &[&str]) -> TokenArgs {
        TokenArgs {
            user: user.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn minted_admin_token_verifies_as_admin() {
        let config = Config::development();
        let token = mint(&args("ops", &["Admin"]), &config).expect("development mints");
        let id = auth::Authenticator::new(&config.auth.jwt_secret)
            .verify(&token)
            .expect("the gateway accepts it");
        assert_eq!(id.user_id.as_str(), "ops");
        assert!(id.is_admin());
        let plain = mint(&args("ops", &[]), &config).expect("development mints");
        let id = auth::Authenticator::new(&config.auth.jwt_secret)
            .verify(&plain)
            .expect("the gateway accepts it");
        assert!(!id.is_admin());
    }

    #[test]
    fn refuses_bad_users_and_other_environments() {
        let mut config = Config::development();
        assert!(matches!(
            mint(&args("a.b", &[]), &config),
            Err(TokenError::BadUser { .. })
        ));
        config.env = Environment::Staging;
        let e = mint(&args("ops", &[]), &config).expect_err("staging refuses");
        assert!(e.to_string().contains("ZIRAAI_ENV=staging"), "{e}");
    }

    #[test]
    fn ttl_takes_the_config_duration_syntax() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("soon").is_err());
        // Far beyond i64 seconds: refused, not an overflowing expiry.
        assert!(parse_ttl("9999999999999999h").is_err());
    }

    #[test]
    fn follows_the_configured_issuer_audience_and_longest_lifetime() {
        let mut config = Config::development();
        config.auth.issuer = Some("https://auth.ziraai.test".into());
        config.auth.audience = Some("ziraai-realtime".into());
        config.auth.max_ttl = Duration::from_secs(3600);
        let token = mint(&args("ops", &[]), &config).expect("mints");
        auth::Authenticator::from_config(&config.auth)
            .expect("no key file")
            .verify(&token)
            .expect("a gateway with the same settings accepts it");
        let long = TokenArgs {
            ttl: Duration::from_secs(7200),
            ..args("ops", &[])
        };
        let e = mint(&long, &config).expect_err("longer than the gateway accepts");
        assert!(e.to_string().contains("ZIRAAI_JWT_MAX_TTL"), "{e}");
    }
}
