//! The analyzer over HTTP: `POST <ZIRAAI_ANALYZER_URL>` with the job JSON.
//!
//! A 2xx JSON body is the result. A 4xx is permanent (the analyzer refused this job;
//! its message goes into the failed event). A 5xx, a time-out or a refused connection
//! is transient: the job is retried later. An answer over [`MAX_BODY`] is refused while
//! it is read (never collected whole) and is permanent too: asking again would bring
//! the same oversized answer.
//!
//! Each call is an `analyzer.call` client span with the HTTP semantic conventions'
//! attributes; its `url.full` never holds the URL's user, password or query (where a
//! key would be), and a failed call has error status and `error.type`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tracing::Instrument as _;
use tracing::field::Empty;

/// Longest analyzer answer read, bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What one call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Value),
    /// The analyzer refused the job (4xx): do not retry.
    Rejected {
        status: u16,
        message: String,
    },
    /// Worth retrying: 5xx, time-out, connection refused or reset.
    Transient(String),
}

/// An HTTP client for one analyzer URL.
#[derive(Clone)]
pub struct Analyzer {
    client: Client<HttpConnector, Full<Bytes>>,
    url: hyper::Uri,
    /// `url` without credentials or query, for spans.
    url_shown: String,
    timeout: Duration,
}

impl Analyzer {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url: hyper::Uri = url.parse()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url_shown: shown_url(&url),
            url,
            timeout,
        })
    }

    /// Posts the job and classifies the answer, in an `analyzer.call` span.
    pub async fn analyze(&self, job: &Map<String, Value>) -> Outcome {
        let span = tracing::info_span!(
            "analyzer.call",
            otel.kind = "client",
            http.request.method = "POST",
            url.full = %self.url_shown,
            server.address = self.url.host().unwrap_or_default(),
            server.port = self.url.port_u16().unwrap_or(match self.url.scheme_str() {
                Some("https") => 443,
                _ => 80,
            }),
            http.response.status_code = Empty,
            error.type = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let outcome = self.call(job, &span).instrument(span.clone()).await;
        let error = match &outcome {
            Outcome::Completed(_) => None,
            Outcome::Rejected { status, message } => Some((status.to_string(), message.clone())),
            Outcome::Transient(why) if why.contains("did not answer") => {
                Some(("timeout".to_owned(), why.clone()))
            }
            Outcome::Transient(why) if why.ends_with("without JSON") => {
                Some(("invalid_response".to_owned(), why.clone()))
            }
            Outcome::Transient(why) => {
                let kind = match why.strip_prefix("analyzer answered ") {
                    Some(rest) if rest.len() >= 3 && rest[..3].parse::<u16>().is_ok() => {
                        rest[..3].to_owned()
                    }
                    _ => "transport".to_owned(),
                };
                Some((kind, why.clone()))
            }
        };
        if let Some((kind, why)) = error {
            span.record("error.type", kind);
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", why);
        }
        outcome
    }

    async fn call(&self, job: &Map<String, Value>, span: &tracing::Span) -> Outcome {
        let body = Bytes::from(serde_json::to_vec(job).unwrap_or_default());
        let request = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Outcome::Transient(format!("bad request: {e}")),
        };
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("analyzer unreachable: {e}"))?;
            let status = response.status().as_u16();
            span.record("http.response.status_code", status);
            match Limited::new(response.into_body(), MAX_BODY).collect().await {
                Ok(body) => Ok(classify(status, &body.to_bytes())),
                Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Ok(too_large(status)),
                Err(e) => Err(format!("reading the analyzer's answer: {e}")),
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => {
                Outcome::Transient(format!("analyzer did not answer within {:?}", self.timeout))
            }
            Ok(Err(e)) => Outcome::Transient(e),
            Ok(Ok(outcome)) => outcome,
        }
    }
}

/// `url` as spans show it: scheme, host, port and path; never user, password or query.
fn shown_url(url: &hyper::Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("http");
    let host = url.host().unwrap_or_default();
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", url.path())
}

/// An answer over [`MAX_BODY`]: a rejection, unless the status says "try again".
fn too_large(status: u16) -> Outcome {
    match status {
        200..=299 | 400..=499 => Outcome::Rejected {
            status,
            message: format!(
                "the analyzer's answer was too large (over {} MiB)",
                MAX_BODY / (1024 * 1024)
            ),
        },
        _ => Outcome::Transient(format!("analyzer answered {status}")),
    }
}

/// Maps an HTTP answer to an [`Outcome`].
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    match status {
        200..=299 => match serde_json::from_slice::<Value>(body) {
            Ok(v) => Outcome::Completed(v),
            // A success without a JSON body is the analyzer's bug; retrying may help.
            Err(_) => Outcome::Transient(format!("analyzer answered {status} without JSON")),
        },
        400..=499 => Outcome::Rejected {
            status,
            message: message_of(body)
                .unwrap_or_else(|| format!("analyzer refused the job ({status})")),
        },
        _ => Outcome::Transient(format!("analyzer answered {status}")),
    }
}

