//! publish-server: streams each chat's events from Kafka to its subscribers
//! over Server-Sent Events, with resume by `Last-Event-ID` and a bounded
//! memory per chat and per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router, middleware};
use chat_core::auth::{Auth, AuthConfig};
use chat_core::config::{KafkaConfig, RedisConfig};
use chat_core::hot::{HotChats, HotStoreConfig};
use chat_core::metrics::PrometheusHandle;
use chat_core::problem::Problem;
use chat_core::read_model::ReadModel;
use chat_core::redis_conn::RedisConn;
use chat_core::validate::ChatId;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{info, warn};

mod coalesce;
mod conn;
mod fanout;
mod hub;
mod reader;
mod stream;
mod trim;

const LAST_EVENT_ID: header::HeaderName = header::HeaderName::from_static("last-event-id");

/// Everything publish-server can be told.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "publish-server",
    version,
    about = "Streams chat events over Server-Sent Events",
    // Kafka settings of the producer side, meaningless here.
    mut_arg("delivery_timeout_ms", |a| a.hide(true)),
    mut_arg("create_topic", |a| a.hide(true)),
    mut_arg("topic_partitions", |a| a.hide(true)),
    mut_arg("topic_replication", |a| a.hide(true))
)]
pub struct Config {
    /// Address the SSE API listens on.
    #[arg(long, env = "PUBLISH_SERVER_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub redis: RedisConfig,

    #[command(flatten)]
    pub hot_store: HotStoreConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    /// Most open streams of one user (with authentication on); one more
    /// answers 429. 0: no limit.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 10)]
    pub max_streams_per_user: usize,

    /// Most open streams from one client address; one more answers 429.
    /// 0: no limit.
    #[arg(long, env = "MAX_STREAMS_PER_ADDRESS", default_value_t = 5000)]
    pub max_streams_per_address: usize,

    /// Origins allowed to open streams from a browser (CORS), comma-separated.
    #[arg(
        long,
        env = "CORS_ORIGINS",
        default_value = "http://127.0.0.1:8080,http://localhost:8080",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Most chats streamed at once; a stream for one more answers 503.
    #[arg(long, env = "MAX_CHATS", default_value_t = 100_000)]
    pub max_chats: usize,

    /// Most open streams; one more answers 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Recent events kept in memory per chat, for replay and for
    /// subscribers that fall behind.
    #[arg(long, env = "HUB_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub hub_buffer: u32,

    /// Most events replayed from Redis to a reconnecting client; a client
    /// further behind gets `reset`.
    #[arg(long, env = "REPLAY_MAX", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub replay_max: u32,

    /// How long a resume waits for the read model to catch up before
    /// sending `reset`, in milliseconds.
    #[arg(long, env = "REPLAY_WAIT_MS", default_value_t = 2000)]
    pub replay_wait_ms: u64,

    /// Seconds between heartbeat comments on idle streams.
    #[arg(long, env = "HEARTBEAT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,

    /// A client that takes no data for this long is disconnected, in
    /// milliseconds.
    #[arg(long, env = "SEND_TIMEOUT_MS", default_value_t = 30_000)]
    pub send_timeout_ms: u64,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid Kafka settings: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid Redis settings: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid CORS origin {0:?}")]
    Origin(String),
    #[error("invalid authentication settings: {0}")]
    Auth(String),
}

#[derive(Debug)]
struct Inner {
    config: Config,
    hubs: Arc<hub::Hubs>,
    redis: RedisConn,
    read_model: ReadModel,
    metrics: PrometheusHandle,
    /// The hot chats, whose reactions are coalesced.
    hot: Arc<HotChats>,
    /// Token verification; `None`: authentication is off.
    auth: Option<Auth>,
    /// Open streams per user and per client address.
    per_user: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    per_address: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    /// Origins allowed to open streams from a browser.
    origins: Vec<String>,
    connections: Arc<AtomicUsize>,
    /// Set once the reader has its partitions.
    reading: Arc<AtomicBool>,
    /// Fires at shutdown: every stream ends.
    shutdown: CancellationToken,
}

