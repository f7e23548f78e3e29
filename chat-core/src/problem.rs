//! The error catalogue: every error answer the three servers give, with its
//! status, its problem type and the headers it carries. Handlers return an
//! [`ApiError`]; it renders as RFC 9457 problem details
//! (`application/problem+json`: `type`, `title`, `status`, `detail`) through
//! axum, or as raw HTTP/1.1 bytes for publish-server's hand-written
//! streams, both from the same parts.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::validate::Invalid;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `WWW-Authenticate` challenge of a 401.
const CHALLENGE: &str = "Bearer realm=\"chat\"";

/// The body of an error answer: what went wrong, for a person and for a
/// program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A stable URI naming the kind of problem, for programs to match on.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: &'static str,
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    /// What went wrong this time, in words the caller can act on.
    pub detail: String,
}

fn status_code<S: serde::Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u16(s.as_u16())
}

/// A hot chat's budget as a fetch found it: the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Fetches per second the chat may take.
    pub limit: u32,
    /// Fetches left in the current burst.
    pub remaining: u64,
    /// Seconds until the burst is full again.
    pub reset_secs: u64,
    /// Seconds a refused client should wait (jittered).
    pub retry_after_secs: u64,
}

impl RateLimit {
    /// Adds the `RateLimit-Limit`, `-Remaining` and `-Reset` headers.
    pub fn add_headers(&self, headers: &mut axum::http::HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset_secs));
    }
}

/// Every error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request's syntax is wrong (malformed JSON, path or query).
    #[error("{0}")]
    BadRequest(String),
    /// 422: well-formed, but a field breaks the API's rules.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// 422: a body field of the wrong type or shape.
    #[error("{0}")]
    InvalidBody(String),
    /// 401 or 403: no valid token, or one that does not allow this.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 403: not for this client, whoever it is.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 404: no route for the path.
    #[error("no route for {method} {path}")]
    NoRoute { method: Method, path: String },
    /// 405, with `Allow` when the route's methods are known.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        method: Method,
        path: String,
        allow: Option<&'static str>,
    },
    /// 408: the body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// 409: a retry came while the first request is still being stored.
    #[error("a request with clientMessageId {0:?} is still being stored; retry")]
    ClientMessageIdInProgress(String),
    /// 409: a `clientMessageId` used again for another text.
    #[error("clientMessageId {id:?} was already used for message {message} with a different text")]
    ClientMessageIdReused { id: String, message: String },
    /// 409: a new emoji on a message that already holds the most distinct
    /// emojis.
    #[error(
        "message {message} already holds {max} distinct emojis, the most it may; react with one of them"
    )]
    TooManyEmojis { message: String, max: u32 },
    /// 413.
    #[error("the request body must be at most {0} bytes")]
    BodyTooLarge(usize),
    /// 415: the body is not JSON; says what it was.
    #[error("the request body must be application/json, got {0}")]
    UnsupportedMediaType(String),
    /// 431.
    #[error("the request line and headers may take {0} bytes")]
    HeadTooLarge(usize),
    /// 429 with `Retry-After`: a user over a write limit.
    #[error("too many {what} from this user; retry after {retry_after_secs} s")]
    WriteLimit {
        what: &'static str,
        retry_after_secs: u64,
    },
    /// 429 with `Retry-After` and `RateLimit-*`: a hot chat's fetch over
    /// its budget.
    #[error(
        "chat {chat} is hot: its fetches are limited to {} per second; retry after {} s, or follow the chat's event stream",
        .rate.limit, .rate.retry_after_secs
    )]
    HotThrottled { chat: String, rate: RateLimit },
    /// 429 with `Retry-After` and `RateLimit-*`: one client fetching a hot
    /// chat faster than its own budget.
    #[error(
        "chat {chat} is hot and you fetch it more than {} times per second; retry after {} s, or follow the chat's event stream",
        .rate.limit, .rate.retry_after_secs
    )]
    ClientThrottled { chat: String, rate: RateLimit },
    /// 429 with `Retry-After`: too many open streams.
    #[error("{whose} has {limit} streams open, the limit; close one first")]
    TooManyStreams { whose: &'static str, limit: usize },
    /// 503 with `Retry-After`: a service the request depends on is
    /// unavailable; retry later.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// 400 from anything that says what is wrong.
    pub fn bad_request(detail: impl std::fmt::Display) -> Self {
        Self::BadRequest(detail.to_string())
    }

    /// 503 from anything that says what is wrong.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        Self::Unavailable(detail.to_string())
    }

    /// The status, the last part of the problem type, and the title.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        const TOO_MANY: &str = "Too many requests";
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            Self::Invalid(_) | Self::InvalidBody(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "Invalid field",
            ),
            Self::Auth(AuthError::ChatNotAllowed(_)) => {
                (StatusCode::FORBIDDEN, "chat-not-allowed", "Forbidden")
            }
            Self::Auth(AuthError::UserMismatch { .. }) => {
                (StatusCode::FORBIDDEN, "user-mismatch", "Forbidden")
            }
            Self::Auth(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "no-route", "Not found"),
            Self::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "Request timeout",
            ),
            Self::ClientMessageIdInProgress(_) => (
                StatusCode::CONFLICT,
                "client-message-id-in-progress",
                "Request in progress",
            ),
            Self::ClientMessageIdReused { .. } => (
                StatusCode::CONFLICT,
                "client-message-id-reused",
                "clientMessageId reused",
            ),
            Self::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::TooManyEmojis { .. } => (StatusCode::CONFLICT, "too-many-emojis", "Conflict"),
            Self::HeadTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head-too-large",
                "Request head too large",
            ),
            Self::WriteLimit { .. } => (StatusCode::TOO_MANY_REQUESTS, "write-limit", TOO_MANY),
            Self::HotThrottled { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "hot-chat-throttled",
                TOO_MANY,
            ),
            Self::ClientThrottled { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "hot-chat-client-throttled",
                TOO_MANY,
            ),
            Self::TooManyStreams { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-streams", TOO_MANY)
            }
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
        }
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The answer's body.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        Problem {
            kind: format!("urn:chat:problem:{slug}"),
            title,
            status,
            detail: self.to_string(),
        }
    }

    /// The headers the answer carries besides its content type.
    pub fn headers(&self) -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        let retry_after = match self {
            Self::Auth(_) if self.status() == StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE),
                );
                None
            }
            Self::MethodNotAllowed {
                allow: Some(allow), ..
            } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
                None
            }
            Self::WriteLimit {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::HotThrottled { rate, .. } | Self::ClientThrottled { rate, .. } => {
                rate.add_headers(&mut headers);
                Some(rate.retry_after_secs)
            }
            // A retry while the first request's write is in flight: soon.
            Self::TooManyStreams { .. }
            | Self::Unavailable(_)
            | Self::ClientMessageIdInProgress(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers
    }

    /// The whole answer as HTTP/1.1 bytes, with `extra` headers (CORS) and
    /// `Connection: close`, for a writer that speaks to the socket itself.
    pub fn to_http1(&self, extra: &[(HeaderName, HeaderValue)]) -> Vec<u8> {
        let problem = self.problem();
        let body = serde_json::to_string(&problem).unwrap_or_default();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n",
            problem.status.as_u16(),
            problem.status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        let headers = self.headers();
        for (name, value) in headers.iter().chain(extra.iter().map(|(n, v)| (n, v))) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (problem.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.extend(self.headers());
        response
    }
}

/// The answer to a request for a path no route serves.
pub async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute {
        method,
        path: uri.path().to_owned(),
    }
}