/// Longest analyzer message carried into a failed event, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// The analyzer's message: `message` or `error` (string, or object with `message`), or
/// the body text; at most [`MAX_MESSAGE_CHARS`].
fn message_of(body: &[u8]) -> Option<String> {
    let short = |s: &str| s.chars().take(MAX_MESSAGE_CHARS).collect();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for key in ["message", "error", "detail", "title"] {
            match v.get(key) {
                Some(Value::String(s)) => return Some(short(s)),
                Some(Value::Object(o)) => {
                    if let Some(Value::String(s)) = o.get("message") {
                        return Some(short(s));
                    }
                }
                _ => {}
            }
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    (!text.is_empty()).then(|| short(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An analyzer on a random port answering every call with `status` and `body()`.
    async fn serve(status: u16, body: fn() -> axum::body::Body) -> Analyzer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/analyze",
            axum::routing::post(move || async move {
                let status = axum::http::StatusCode::from_u16(status).expect("status");
                (status, body())
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Analyzer::new(&format!("http://{addr}/analyze"), Duration::from_secs(5)).expect("url")
    }

    /// A body that never ends: only a limit applied while reading can stop it.
    fn endless() -> axum::body::Body {
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        axum::body::Body::from_stream(futures_util::stream::repeat_with(move || {
            Ok::<_, std::convert::Infallible>(chunk.clone())
        }))
    }

    fn one_byte_over() -> axum::body::Body {
        axum::body::Body::from(vec![b' '; MAX_BODY + 1])
    }

    #[tokio::test]
    async fn an_oversized_answer_is_a_rejection_found_while_reading() {
        let too_large = Outcome::Rejected {
            status: 200,
            message: "the analyzer's answer was too large (over 4 MiB)".into(),
        };
        let job = Map::new();
        // With a length announced, and streamed without one (never collected whole:
        // the call would otherwise run into the 5 s time-out).
        for body in [one_byte_over as fn() -> axum::body::Body, endless] {
            let analyzer = serve(200, body).await;
            let answer = tokio::time::timeout(Duration::from_secs(4), analyzer.analyze(&job));
            assert_eq!(answer.await.expect("answered"), too_large);
        }
        let rejected = serve(422, endless).await.analyze(&job).await;
        assert!(
            matches!(&rejected, Outcome::Rejected { status: 422, message } if message.contains("too large")),
            "{rejected:?}"
        );
        // A server error stays transient whatever its body.
        let busy = serve(503, endless).await.analyze(&job).await;
        assert!(matches!(busy, Outcome::Transient(_)), "{busy:?}");
        // At the limit exactly, the answer is read.
        let at_limit = serve(200, || {
            let mut v = vec![b' '; MAX_BODY - 2];
            v.splice(0..0, *b"{}");
            axum::body::Body::from(v)
        })
        .await
        .analyze(&job)
        .await;
        assert_eq!(at_limit, Outcome::Completed(json!({})));
    }

    #[test]
    fn spans_show_the_url_without_credentials_or_query() {
        let url: hyper::Uri = "https://svc:s3cret@analyzer.internal:8443/v1/analyze?key=abc"
            .parse()
            .expect("uri");
        assert_eq!(shown_url(&url), "https://analyzer.internal:8443/v1/analyze");
        let url: hyper::Uri = "http://127.0.0.1/analyze".parse().expect("uri");
        assert_eq!(shown_url(&url), "http://127.0.0.1/analyze");
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(200, br#"{"ok":1}"#),
            Outcome::Completed(json!({"ok": 1}))
        );
        assert!(matches!(classify(200, b"<html>"), Outcome::Transient(_)));
        assert_eq!(
            classify(400, br#"{"message":"image too small"}"#),
            Outcome::Rejected {
                status: 400,
                message: "image too small".into()
            }
        );
        assert_eq!(
            classify(422, br#"{"error":{"message":"no leaf"}}"#),
            Outcome::Rejected {
                status: 422,
                message: "no leaf".into()
            }
        );
        assert_eq!(
            classify(404, b"not here"),
            Outcome::Rejected {
                status: 404,
                message: "not here".into()
            }
        );
        let long = json!({"message": "x".repeat(10_000)}).to_string();
        assert!(matches!(
            classify(400, long.as_bytes()),
            Outcome::Rejected { message, .. } if message.len() == MAX_MESSAGE_CHARS
        ));
        assert!(matches!(classify(503, b""), Outcome::Transient(_)));
        assert!(matches!(classify(500, b"boom"), Outcome::Transient(_)));
    }
}
