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
}

/// Longest lifetime `--ttl` mints (a development token, not a credential to keep).
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err("the lifetime must be above zero".into()),
        d if d > MAX_TTL => Err(format!(
            "the lifetime must be at most {}h (30 days)",
            MAX_TTL.as_secs() / 3600
        )),
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
    let roles: Vec<&str> = args.roles.iter().map(String::as_str).collect();
    // parse_ttl bounds the lifetime to 30 days; a sub-second rest rounds up.
    let ttl = i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    Ok(auth::mint_with_roles(
        &config.auth.jwt_secret,
        &args.user,
        ttl,
        &roles,
    ))
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
        assert_eq!(parse_ttl("720h"), Ok(MAX_TTL));
        let e = parse_ttl("721h").expect_err("over 30 days");
        assert!(e.contains("at most 720h"), "{e}");
        // Far beyond i64 seconds: refused, not an overflowing expiry.
        assert!(parse_ttl("9999999999999999h").is_err());
    }
}