/// What every handler and stream shares.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub(crate) fn hubs(&self) -> &hub::Hubs {
        &self.0.hubs
    }
    pub(crate) fn redis(&self) -> &RedisConn {
        &self.0.redis
    }
    pub(crate) fn read_model(&self) -> &ReadModel {
        &self.0.read_model
    }
    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.0.config.heartbeat_secs)
    }
    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.0.config.send_timeout_ms)
    }
    pub(crate) fn replay_max(&self) -> u32 {
        self.0.config.replay_max
    }
    pub(crate) fn replay_wait(&self) -> Duration {
        Duration::from_millis(self.0.config.replay_wait_ms)
    }
    pub(crate) fn cors_allows(&self, origin: &str) -> bool {
        self.0.origins.iter().any(|o| o == origin)
    }
}

/// The API's routes.
pub fn app(state: AppState) -> Result<Router, Error> {
    let origins = state
        .0
        .config
        .cors_origins
        .iter()
        .map(|o| HeaderValue::from_str(o.trim()).map_err(|_| Error::Origin(o.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    if state.0.config.cors_origins.iter().any(|o| o.trim() == "*") {
        return Err(Error::Origin(
            "* (list the origins: credentials may go along)".to_owned(),
        ));
    }
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET])
        .allow_headers([LAST_EVENT_ID, header::CACHE_CONTROL]);
    Ok(Router::new()
        // A GET is answered by `conn` before it reaches the router.
        .route("/api/chats/{chat_id}/events", any(events_other_methods))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(cors)
        .layer(middleware::from_fn(chat_core::metrics::track))
        .with_state(state))
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    last_event_id: Option<String>,
    /// For EventSource, which cannot set headers (never logged).
    token: Option<String>,
}

async fn events_other_methods(method: Method, uri: Uri) -> Response {
    let mut response = method_not_allowed(method, uri).await.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
}

/// Counts an open stream; uncounts it when dropped.
#[derive(Debug)]
pub(crate) struct Counted(AppState);

impl Drop for Counted {
    fn drop(&mut self) {
        let open = self.0.0.connections.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("publish_connections").set(open as f64);
    }
}

/// Holds one place in a per-key count of open streams; frees it when dropped.
pub(crate) struct Slot<K: std::hash::Hash + Eq + Clone> {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> std::fmt::Debug for Slot<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl<K: std::hash::Hash + Eq + Clone> Slot<K> {
    /// Takes a place under `key` unless `limit` (0: none) are taken.
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>,
        key: K,
        limit: usize,
    ) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(key.clone()).or_insert(0);
        if limit > 0 && *open >= limit {
            return None;
        }
        *open += 1;
        Some(Self {
            counts: counts.clone(),
            key,
        })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// A stream allowed to start: its chat's hub joined, its place counted.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) hub: Arc<hub::Hub>,
    pub(crate) last_seen: stream::LastSeen,
    pub(crate) counted: Counted,
    /// When the token expires (Unix seconds): the stream ends then.
    pub(crate) expires_at: Option<i64>,
    pub(crate) slots: (Option<Slot<String>>, Option<Slot<std::net::IpAddr>>),
}

fn too_many_streams(whose: &str, limit: usize) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-streams",
        "Too many requests",
        format!("{whose} has {limit} streams open, the limit; close one first"),
    )
}

