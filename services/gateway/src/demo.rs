//! Development-only demo page: `/demo` shows the demo user's notifications live.
//!
//! The page embeds a token minted for the demo user with the development secret. It is
//! routed only when `ZIRAAI_ENV=development` and the demo page is on (configuration
//! refuses it elsewhere).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use secrecy::SecretString;
use ziraai_common::GatewayServiceConfig;

use crate::AppState;

/// Lifetime of a demo token.
const DEMO_TOKEN_TTL_SECS: i64 = 12 * 3600;

pub(crate) struct Demo {
    secret: SecretString,
    user: String,
    nats_url: String,
}

impl Demo {
    pub(crate) fn new(config: &GatewayServiceConfig) -> Self {
        Self {
            secret: config.auth.jwt_secret.clone(),
            user: config.gateway.demo_user.clone(),
            nats_url: config.nats.urls.first().cloned().unwrap_or_default(),
        }
    }
}

pub(crate) async fn page(State(app): State<Arc<AppState>>) -> Html<String> {
    let Some(demo) = &app.demo else {
        return Html(String::new());
    };
    let token = crate::auth::mint(&demo.secret, &demo.user, DEMO_TOKEN_TTL_SECS);
    Html(
        include_str!("demo.html")
            .replace("{{TOKEN}}", &token)
            .replace("{{USER}}", &demo.user)
            .replace("{{NATS_URL}}", &demo.nats_url),
    )
}
