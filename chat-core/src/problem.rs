//! The one error type of HTTP handlers: RFC 9457 problem details, rendered as
//! `application/problem+json` (`type`, `title`, `status`, `detail`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::validate::Invalid;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer: what went wrong, for a person and for a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{status} {title}: {detail}")]
pub struct Problem {
    /// A stable URI naming the kind of problem, for programs to match on.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    #[serde(serialize_with = "status_code")]
    pub status: StatusCode,
    /// What went wrong this time, in words the caller can act on.
    pub detail: String,
}

fn status_code<S: serde::Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u16(s.as_u16())
}

impl Problem {
    /// A problem of kind `slug` (the last part of its `type` URI).
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:chat:problem:{slug}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
        }
    }

    /// 400: the request's syntax is wrong (malformed JSON, path or query).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 422: well-formed, but a field breaks the API's rules.
    pub fn invalid_field(invalid: &Invalid) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid field",
            invalid.to_string(),
        )
    }

    /// 404: no such resource or route.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 503: a service the request depends on is unavailable; retry later.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    /// 500: a fault of ours; the detail is logged, not shown.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed to handle the request; it has been logged",
        )
    }
}

impl From<Invalid> for Problem {
    fn from(invalid: Invalid) -> Self {
        Self::invalid_field(&invalid)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_problem_json() {
        let response = Problem::bad_request("body is not JSON").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = serde_json::to_value(Problem::bad_request("body is not JSON")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"type": "urn:chat:problem:bad-request", "title": "Bad request",
                               "status": 400, "detail": "body is not JSON"})
        );
    }
}
