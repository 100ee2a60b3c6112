//! Who may make a request: the bearer token (header or `access_token` query
//! parameter) and, for browsers, the `Origin` header. Both socket endpoints and the
//! SignalR negotiate (CORS) apply the same origin rule from here.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::AppState;
use crate::auth::{AuthError, Identity, token_from};
use crate::error::{ApiError, refuse};

/// Authenticates a request by its bearer header or `access_token` query parameter.
pub(crate) fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, ApiError> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = token_from(authz, query.get("access_token").map(String::as_str)) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            AuthError::Missing,
        ));
    };
    app.auth
        .verify(&token)
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.code(), &e))
}

/// The origin rule: no `Origin` (a non-browser client, whose token is its credential)
/// passes; an origin passes when a pattern of `allowed` matches it (case-insensitively;
/// `https://*.example.com` stands for one label; `*` for any origin; see
/// [`ziraai_common::origin`]). An `Origin` that is not visible ASCII can match nothing
/// and is refused, and so is `null` in production: the rule fails closed (403
/// `origin_not_allowed`).
pub(crate) fn check_origin(
    allowed: &[String],
    origin: Option<&HeaderValue>,
    production: bool,
) -> Result<(), ApiError> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let text = origin.to_str().ok();
    if text.is_some_and(|o| ziraai_common::origin::allowed(allowed, o, production)) {
        return Ok(());
    }
    Err(refuse(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        format!(
            "origin {:?} is not allowed",
            String::from_utf8_lossy(origin.as_bytes())
        ),
    ))
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    fn status(allowed: &[&str], origin: Option<&HeaderValue>) -> Option<StatusCode> {
        let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
        check_origin(&allowed, origin, false)
            .err()
            .map(|e| e.into_response().status())
    }

    #[test]
    fn no_origin_passes_and_listed_origins_pass_case_insensitively() {
        let app = HeaderValue::from_static("https://App.example");
        assert_eq!(
            status(&[], None),
            None,
            "non-browser clients send no Origin"
        );
        assert_eq!(status(&["https://app.example"], Some(&app)), None);
        assert_eq!(status(&["*"], Some(&app)), None);
        assert_eq!(
            status(&["https://other.example"], Some(&app)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(&[], Some(&app)), Some(StatusCode::FORBIDDEN));
    }

    #[test]
    fn a_non_utf8_origin_fails_closed_even_with_a_wildcard() {
        let raw = HeaderValue::from_bytes(b"https://\xffevil.example").expect("obs-text is valid");
        assert!(raw.to_str().is_err(), "the case under test");
        assert_eq!(status(&["*"], Some(&raw)), Some(StatusCode::FORBIDDEN));
        assert_eq!(
            status(&["https://evil.example"], Some(&raw)),
            Some(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn patterns_match_one_label_and_null_is_refused_in_production() {
        let sub = HeaderValue::from_static("https://a.ziraai.com");
        let deep = HeaderValue::from_static("https://a.b.ziraai.com");
        let apex = HeaderValue::from_static("https://ziraai.com");
        let pattern = ["https://*.ziraai.com"];
        assert_eq!(status(&pattern, Some(&sub)), None);
        assert_eq!(status(&pattern, Some(&deep)), Some(StatusCode::FORBIDDEN));
        assert_eq!(status(&pattern, Some(&apex)), Some(StatusCode::FORBIDDEN));
        let null = HeaderValue::from_static("null");
        assert_eq!(status(&["null"], Some(&null)), None, "development");
        let allowed = vec!["null".to_owned(), "*".to_owned()];
        let refused = check_origin(&allowed, Some(&null), true).err();
        assert_eq!(
            refused.map(|e| e.into_response().status()),
            Some(StatusCode::FORBIDDEN),
            "production"
        );
    }
}
