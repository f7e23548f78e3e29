//! publish-server: streams each chat's events from Kafka to its subscribers
//! over Server-Sent Events, with resume by `Last-Event-ID` and a bounded
//! memory per chat and per connection.
//!
//! `conn` reads each connection's request head and writes streams to the
//! socket itself; `admission` decides whether a stream may open; `stream`
//! writes it, one chat or many (`replay` resumes a chat from memory or
//! Redis); `hub`, `fanout` and `coalesce` hold and spread each chat's
//! events; `reader` brings them from Kafka.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Json, Router, middleware};
use chat_core::auth::Auth;
use chat_core::hot::HotChats;
use chat_core::metrics::PrometheusHandle;
use chat_core::problem::ApiError;
use chat_core::read_model::ReadModel;
use chat_core::redis_conn::RedisConn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{info, warn};

mod admission;
mod coalesce;
mod config;
mod conn;
mod fanout;
mod hub;
mod position;
mod reader;
mod replay;
mod stream;
mod trim;

pub use config::Config;

const LAST_EVENT_ID: header::HeaderName = header::HeaderName::from_static("last-event-id");

/// Why the server could not start.
pub type Error = chat_core::serve::StartError;

/// The state behind an [`AppState`].
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) hubs: Arc<hub::Hubs>,
    pub(crate) redis: RedisConn,
    pub(crate) read_model: ReadModel,
    pub(crate) metrics: PrometheusHandle,
    /// The hot chats, whose reactions are coalesced.
    pub(crate) hot: Arc<HotChats>,
    /// Token verification; `None`: authentication is off.
    pub(crate) auth: Option<Auth>,
    /// Open streams per user and per client address.
    pub(crate) per_user: admission::Counts<String>,
    pub(crate) per_address: admission::Counts<std::net::IpAddr>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: chat_core::client_ip::TrustedProxies,
    /// Origins allowed to open streams from a browser.
    pub(crate) origins: Vec<String>,
    pub(crate) connections: Arc<AtomicUsize>,
    /// Set once the reader has its partitions.
    pub(crate) reading: Arc<AtomicBool>,
    /// Fires at shutdown: every stream ends.
    pub(crate) shutdown: CancellationToken,
}

/// What every handler and stream shares: a cheap clone, read through
/// `Deref` as its [`Inner`].
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Whether a browser page of `origin` may open streams.
    pub(crate) fn cors_allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}

/// The routes of every request but a GET of a chat's events.
fn app(state: AppState) -> Result<Router, Error> {
    let origins = state
        .config
        .cors_origins
        .iter()
        .map(|o| HeaderValue::from_str(o.trim()).map_err(|_| Error::Origin(o.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    if state.config.cors_origins.iter().any(|o| o.trim() == "*") {
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
        .route("/healthz", get(chat_core::serve::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(chat_core::problem::no_route)
        .method_not_allowed_fallback(chat_core::problem::method_not_allowed)
        .layer(cors)
        .layer(middleware::from_fn(chat_core::metrics::track))
        .with_state(state))
}

async fn events_other_methods(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method,
        path: uri.path().to_owned(),
        allow: Some("GET"),
    }
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let reading = state.reading.load(Ordering::Acquire);
    let redis = state.redis.ping().await;
    chat_core::serve::ready(&[
        (
            "kafka",
            (!reading).then(|| "not reading the topic yet".to_owned()),
        ),
        ("redis", redis.err().map(|e| e.to_string())),
    ])
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.metrics.render();
    const FANOUT_DELAY: &str = "publish_fanout_delay_seconds";
    fanout::FANOUT_DELAY.render(
        FANOUT_DELAY,
        chat_core::metrics::help(FANOUT_DELAY),
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
        let listener = chat_core::serve::bind(config.listen).await?;
        let auth = Auth::from_config(&config.auth)?;
        let redis = RedisConn::new(&config.redis)?;
        let read_model = ReadModel::reader(config.redis.keys(), &config.kafka.topic);
        let hot = HotChats::new();
        let hubs = Arc::new(hub::Hubs::new(
            hub::Budget {
                frames: config.hub_buffer as usize,
                bytes_per_hub: usize::try_from(config.hub_buffer_bytes).unwrap_or(usize::MAX),
                bytes_total: usize::try_from(config.hub_buffer_total_bytes).unwrap_or(usize::MAX),
            },
            config.max_chats,
            hot.clone(),
        ));
        let origins = config
            .cors_origins
            .iter()
            .map(|o| o.trim().to_owned())
            .collect();
        let trusted_proxies = config.trusted_proxies.clone().into();
        let state = AppState(Arc::new(Inner {
            trusted_proxies,
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
    /// The hot chats this server knows of: the flags it resyncs every
    /// second and hears announced.
    pub fn hot_chats(&self) -> Arc<HotChats> {
        self.state.hot.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.listen)
    }

    /// Serves until `shutdown` fires: then stops accepting, ends every
    /// stream (clients reconnect elsewhere with their Last-Event-ID) and
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner: &Inner = &self.state;
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
        // glibc's heaps are trimmed here; jemalloc purges on its own.
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
    }
}
