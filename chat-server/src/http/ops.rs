//! What is not the chat API itself: the web UI's files and settings,
//! development tokens, the OpenAPI document, readiness and metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use chat_core::problem::ApiError;
use chat_core::validate::{ChatId, UserId};
use serde::Deserialize;

use super::AppState;
use super::extract::JsonBody;

/// What the web UI needs to know: where the streams are, how to sign in,
/// and the rules the server checks input against.
pub(super) async fn ui_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "streamUrl": state.0.stream_url,
        "auth": state.0.auth.is_some(),
        "devTokens": state.0.dev_tokens && state.0.auth.is_some(),
        "maxTextChars": state.0.limits.max_text_chars,
        "patterns": {"chatId": ChatId::pattern(), "userId": UserId::pattern()},
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DevTokenBody {
    user_id: String,
    #[serde(default)]
    chats: Option<Vec<String>>,
}

/// Development only (`--dev-tokens`, with an HMAC key): a token for
/// whoever asks, valid for an hour.
pub(super) async fn dev_token(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DevTokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let auth = state
        .0
        .auth
        .as_ref()
        .filter(|_| state.0.dev_tokens)
        .ok_or_else(|| {
            ApiError::NotFound(
            "development tokens are off: start chat-server with --auth-hmac-key and --dev-tokens"
                .to_owned(),
        )
        })?;
    let user: UserId = body.user_id.parse()?;
    for chat in body.chats.iter().flatten() {
        chat.parse::<ChatId>()?;
    }
    let (token, expires_at) = auth
        .issue(&user, body.chats, Duration::from_secs(3600))
        .map_err(ApiError::unavailable)?;
    Ok(Json(
        serde_json::json!({"token": token, "userId": user.as_str(), "expiresAt": expires_at}),
    ))
}

/// Outside `/api/`, a GET is for the web UI's files (any unknown path gets
/// its `index.html`); everything else is a 404.
pub(super) async fn web_or_not_found(State(state): State<AppState>, request: Request) -> Response {
    use tower::ServiceExt as _;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let dir = &state.0.web_dir;
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
    match files.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// The OpenAPI 3.1 document of this API.
const OPENAPI: &str = include_str!("../../openapi.json");

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (kafka, redis) = tokio::join!(state.0.producer.check(), state.0.redis.ping());
    chat_core::serve::ready(&[
        ("kafka", kafka.err().map(|e| e.to_string())),
        ("redis", redis.err().map(|e| e.to_string())),
    ])
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    chat_core::metrics::exposition(&state.0.metrics)
}