/// Checks a request for a chat's events and joins the chat's hub, or says
/// why not.
pub(crate) fn admit(state: &AppState, request: conn::EventsRequest) -> Result<Admitted, Problem> {
    let chat: ChatId = request
        .chat
        .map_err(Problem::bad_request)?
        .parse()
        .map_err(|e: chat_core::validate::Invalid| Problem::bad_request(e.to_string()))?;
    let query: EventsQuery = serde_urlencoded::from_str(&request.query)
        .map_err(|e| Problem::bad_request(format!("query: {e}")))?;
    let identity = match &state.0.auth {
        None => None,
        Some(auth) => {
            let mut headers = axum::http::HeaderMap::new();
            for (name, value) in [
                (header::AUTHORIZATION, &request.authorization),
                (header::COOKIE, &request.cookie),
            ] {
                if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                    headers.insert(name, value);
                }
            }
            let identity = auth.verify(Auth::token(&headers, query.token.as_deref())?)?;
            identity.allow(&chat)?;
            Some(identity)
        }
    };
    let user_slot = match &identity {
        Some(identity) => Some(
            Slot::take(
                &state.0.per_user,
                identity.user.as_str().to_owned(),
                state.0.config.max_streams_per_user,
            )
            .ok_or_else(|| too_many_streams("this user", state.0.config.max_streams_per_user))?,
        ),
        None => None,
    };
    let address_slot = match request.peer {
        Some(peer) => Some(
            Slot::take(
                &state.0.per_address,
                peer,
                state.0.config.max_streams_per_address,
            )
            .ok_or_else(|| {
                too_many_streams("this address", state.0.config.max_streams_per_address)
            })?,
        ),
        None => None,
    };
    // The header wins: EventSource sends it on every reconnect.
    let last = match request.last_event_id {
        Some(Ok(value)) => Some(value),
        Some(Err(())) => Some("\u{0}".to_owned()),
        None => query.last_event_id,
    };
    let last_seen = match last.as_deref().map(str::trim) {
        None | Some("") => stream::LastSeen::Nothing,
        Some(text) => text
            .parse()
            .map_or(stream::LastSeen::Malformed, stream::LastSeen::Id),
    };
    let open = state.0.connections.fetch_add(1, Ordering::AcqRel) + 1;
    let counted = Counted(state.clone());
    if open > state.0.config.max_connections {
        return Err(Problem::unavailable(format!(
            "this server holds {} streams, its limit; retry on another",
            state.0.config.max_connections
        )));
    }
    metrics::gauge!("publish_connections").set(open as f64);
    let hub = state
        .hubs()
        .join(&chat)
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    Ok(Admitted {
        hub,
        last_seen,
        counted,
        expires_at: identity.map(|i| i.expires_at),
        slots: (user_slot, address_slot),
    })
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    let mut failures = Vec::new();
    if !state.0.reading.load(Ordering::Acquire) {
        failures.push("Kafka: not reading the topic yet".to_owned());
    }
    if let Err(e) = state.0.redis.ping().await {
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
    let mut body = state.0.metrics.render();
    fanout::FANOUT_DELAY.render(
        "publish_fanout_delay_seconds",
        "From an event's arrival at its chat's hub to a live subscriber's socket taking it.",
        &mut body,
    );
    chat_core::metrics::text(body)
}

/// A publish-server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: AppState,
    router: Router,
}

impl Server {
    /// Binds the listen address (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let auth = Auth::from_config(&config.auth).map_err(Error::Auth)?;
        let redis = RedisConn::new(&config.redis)?;
        let read_model = ReadModel::new(config.redis.keys(), &config.kafka.topic, 1, 1);
        let hot = HotChats::new();
        let hubs = Arc::new(hub::Hubs::new(
            config.hub_buffer as usize,
            config.max_chats,
            hot.clone(),
        ));
        let origins = config
            .cors_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .collect();
        let state = AppState(Arc::new(Inner {
            origins,
            config,
            hubs,
            redis,
            read_model,
            metrics: chat_core::metrics::handle(),
            hot,
            auth,
            per_user: Arc::default(),
            per_address: Arc::default(),
            connections: Arc::new(AtomicUsize::new(0)),
            reading: Arc::new(AtomicBool::new(false)),
            shutdown: CancellationToken::new(),
        }));
        let router = app(state.clone())?;
        Ok(Self {
            listener,
            state,
            router,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.0.config.listen)
    }

    /// Serves until `shutdown` fires: then stops accepting, ends every
    /// stream (clients reconnect elsewhere with their Last-Event-ID) and
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let inner = &self.state.0;
        let reader = tokio::spawn(reader::run(
            inner.config.kafka.clone(),
            inner.hubs.clone(),
            inner.reading.clone(),
            inner.shutdown.clone(),
        ));
        let hot_store = inner.config.hot_store.redis(&inner.config.redis);
        let watcher = tokio::spawn(chat_core::hot::watch(
            inner.hot.clone(),
            hot_store,
            Duration::from_secs(1),
            inner.shutdown.clone(),
        ));
        let coalescer = tokio::spawn(coalesce::run(
            self.state.clone(),
            Duration::from_secs(1),
            inner.shutdown.clone(),
        ));
        let trimmer = tokio::spawn(trim::run(inner.connections.clone(), inner.shutdown.clone()));
        info!(addr = %self.local_addr(), topic = %inner.config.kafka.topic, "publish-server listening");
        let streams = inner.shutdown.clone();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            signal.cancelled().await;
            streams.cancel();
        });
        conn::serve(
            self.listener,
            self.router,
            self.state.clone(),
            shutdown.clone(),
        )
        .await;
        inner.shutdown.cancel();
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "the Kafka reader could not start"),
            Err(error) => warn!(%error, "the Kafka reader failed"),
        }
        let _ = watcher.await;
        let _ = coalescer.await;
        let _ = trimmer.await;
        info!("publish-server stopped");
        Ok(())
    }
}
