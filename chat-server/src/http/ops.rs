//! What is not the chat API itself: the web UI's files and settings,
//! development tokens, the OpenAPI document, readiness and metrics.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use chat_core::problem::ApiError;
use chat_core::validate::{ChatId, UserId};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{Caller, JsonBody};

/// What the web UI needs to know: where the streams are, how to sign in,
/// and the rules the server checks input against.
pub(super) async fn ui_config(State(state): State<AppState>) -> Json<UiConfig> {
    Json(UiConfig {
        stream_url: state.stream_url.clone(),
        auth: state.auth.is_some(),
        dev_tokens: state.dev_tokens && state.auth.is_some(),
        max_text_chars: state.limits.max_text_chars,
        patterns: Patterns {
            chat_id: ChatId::pattern(),
            user_id: UserId::pattern(),
        },
    })
}

/// The body of `GET /api/config`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UiConfig {
    stream_url: String,
    auth: bool,
    dev_tokens: bool,
    max_text_chars: usize,
    patterns: Patterns,
}

/// The patterns ids are checked against, for the web UI to check first.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Patterns {
    chat_id: String,
    user_id: String,
}

/// The body of a development token's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DevToken {
    token: String,
    user_id: UserId,
    expires_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DevTokenBody {
    user_id: String,
    #[serde(default)]
    chats: Option<Vec<String>>,
}

/// Whether a client at `peer` may get a development token: one on a
/// loopback address, or anyone with `--dev-tokens-from-anywhere`.
fn may_get_dev_token(peer: Option<IpAddr>, from_anywhere: bool) -> bool {
    from_anywhere || peer.is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// Development only (`--dev-tokens`, with an HMAC key): a token for
/// whoever asks on a loopback address, valid for an hour.
pub(super) async fn dev_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<DevTokenBody>,
) -> Result<Json<DevToken>, ApiError> {
    let auth = state
        .auth
        .as_ref()
        .filter(|_| state.dev_tokens)
        .ok_or_else(|| {
            ApiError::NotFound(
            "development tokens are off: start chat-server with --auth-hmac-key and --dev-tokens"
                .to_owned(),
        )
        })?;
    if !may_get_dev_token(caller.address(), state.dev_tokens_from_anywhere) {
        return Err(ApiError::Forbidden(
            "development tokens are given to loopback clients only (--dev-tokens-from-anywhere allows others)"
                .to_owned(),
        ));
    }
    let user: UserId = body.user_id.parse()?;
    for chat in body.chats.iter().flatten() {
        chat.parse::<ChatId>()?;
    }
    let (token, expires_at) = auth
        .issue(&user, body.chats, Duration::from_secs(3600))
        .map_err(ApiError::unavailable)?;
    Ok(Json(DevToken {
        token,
        user_id: user,
        expires_at,
    }))
}

/// Outside `/api/`, a GET is for the web UI's files (any unknown path gets
/// its `index.html`); everything else is a 404.
pub(super) async fn web_or_not_found(State(state): State<AppState>, request: Request) -> Response {
    use tower::ServiceExt as _;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let dir = &state.web_dir;
    let index = dir.join("index.html");
    if path.starts_with("/api/") || !matches!(method, Method::GET | Method::HEAD) {
        return ApiError::NoRoute { method, path }.into_response();
    }
    if !index.is_file() {
        return ApiError::NotFound(format!(
            "no route for {method} {path}, and the web UI is not built in {} (`make run` builds it)",
            dir.display()
        ))
        .into_response();
    }
    let files = tower_http::services::ServeDir::new(dir)
        .fallback(tower_http::services::ServeFile::new(index));
    let mut response = match files.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(policy) = HeaderValue::from_str(&ui_policy(&state.stream_url)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// The web UI's Content-Security-Policy: its own scripts and styles only,
/// connections to itself and to publish-server's origin, and no framing
/// (clickjacking).
fn ui_policy(stream_url: &str) -> String {
    let streams = origin(stream_url).map_or(String::new(), |o| format!(" {o}"));
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'{streams}; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of an absolute http(s) URL; `None` for a relative
/// one (the UI's own origin) or anything that could break the policy.
fn origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let safe = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    safe.then(|| &url[..url.len() - rest.len() + authority.len()])
}

/// The OpenAPI 3.1 document of this API.
const OPENAPI: &str = include_str!("../../openapi.json");

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (kafka, redis) = tokio::join!(state.producer.check(), state.redis.ping());
    let settled = state
        .projector_settled
        .load(std::sync::atomic::Ordering::Acquire);
    chat_core::serve::ready(&[
        ("kafka", kafka.err().map(|e| e.to_string())),
        ("redis", redis.err().map(|e| e.to_string())),
        (
            "projector",
            (!settled).then(|| "its group has not settled: it owns no partition yet".to_owned()),
        ),
    ])
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    chat_core::metrics::exposition(&state.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_tokens_go_to_loopback_clients_unless_told_otherwise() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("address"));
        for loopback in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(may_get_dev_token(ip(loopback), false), "{loopback}");
        }
        for remote in ["10.0.0.7", "192.168.1.2", "2001:db8::1", "::ffff:10.0.0.7"] {
            assert!(!may_get_dev_token(ip(remote), false), "{remote}");
            assert!(may_get_dev_token(ip(remote), true), "{remote}");
        }
        assert!(!may_get_dev_token(None, false));
    }

    #[test]
    fn the_ui_may_connect_to_itself_and_its_streams_only() {
        let policy = ui_policy("http://127.0.0.1:8081");
        assert!(
            policy.contains("connect-src 'self' http://127.0.0.1:8081;"),
            "{policy}"
        );
        assert!(policy.contains("frame-ancestors 'none'"));
        assert_eq!(
            origin("https://chat.example/streams?x"),
            Some("https://chat.example")
        );
        assert_eq!(origin("http://[::1]:8081/"), Some("http://[::1]:8081"));
        assert_eq!(origin("/"), None, "same origin: 'self'");
        assert_eq!(origin("http://a.example; script-src *"), None);
        assert!(ui_policy("/").contains("connect-src 'self';"));
    }
}
