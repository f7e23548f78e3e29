//! The HTTP API: the route table and the state every handler shares. Each
//! resource has a module of its own; `extract` holds the typed extractors
//! and `error` the mapping of service failures onto the error catalogue.
//!
//! Every handler takes the same order: parse and validate the request,
//! authenticate and authorize its caller, pass the rate limit or the
//! throttle, then act.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Router, middleware};
use chat_core::auth::Auth;
use chat_core::metrics::PrometheusHandle;
use chat_core::read_model::ReadModel;
use chat_core::redis_conn::RedisConn;

use crate::client_messages::ClientMessages;
use crate::hot::Hot;
use crate::producer::EventProducer;

mod error;
mod extract;
mod fetch;
mod messages;
mod ops;
mod reactions;

pub(crate) use fetch::MAX_FETCH_LIMIT;

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

/// What every handler shares: a cheap clone, read through `Deref` as its
/// [`Inner`].
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

/// The state behind an [`AppState`].
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) producer: EventProducer,
    pub(crate) redis: Arc<RedisConn>,
    pub(crate) read_model: Arc<ReadModel>,
    pub(crate) client_messages: ClientMessages,
    /// Which reaction changes change something, and are written.
    pub(crate) reaction_changes: crate::reaction_changes::ReactionChanges,
    pub(crate) limits: Limits,
    pub(crate) metrics: PrometheusHandle,
    /// How long a retry waits for a concurrent request with the same
    /// `clientMessageId` to finish its write.
    pub(crate) claim_wait: Duration,
    /// How long a reaction waits for the projector to reach its message.
    pub(crate) reaction_wait: Duration,
    /// The hot chats: fetch counts, flags, the throttle and snapshots.
    pub(crate) hot: Hot,
    /// Folder of the built web UI.
    pub(crate) web_dir: std::path::PathBuf,
    /// publish-server's base URL as browsers reach it.
    pub(crate) stream_url: String,
    /// Token verification; `None`: authentication is off.
    pub(crate) auth: Option<Auth>,
    /// Serve `POST /api/dev/token` (development only).
    pub(crate) dev_tokens: bool,
    /// ... to clients on any address, not only loopback ones.
    pub(crate) dev_tokens_from_anywhere: bool,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: chat_core::client_ip::TrustedProxies,
    /// The projector has settled in its group (true without a projector).
    pub(crate) projector_settled: Arc<std::sync::atomic::AtomicBool>,
    /// Per-user limits on writes.
    pub(crate) write_limits: crate::limits::WriteLimits,
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Every route: path template, method and handler. The router is built from
/// this table, and a test holds it equal to `openapi.json`.
pub(crate) fn routes() -> Vec<(&'static str, Method, MethodRouter<AppState>)> {
    const MESSAGES: &str = "/api/chats/{chat_id}/messages";
    const REACTIONS: &str = "/api/chats/{chat_id}/messages/{message_id}/reactions";
    const REACTION: &str = "/api/chats/{chat_id}/messages/{message_id}/reactions/{emoji}";
    vec![
        (MESSAGES, Method::GET, get(fetch::fetch_messages)),
        (MESSAGES, Method::POST, post(messages::post_message)),
        (REACTIONS, Method::POST, post(reactions::add_reaction)),
        (REACTION, Method::DELETE, delete(reactions::remove_reaction)),
        ("/api/config", Method::GET, get(ops::ui_config)),
        ("/api/dev/token", Method::POST, post(ops::dev_token)),
        ("/api/openapi.json", Method::GET, get(ops::openapi)),
        ("/healthz", Method::GET, get(chat_core::serve::healthz)),
        ("/readyz", Method::GET, get(ops::readyz)),
        ("/metrics", Method::GET, get(ops::metrics)),
    ]
}

/// The API's routes.
pub(crate) fn app(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, _, handler)| {
            router.route(path, handler)
        })
        .fallback(ops::web_or_not_found)
        .method_not_allowed_fallback(chat_core::problem::method_not_allowed)
        .layer(middleware::from_fn(chat_core::metrics::track))
        .with_state(state)
}

/// Handler tests that need no socket: requests go to the router with
/// `oneshot`, and each is refused before Kafka or Redis is asked, so
/// neither needs to be up.
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use clap::Parser as _;
    use tower::ServiceExt as _;

    async fn router() -> axum::Router {
        let mut config = crate::Config::parse_from(["chat-server"]);
        config.listen = "127.0.0.1:0".parse().expect("address");
        // Nothing listens there: a request that reached either would fail.
        config.kafka.brokers = "127.0.0.1:1".into();
        config.redis.url = "redis://127.0.0.1:1".into();
        let server = crate::Server::bind(config).await.expect("binds");
        super::app(server.state.clone())
    }

    async fn answer(request: Request<Body>) -> (StatusCode, String, serde_json::Value) {
        let response = router().await.oneshot(request).await.expect("answers");
        let status = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("text")
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            content_type,
            serde_json::from_slice(&body).expect("JSON"),
        )
    }

    fn post(path: &str, content_type: &str, body: &str) -> Request<Body> {
        Request::post(path)
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .expect("request")
    }

    #[tokio::test]
    async fn malformed_requests_get_problem_json_before_any_service_is_asked() {
        let cases = [
            (
                post(
                    "/api/chats/no%20spaces/messages",
                    "application/json",
                    r#"{"userId":"a","text":"x"}"#,
                ),
                StatusCode::BAD_REQUEST,
                "urn:chat:problem:bad-request",
            ),
            (
                post("/api/chats/lobby/messages", "text/plain", "hi"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "urn:chat:problem:unsupported-media-type",
            ),
            (
                post(
                    "/api/chats/lobby/messages",
                    "application/json",
                    r#"{"userId":"a","text":""}"#,
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:chat:problem:invalid-field",
            ),
            (
                post("/api/chats/lobby/messages", "application/json", "{not json"),
                StatusCode::BAD_REQUEST,
                "urn:chat:problem:bad-request",
            ),
            (
                Request::get("/api/chats/lobby/messages?limit=0")
                    .body(Body::empty())
                    .expect("request"),
                StatusCode::BAD_REQUEST,
                "urn:chat:problem:bad-request",
            ),
            (
                Request::get("/api/nothing-here")
                    .body(Body::empty())
                    .expect("request"),
                StatusCode::NOT_FOUND,
                "urn:chat:problem:no-route",
            ),
            (
                Request::put("/api/chats/lobby/messages")
                    .body(Body::empty())
                    .expect("request"),
                StatusCode::METHOD_NOT_ALLOWED,
                "urn:chat:problem:method-not-allowed",
            ),
        ];
        for (request, status, kind) in cases {
            let what = format!("{} {}", request.method(), request.uri());
            let (got, content_type, problem) = answer(request).await;
            assert_eq!(got, status, "{what}: {problem}");
            assert_eq!(content_type, "application/problem+json", "{what}");
            assert_eq!(problem["type"], kind, "{what}");
            assert_eq!(problem["status"], status.as_u16(), "{what}");
        }
    }
}
