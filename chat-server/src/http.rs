//! The HTTP API: routes, extractors and handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router, middleware};
use chat_core::api::{AddReactionBody, PostMessageBody};
use chat_core::auth::{Auth, Identity};
use chat_core::event::{
    self, ChatEvent, Message, MessagePosted, Reaction, ReactionAction, ReactionChanged,
};
use chat_core::id::EventId;
use chat_core::metrics::PrometheusHandle;
use chat_core::problem::Problem;
use chat_core::validate::{ChatId, ClientMessageId, Invalid, UserId, check_text};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::{error, warn};

use crate::client_messages::{Claim, ClientMessages};
use crate::hot::{Decision, FetchCounter, Throttle};
use crate::producer::{EventProducer, ProduceError};
use chat_core::read_model::{Lookup, Page, ReadModel};
use chat_core::redis_conn::RedisConn;

/// Bounds on what a request may carry.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The longest message text, in Unicode scalar values.
    pub max_text_chars: usize,
    /// How long a client may take to send its body.
    pub body_timeout: Duration,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) producer: EventProducer,
    pub(crate) redis: Arc<RedisConn>,
    pub(crate) read_model: Arc<ReadModel>,
    pub(crate) client_messages: ClientMessages,
    pub(crate) limits: Limits,
    pub(crate) metrics: PrometheusHandle,
    /// How long a retry waits for a concurrent request with the same
    /// `clientMessageId` to finish its write.
    pub(crate) claim_wait: Duration,
    /// How long a reaction waits for the projector to reach its message.
    pub(crate) reaction_wait: Duration,
    /// Counts each fetch toward its chat's rate (off only to measure it).
    pub(crate) count_fetches: bool,
    pub(crate) fetch_counter: Arc<FetchCounter>,
    /// The hot chats, kept up to date by the scheduler's announcements.
    pub(crate) hot: Arc<chat_core::hot::HotChats>,
    pub(crate) throttle: Throttle,
    /// Folder of the built web UI.
    pub(crate) web_dir: std::path::PathBuf,
    /// publish-server's base URL as browsers reach it.
    pub(crate) stream_url: String,
    /// Token verification; `None`: authentication is off.
    pub(crate) auth: Option<Auth>,
    /// Serve `POST /api/dev/token` (development only).
    pub(crate) dev_tokens: bool,
    /// Per-user limits on writes.
    pub(crate) write_limits: crate::limits::WriteLimits,
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The producer, for flushing at shutdown.
    pub(crate) fn producer(&self) -> &EventProducer {
        &self.0.producer
    }

    pub(crate) fn redis(&self) -> &Arc<RedisConn> {
        &self.0.redis
    }

    pub(crate) fn read_model(&self) -> &Arc<ReadModel> {
        &self.0.read_model
    }

    pub(crate) fn fetch_counter(&self) -> &Arc<FetchCounter> {
        &self.0.fetch_counter
    }

    pub(crate) fn hot(&self) -> &Arc<chat_core::hot::HotChats> {
        &self.0.hot
    }

    pub(crate) fn throttle(&self) -> &Throttle {
        &self.0.throttle
    }

    pub(crate) fn write_limits(&self) -> &crate::limits::WriteLimits {
        &self.0.write_limits
    }
}

/// Every route: path template, method and handler. The router is built from
/// this table, and a test holds it equal to `openapi.json`.
pub(crate) fn routes() -> Vec<(&'static str, Method, MethodRouter<AppState>)> {
    const MESSAGES: &str = "/api/chats/{chat_id}/messages";
    const REACTIONS: &str = "/api/chats/{chat_id}/messages/{message_id}/reactions";
    const REACTION: &str = "/api/chats/{chat_id}/messages/{message_id}/reactions/{emoji}";
    vec![
        (MESSAGES, Method::GET, get(fetch_messages)),
        (MESSAGES, Method::POST, post(post_message)),
        (REACTIONS, Method::POST, post(add_reaction)),
        (REACTION, Method::DELETE, delete(remove_reaction)),
        ("/api/config", Method::GET, get(ui_config)),
        ("/api/dev/token", Method::POST, post(dev_token)),
        ("/api/openapi.json", Method::GET, get(openapi)),
        ("/healthz", Method::GET, get(healthz)),
        ("/readyz", Method::GET, get(readyz)),
        ("/metrics", Method::GET, get(metrics)),
    ]
}