/// The answer to a method a route does not serve.
pub async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method,
        path: uri.path().to_owned(),
        allow: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_problem_json() {
        let error = ApiError::bad_request("body is not JSON");
        let response = error.clone().into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = serde_json::to_value(error.problem()).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"type": "urn:chat:problem:bad-request", "title": "Bad request",
                               "status": 400, "detail": "body is not JSON"})
        );
    }

    #[test]
    fn each_error_carries_its_own_headers_both_ways() {
        let unauthorized = ApiError::Auth(AuthError::Missing);
        let rate = RateLimit {
            limit: 50,
            remaining: 0,
            reset_secs: 1,
            retry_after_secs: 3,
        };
        let throttled = ApiError::HotThrottled {
            chat: "lobby".into(),
            rate,
        };
        let client = ApiError::ClientThrottled {
            chat: "lobby".into(),
            rate: RateLimit { limit: 5, ..rate },
        };
        let cases: [(ApiError, &[(&str, &str)]); 6] = [
            (unauthorized, &[("www-authenticate", CHALLENGE)]),
            (
                throttled,
                &[
                    ("retry-after", "3"),
                    ("ratelimit-limit", "50"),
                    ("ratelimit-remaining", "0"),
                    ("ratelimit-reset", "1"),
                ],
            ),
            (
                client,
                &[
                    ("retry-after", "3"),
                    ("ratelimit-limit", "5"),
                    ("ratelimit-remaining", "0"),
                ],
            ),
            (ApiError::unavailable("down"), &[("retry-after", "1")]),
            (
                ApiError::ClientMessageIdInProgress("c-1".into()),
                &[("retry-after", "1")],
            ),
            (
                ApiError::MethodNotAllowed {
                    method: Method::POST,
                    path: "/x".into(),
                    allow: Some("GET"),
                },
                &[("allow", "GET")],
            ),
        ];
        for (error, expected) in cases {
            let raw = String::from_utf8(error.to_http1(&[])).expect("text");
            let response = error.clone().into_response();
            for (name, value) in expected {
                assert_eq!(response.headers()[*name], *value, "{error:?}");
                assert!(raw.contains(&format!("{name}: {value}\r\n")), "{raw}");
            }
            assert!(raw.starts_with(&format!("HTTP/1.1 {} ", error.status().as_u16())));
            assert!(raw.ends_with(&serde_json::to_string(&error.problem()).expect("json")));
        }
    }
}
