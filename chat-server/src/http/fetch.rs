//! `GET /api/chats/{chatId}/messages`, the fetch API: counted toward its
//! chat's hotness, then read from the Redis read model, or, when the chat
//! is hot, passed through its client's budget and answered from the chat's
//! shared snapshot.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::read_model::Page;
use chat_core::validate::{ChatId, UserId};
use serde::Deserialize;

use super::AppState;
use super::error::{READ_MODEL_DOWN, redis_unavailable};
use super::extract::{ApiQuery, Caller, ChatPath};
use crate::hot::Decision;

/// The most messages one fetch returns: also what a hot chat's snapshot
/// holds.
pub(crate) const MAX_FETCH_LIMIT: u32 = 100;
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

/// Says how old a snapshot answer is, in milliseconds.
pub(crate) const SNAPSHOT_AGE: &str = "snapshot-age-ms";

/// A fetch: validated, its caller checked, counted toward its chat's
/// hotness, then read. A hot chat's fetch first passes its client's
/// budget; then it is answered from the chat's shared snapshot, or, when
/// the snapshot cannot answer it (`before`, or `after` older than the
/// snapshot), passes the chat's cluster-wide budget and reads Redis.
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
    let client = caller.client(user.as_ref());
    state.hot.count(&chat_id, &client);
    if !state.hot.is_hot(&chat_id) {
        let page = read(state, &chat_id, &fetch, user.as_ref()).await?;
        return Ok(Json(page).into_response());
    }
    let own = counted(state.hot.throttle().client(&chat_id, &client), "client");
    if !own.admitted {
        return Err(ApiError::ClientThrottled {
            chat: chat_id.to_string(),
            rate: own.rate(),
        });
    }
    if let Some(snapshots) = state.hot.snapshots() {
        let (snapshot, source) = snapshots.get(&chat_id).await.map_err(|e| {
            tracing::warn!(error = %e, "no snapshot of a hot chat");
            ApiError::unavailable(READ_MODEL_DOWN)
        })?;
        metrics::counter!(chat_core::metrics::name::HOT_SNAPSHOT_FETCHES_TOTAL, "source" => source.label()).increment(1);
        if let Some(body) = snapshot.answer(fetch.page, fetch.limit) {
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response();
            let age = snapshot.age().as_millis() as u64;
            response
                .headers_mut()
                .insert(SNAPSHOT_AGE, HeaderValue::from(age));
            own.rate().add_headers(response.headers_mut());
            return Ok(response);
        }
        metrics::counter!(chat_core::metrics::name::HOT_SNAPSHOT_FETCHES_TOTAL, "source" => "uncovered").increment(1);
    }
    let shared = counted(state.hot.throttle().decide(&chat_id).await, "chat");
    if !shared.admitted {
        return Err(ApiError::HotThrottled {
            chat: chat_id.to_string(),
            rate: shared.rate(),
        });
    }
    let page = read(state, &chat_id, &fetch, user.as_ref()).await;
    let result = if page.is_ok() { "ok" } else { "error" };
    metrics::counter!(chat_core::metrics::name::HOT_PAGE_READS_TOTAL, "kind" => "page", "result" => result).increment(1);
    let mut response = Json(page?).into_response();
    shared.rate().add_headers(response.headers_mut());
    Ok(response)
}

/// One page read from the read model: exact, one round trip.
async fn read(
    state: &AppState,
    chat_id: &ChatId,
    fetch: &Fetch,
    user: Option<&UserId>,
) -> Result<chat_core::read_model::FetchPage, ApiError> {
    state
        .read_model
        .fetch(&state.redis, chat_id, fetch.page, fetch.limit, user)
        .await
        .map_err(|e| redis_unavailable(READ_MODEL_DOWN, &e))
}

/// Records a hot chat's budget decision: `budget` is `client` or `chat`.
fn counted(decision: Decision, budget: &'static str) -> Decision {
    let outcome = if decision.admitted {
        "admitted"
    } else {
        "throttled"
    };
    metrics::counter!("hot_fetches_total", "budget" => budget, "mode" => decision.mode.as_str(), "outcome" => outcome)
        .increment(1);
    decision
}