/// The API's routes.
pub fn app(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, _, handler)| {
            router.route(path, handler)
        })
        .fallback(web_or_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(chat_core::metrics::track))
        .with_state(state)
}

/// What the web UI needs to know.
async fn ui_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "streamUrl": state.0.stream_url,
        "auth": state.0.auth.is_some(),
        "devTokens": state.0.dev_tokens && state.0.auth.is_some(),
    }))
}

/// Who is asking: with authentication on, the verified token's identity
/// (401 before anything else when there is none, or it is not valid);
/// with it off, nobody in particular.
struct Caller(Option<Identity>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        let Some(auth) = &state.0.auth else {
            return Ok(Self(None));
        };
        let verified = Auth::token(&parts.headers, None).and_then(|token| auth.verify(token));
        match verified {
            Ok(identity) => Ok(Self(Some(identity))),
            Err(problem) => {
                let mut response = problem.into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"chat\""),
                );
                Err(response)
            }
        }
    }
}

impl Caller {
    /// The user acting in `chat`: the token's (403 if the token does not
    /// allow the chat, or `named` is someone else), or, with authentication
    /// off, the one the request names.
    fn user(&self, chat: &ChatId, named: Option<&str>, in_query: bool) -> Result<UserId, Problem> {
        match &self.0 {
            Some(identity) => {
                identity.allow(chat)?;
                identity.same_user(named)?;
                Ok(identity.user.clone())
            }
            None => {
                let missing = Invalid::new("userId", "is required");
                let parsed = named.ok_or(missing).and_then(str::parse::<UserId>);
                parsed.map_err(|e| {
                    if in_query {
                        Problem::bad_request(e.to_string())
                    } else {
                        Problem::invalid_field(&e)
                    }
                })
            }
        }
    }

    /// Checks read access to `chat`.
    fn read(&self, chat: &ChatId) -> Result<(), Problem> {
        self.0
            .as_ref()
            .map_or(Ok(()), |identity| identity.allow(chat))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DevTokenBody {
    user_id: String,
    #[serde(default)]
    chats: Option<Vec<String>>,
}

/// Development only (`--dev-tokens`, with an HMAC key): a token for
/// whoever asks, valid for an hour.
async fn dev_token(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DevTokenBody>,
) -> Result<Json<serde_json::Value>, Problem> {
    let auth = state.0.auth.as_ref().filter(|_| state.0.dev_tokens).ok_or_else(|| {
        Problem::not_found(
            "development tokens are off: start chat-server with --auth-hmac-key and --dev-tokens",
        )
    })?;
    let user: UserId = body.user_id.parse()?;
    if let Some(chats) = &body.chats {
        for chat in chats {
            chat.parse::<ChatId>()?;
        }
    }
    let (token, expires_at) = auth
        .issue(&user, body.chats, Duration::from_secs(3600))
        .map_err(Problem::unavailable)?;
    Ok(Json(
        serde_json::json!({"token": token, "userId": user.as_str(), "expiresAt": expires_at}),
    ))
}

/// 429 for a user over a write limit.
fn over_limit(what: &str, retry_after_secs: u64) -> Response {
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "write-limit",
        "Too many requests",
        format!("too many {what} from this user; retry after {retry_after_secs} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// Outside `/api/`, a GET is for the web UI's files (any unknown path gets
/// its `index.html`); everything else is a 404.
async fn web_or_not_found(State(state): State<AppState>, request: Request) -> Response {
    use tower::ServiceExt as _;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let dir = &state.0.web_dir;
    let index = dir.join("index.html");
    if path.starts_with("/api/") || !matches!(method, Method::GET | Method::HEAD) {
        return not_found(method, request.uri().clone())
            .await
            .into_response();
    }
    if !index.is_file() {
        return Problem::not_found(format!(
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
pub(crate) const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-route",
        "Not found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A JSON request body: `application/json`, within the size limit, read
/// within the body timeout, and of the expected shape.
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Problem> {
        let limits = &state.0.limits;
        check_json_content_type(request.headers())?;
        let too_large = || {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
                format!(
                    "the request body must be at most {} bytes",
                    limits.max_body_bytes
                ),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
            return Err(too_large());
        }
        let read = axum::body::to_bytes(request.into_body(), limits.max_body_bytes);
        let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body-timeout",
                    "Request timeout",
                    format!(
                        "the request body did not arrive within {:?}",
                        limits.body_timeout
                    ),
                ));
            }
            Ok(Err(_)) => return Err(too_large()),
            Ok(Ok(bytes)) => bytes,
        };
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.is_data() {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-field",
                    "Invalid field",
                    e.to_string(),
                )
            } else {
                Problem::bad_request(format!("the request body is not valid JSON: {e}"))
            }
        })
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.as_deref() == Some("application/json") {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        format!(
            "the request body must be application/json, got {}",
            media_type.map_or_else(|| "no Content-Type".to_owned(), |m| format!("{m:?}"))
        ),
    ))
}

