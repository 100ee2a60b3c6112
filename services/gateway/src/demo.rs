//! Development-only demo page: `/demo` shows the demo user's notifications live.
//!
//! The page embeds a token minted for the demo user with the development secret. It is
//! routed only when `ZIRAAI_ENV=development` and the demo page is on (configuration
//! refuses it elsewhere).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use secrecy::SecretString;
use ziraai_common::GatewayServiceConfig;

use crate::AppState;

/// Lifetime of a demo token.
const DEMO_TOKEN_TTL_SECS: i64 = 12 * 3600;

pub(crate) struct Demo {
    secret: SecretString,
    user: String,
    nats_url: String,
    /// Variables the page's submit command needs to connect as `platform`.
    submit_auth: &'static str,
}

/// With a broker that checks credentials (`make run`'s, `nats/auth.conf`), job
/// submitters connect as `platform`, with the password file `make run` writes.
const MAKE_RUN_PLATFORM_AUTH: &str =
    " ZIRAAI_NATS_USER=platform ZIRAAI_NATS_PASSWORD_FILE=.run/nats/platform.password";

impl Demo {
    pub(crate) fn new(config: &GatewayServiceConfig) -> Self {
        Self {
            secret: config.auth.jwt_secret.clone(),
            user: config.gateway.demo_user.clone(),
            // Shown on the page: never with the credentials a URL may carry.
            nats_url: config
                .nats
                .urls
                .first()
                .map(|u| ziraai_common::nats::without_credentials(u))
                .unwrap_or_default(),
            submit_auth: if config.nats.user.is_some() {
                MAKE_RUN_PLATFORM_AUTH
            } else {
                ""
            },
        }
    }
}

/// What the page may load: only itself and its own origin (polling and the socket).
/// Scripts need the per-response nonce, so markup that slipped into the page could not
/// run (the page itself shows event data only as text).
fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'"
    )
}

pub(crate) async fn page(State(app): State<Arc<AppState>>) -> Response {
    let Some(demo) = &app.demo else {
        return Html(String::new()).into_response();
    };
    let token = crate::auth::mint(&demo.secret, &demo.user, DEMO_TOKEN_TTL_SECS);
    let nonce = nuid::next().to_string();
    let html = include_str!("demo.html")
        .replace("{{NONCE}}", &nonce)
        .replace("{{TOKEN}}", &js_string(&token))
        .replace("{{USER}}", &js_string(&demo.user))
        .replace("{{NATS_URL}}", &js_string(&demo.nats_url))
        .replace("{{SUBMIT_AUTH}}", &js_string(demo.submit_auth));
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                content_security_policy(&nonce),
            ),
            // The page embeds a token: never cache it.
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Html(html),
    )
        .into_response()
}

/// `s` as a JavaScript string literal that cannot end the inline `<script>`.
fn js_string(s: &str) -> String {
    serde_json::Value::from(s)
        .to_string()
        .replace('<', "\\u003c")
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_cannot_leave_the_script() {
        assert_eq!(super::js_string("a\"</script>"), r#""a\"\u003c/script>""#);
    }
}
