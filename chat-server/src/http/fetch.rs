//! `GET /api/chats/{chatId}/messages`, the fetch API: counted toward its
//! chat's rate, passed through the throttle when the chat is hot, then read
//! from the Redis read model.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::read_model::Page;
use chat_core::validate::ChatId;
use serde::Deserialize;

use super::AppState;
use super::error::redis_unavailable;
use super::extract::{ApiQuery, Caller, ChatPath};

/// The most messages one fetch returns.
const MAX_FETCH_LIMIT: u32 = 100;
/// How many messages a fetch returns when `limit` is not given.
const DEFAULT_FETCH_LIMIT: u32 = 50;

#[derive(Debug, Deserialize)]
pub(super) struct FetchQuery {
    after: Option<String>,
    before: Option<String>,
    limit: Option<String>,
    /// Each message then says which emojis this user holds.
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

/// A fetch as asked: which page, how many messages.
struct Fetch {
    page: Page,
    limit: u32,
}

impl TryFrom<&FetchQuery> for Fetch {
    type Error = ApiError;

    fn try_from(query: &FetchQuery) -> Result<Self, ApiError> {
        let limit = match query.limit.as_deref() {
            None => DEFAULT_FETCH_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_FETCH_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "limit: must be a whole number from 1 to {MAX_FETCH_LIMIT}, got {text:?}"
                    ))
                })?,
        };
        let cursor = |name: &str, text: &str| {
            text.parse::<EventId>()
                .map_err(|e| ApiError::bad_request(format!("{name}: {}", e.reason)))
        };
        let page = match (query.after.as_deref(), query.before.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give either after or before, not both",
                ));
            }
            (Some(after), None) => Page::After(cursor("after", after)?),
            (None, Some(before)) => Page::Before(cursor("before", before)?),
            (None, None) => Page::Latest,
        };
        Ok(Self { page, limit })
    }
}

pub(super) async fn fetch_messages(
    State(state): State<AppState>,
    path: Result<ChatPath, ApiError>,
    query: Result<ApiQuery<FetchQuery>, ApiError>,
    caller: Caller,
) -> Response {
    let started = Instant::now();
    let response = fetch_gated(&state, path, query, &caller)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    metrics::histogram!("fetch_duration_seconds").record(started.elapsed());
    metrics::counter!("fetch_requests_total", "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

/// A fetch: validated, its caller checked, counted toward its chat's
/// rate, passed through the throttle when the chat is hot, then read.
async fn fetch_gated(
    state: &AppState,
    path: Result<ChatPath, ApiError>,
    query: Result<ApiQuery<FetchQuery>, ApiError>,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let ChatPath(chat_id) = path?;
    let ApiQuery(query) = query?;
    let fetch = Fetch::try_from(&query)?;
    let user = caller.reader(&chat_id, query.user_id.as_deref())?;
    let inner = &state.0;
    if inner.count_fetches {
        inner.fetch_counter.count(&chat_id);
    }
    let rate = if inner.hot.is_hot(&chat_id) {
        Some(throttle(state, &chat_id).await?)
    } else {
        None
    };
    let page = inner
        .read_model
        .fetch(
            &inner.redis,
            &chat_id,
            fetch.page,
            fetch.limit,
            user.as_ref(),
        )
        .await
        .map_err(|e| redis_unavailable("the read model", &e))?;
    let mut response = Json(page).into_response();
    if let Some(rate) = rate {
        rate.add_headers(response.headers_mut());
    }
    Ok(response)
}

/// Passes a hot chat's fetch through its budget: the figures of the
/// `RateLimit-*` headers when admitted, 429 when not.
async fn throttle(
    state: &AppState,
    chat_id: &ChatId,
) -> Result<chat_core::problem::RateLimit, ApiError> {
    let decision = state.0.throttle.decide(chat_id).await;
    let outcome = if decision.admitted {
        "admitted"
    } else {
        "throttled"
    };
    metrics::counter!("hot_fetches_total", "mode" => decision.mode, "outcome" => outcome)
        .increment(1);
    if decision.admitted {
        Ok(decision.rate())
    } else {
        Err(ApiError::HotThrottled {
            chat: chat_id.to_string(),
            rate: decision.rate(),
        })
    }
}