/// A path parameter that breaks the API's rules is a malformed URL: 400.
fn path_param<T: std::str::FromStr<Err = Invalid>>(value: &str) -> Result<T, Problem> {
    value
        .parse()
        .map_err(|e: Invalid| Problem::bad_request(e.to_string()))
}

fn path_rejection(rejection: PathRejection) -> Problem {
    Problem::bad_request(rejection.body_text())
}

fn produce_problem(error: ProduceError) -> Problem {
    Problem::unavailable(format!("the event was not stored: {error}"))
}

fn redis_problem(what: &str, error: &redis::RedisError) -> Problem {
    warn!(%error, "Redis unavailable");
    Problem::unavailable(format!("{what} (Redis) is unavailable; retry: {error}"))
}

fn client_ids_unavailable(error: redis::RedisError) -> Problem {
    redis_problem(
        "the clientMessageId store, so the message was not stored,",
        &error,
    )
}

async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PostMessageBody>,
) -> Result<Response, Problem> {
    let Path(chat_id) = path.map_err(path_rejection)?;
    let chat_id: ChatId = path_param(&chat_id)?;
    let user_id = caller.user(&chat_id, body.user_id.as_deref(), false)?;
    check_text(&body.text, state.0.limits.max_text_chars)?;
    if let Err(wait) = state.0.write_limits.message(&user_id) {
        return Ok(over_limit("messages", wait));
    }
    let client_message_id: Option<ClientMessageId> =
        body.client_message_id.map(|id| id.parse()).transpose()?;
    let event = MessagePosted {
        chat_id,
        user_id,
        text: body.text,
        client_message_id,
        created_at: event::now(),
    };
    let (message, replayed) = match event.client_message_id.clone() {
        None => {
            let id = state
                .0
                .producer
                .send(&ChatEvent::Message(event.clone()))
                .await
                .map_err(produce_problem)?;
            (Message::stored(id, event), false)
        }
        Some(client_id) => post_once(&state, event, &client_id).await?,
    };
    let mut response = (StatusCode::CREATED, Json(message)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Posts a message with a `clientMessageId` at most once: answers the stored
/// message (and `true`) when the id was used before.
async fn post_once(
    state: &AppState,
    event: MessagePosted,
    client_id: &ClientMessageId,
) -> Result<(Message, bool), Problem> {
    let inner = &state.0;
    let store = &inner.client_messages;
    let give_up = Instant::now() + inner.claim_wait;
    loop {
        match store
            .claim(&inner.redis, &event.chat_id, &event.user_id, client_id)
            .await
            .map_err(client_ids_unavailable)?
        {
            Claim::Won => {
                let sent = inner
                    .producer
                    .send(&ChatEvent::Message(event.clone()))
                    .await;
                return match sent {
                    Ok(id) => {
                        let message = Message::stored(id, event);
                        if let Err(error) = store.complete(&inner.redis, &message, client_id).await
                        {
                            error!(%error, %message.chat_id, %client_id,
                                "message stored but its clientMessageId was not recorded; a retry may duplicate it");
                        }
                        Ok((message, false))
                    }
                    // A write that may have reached the log keeps its
                    // claim: a retry waits for the projector to tell what it
                    // became, or for the claim to lapse if it never arrived.
                    Err(produce_error) if produce_error.may_be_stored() => {
                        Err(produce_problem(produce_error))
                    }
                    Err(produce_error) => {
                        if let Err(error) = store
                            .release(&inner.redis, &event.chat_id, &event.user_id, client_id)
                            .await
                        {
                            warn!(%error, %client_id, "cannot release clientMessageId; it frees itself when the claim lapses");
                        }
                        Err(produce_problem(produce_error))
                    }
                };
            }
            Claim::Stored(message) => return same_text(message, &event, client_id),
            Claim::Pending if Instant::now() >= give_up => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "client-message-id-in-progress",
                    "Request in progress",
                    format!(
                        "a request with clientMessageId {client_id:?} is still being stored; retry"
                    ),
                ));
            }
            Claim::Pending => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Answers the message stored for a retried `clientMessageId`, or 409 when
/// the id was used for a different text.
fn same_text(
    message: Message,
    event: &MessagePosted,
    client_id: &ClientMessageId,
) -> Result<(Message, bool), Problem> {
    if message.text == event.text {
        return Ok((message, true));
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "client-message-id-reused",
        "clientMessageId reused",
        format!(
            "clientMessageId {client_id:?} was already used for message {} with a different text",
            message.id
        ),
    ))
}

async fn add_reaction(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(body): JsonBody<AddReactionBody>,
) -> Result<Response, Problem> {
    let Path((chat_id, message_id)) = path.map_err(path_rejection)?;
    let chat_id: ChatId = path_param(&chat_id)?;
    let message_id = path_param(&message_id)?;
    let user_id = caller.user(&chat_id, body.user_id.as_deref(), false)?;
    let change = ReactionChanged {
        chat_id,
        message_id,
        user_id,
        emoji: body.emoji.parse()?,
        action: ReactionAction::Add,
        created_at: event::now(),
    };
    if let Err(wait) = state.0.write_limits.reaction(&change.user_id) {
        return Ok(over_limit("reactions", wait));
    }
    ensure_message_exists(&state, &change).await?;
    let reaction = store_reaction(&state, change).await?;
    Ok((StatusCode::CREATED, Json(reaction)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoveReactionQuery {
    #[serde(default)]
    user_id: Option<String>,
}

async fn remove_reaction(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String, String)>, PathRejection>,
    query: Result<Query<RemoveReactionQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Path((chat_id, message_id, emoji)) = path.map_err(path_rejection)?;
    let chat_id = path_param(&chat_id)?;
    let message_id = path_param(&message_id)?;
    let emoji = path_param(&emoji)?;
    let Query(query) = query.map_err(|r| Problem::bad_request(r.body_text()))?;
    let user_id = caller.user(&chat_id, query.user_id.as_deref(), true)?;
    let change = ReactionChanged {
        chat_id,
        message_id,
        user_id,
        emoji,
        action: ReactionAction::Remove,
        created_at: event::now(),
    };
    if let Err(wait) = state.0.write_limits.reaction(&change.user_id) {
        return Ok(over_limit("reactions", wait));
    }
    ensure_message_exists(&state, &change).await?;
    let reaction = store_reaction(&state, change).await?;
    Ok((StatusCode::OK, Json(reaction)).into_response())
}

/// A reaction needs its message in the read model. A message posted a
/// moment ago may not be there yet: wait (boundedly) for the projector to
/// pass its position before calling it missing.
async fn ensure_message_exists(state: &AppState, change: &ReactionChanged) -> Result<(), Problem> {
    let inner = &state.0;
    let give_up = Instant::now() + inner.reaction_wait;
    loop {
        let found = inner
            .read_model
            .lookup(&inner.redis, &change.chat_id, change.message_id)
            .await
            .map_err(|e| redis_problem("the read model, so the reaction was not stored,", &e))?;
        match found {
            Lookup::Found => return Ok(()),
            Lookup::Missing => {
                return Err(Problem::not_found(format!(
                    "chat {} has no message {}",
                    change.chat_id, change.message_id
                )));
            }
            Lookup::NotYetProjected if Instant::now() >= give_up => {
                return Err(Problem::unavailable(format!(
                    "message {} is not in the read model yet; retry",
                    change.message_id
                )));
            }
            Lookup::NotYetProjected => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The most messages one fetch returns.
pub(crate) const MAX_FETCH_LIMIT: u32 = 100;
/// How many messages a fetch returns when `limit` is not given.
pub(crate) const DEFAULT_FETCH_LIMIT: u32 = 50;

#[derive(Debug, Deserialize)]
struct FetchQuery {
    after: Option<String>,
    before: Option<String>,
    limit: Option<String>,
    /// Each message then says which emojis this user holds.
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

async fn fetch_messages(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FetchQuery>, QueryRejection>,
) -> Response {
    let started = Instant::now();
    let response = fetch_gated(&state, &caller, path, query)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    metrics::histogram!("fetch_duration_seconds").record(started.elapsed());
    metrics::counter!("fetch_requests_total", "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

/// A fetch: counted toward its chat's rate, passed through the throttle
/// when the chat is hot, then read.
async fn fetch_gated(
    state: &AppState,
    caller: &Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<FetchQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Path(chat_id) = path.map_err(path_rejection)?;
    let chat_id: ChatId = path_param(&chat_id)?;
    caller.read(&chat_id)?;
    let inner = &state.0;
    if inner.count_fetches {
        inner.fetch_counter.count(&chat_id);
    }
    let decision = if inner.hot.is_hot(&chat_id) {
        let decision = inner.throttle.decide(&chat_id).await;
        let outcome = if decision.admitted {
            "admitted"
        } else {
            "throttled"
        };
        metrics::counter!("hot_fetches_total", "mode" => decision.mode, "outcome" => outcome)
            .increment(1);
        Some(decision)
    } else {
        None
    };
    if let Some(decision) = decision.as_ref().filter(|d| !d.admitted) {
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "hot-chat-throttled",
            "Too many requests",
            format!(
                "chat {chat_id} is hot: its fetches are limited to {} per second; retry after {} s, or follow the chat's event stream",
                decision.limit, decision.retry_after_secs
            ),
        )
        .into_response();
        rate_limit_headers(response.headers_mut(), decision);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(decision.retry_after_secs),
        );
        return Ok(response);
    }
    let page = fetch_page(state, caller, chat_id, query).await?;
    let mut response = Json(page).into_response();
    if let Some(decision) = &decision {
        rate_limit_headers(response.headers_mut(), decision);
    }
    Ok(response)
}

/// The `RateLimit-*` headers of a hot chat's fetch.
fn rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_secs));
}

async fn fetch_page(
    state: &AppState,
    caller: &Caller,
    chat_id: ChatId,
    query: Result<Query<FetchQuery>, QueryRejection>,
) -> Result<chat_core::read_model::FetchPage, Problem> {
    let Query(query) = query.map_err(|r| Problem::bad_request(r.body_text()))?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_FETCH_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_FETCH_LIMIT).contains(n))
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "limit: must be a whole number from 1 to {MAX_FETCH_LIMIT}, got {text:?}"
                ))
            })?,
    };
    let cursor = |name: &str, text: &str| {
        text.parse::<EventId>()
            .map_err(|e| Problem::bad_request(format!("{name}: {}", e.reason)))
    };
    let page = match (query.after.as_deref(), query.before.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "give either after or before, not both",
            ));
        }
        (Some(after), None) => Page::After(cursor("after", after)?),
        (None, Some(before)) => Page::Before(cursor("before", before)?),
        (None, None) => Page::Latest,
    };
    let user: Option<UserId> = match &caller.0 {
        Some(identity) => {
            identity.same_user(query.user_id.as_deref())?;
            Some(identity.user.clone())
        }
        None => query
            .user_id
            .as_deref()
            .map(|user| {
                user.parse()
                    .map_err(|e: Invalid| Problem::bad_request(e.to_string()))
            })
            .transpose()?,
    };
    state
        .0
        .read_model
        .fetch(&state.0.redis, &chat_id, page, limit, user.as_ref())
        .await
        .map_err(|e| redis_problem("the read model", &e))
}

async fn store_reaction(state: &AppState, change: ReactionChanged) -> Result<Reaction, Problem> {
    let id = state
        .0
        .producer
        .send(&ChatEvent::Reaction(change.clone()))
        .await
        .map_err(produce_problem)?;
    Ok(Reaction { id, change })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    let (kafka, redis) = tokio::join!(state.0.producer.check(), state.0.redis.ping());
    let mut failures = Vec::new();
    if let Err(e) = kafka {
        failures.push(format!("Kafka: {e}"));
    }
    if let Err(e) = redis {
        failures.push(format!("Redis: {e}"));
    }
    if failures.is_empty() {
        Ok(Json(
            serde_json::json!({"status": "ready", "kafka": "ok", "redis": "ok"}),
        ))
    } else {
        Err(Problem::unavailable(format!(
            "not ready: {}",
            failures.join("; ")
        )))
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    chat_core::metrics::exposition(&state.0.metrics)
}
