//! chat-server: the HTTP API that writes chat messages and reactions to Kafka.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_core::auth::AuthConfig;
use chat_core::config::{KafkaConfig, RedisConfig};
use chat_core::hot::HotStoreConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod client_messages;
mod hot;
mod http;
mod limits;
mod producer;
mod projector;
mod snapshot;
pub mod token;

/// The command line: serve (no subcommand), or a tool.
#[derive(Debug, clap::Parser)]
#[command(
    name = "chat-server",
    version,
    about = "The chat backend's HTTP API",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub server: Config,
}

/// What chat-server can do besides serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prints a signed token for local testing.
    Token(token::TokenArgs),
}

/// Every route the API serves, as path template and method: what
/// `/api/openapi.json` must document.
pub fn route_table() -> Vec<(&'static str, axum::http::Method)> {
    http::routes()
        .into_iter()
        .map(|(path, method, _)| (path, method))
        .collect()
}

/// Everything chat-server can be told.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "chat-server", version, about = "The chat backend's HTTP API")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "CHAT_SERVER_LISTEN", default_value = chat_core::config::defaults::CHAT_SERVER_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub kafka: KafkaConfig,

    #[command(flatten)]
    pub redis: RedisConfig,

    /// The largest request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(256..=16 * 1024 * 1024))]
    pub max_body_bytes: u32,

    /// The longest message text, in Unicode characters.
    #[arg(long, env = "MAX_TEXT_CHARS", default_value_t = 4000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_text_chars: u32,

    /// Proxies (addresses or networks, comma-separated) whose
    /// `X-Forwarded-For` names the client, for per-client budgets; from any
    /// other peer the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<chat_core::client_ip::Network>,

    /// Connections held at once; one more is answered 503 and closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// How long a client may take no bytes of an answer before its
    /// connection is closed, in milliseconds.
    #[arg(long, env = "WRITE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub write_timeout_ms: u64,

    /// How long a client may take to send a request body, in milliseconds.
    #[arg(long, env = "BODY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub body_timeout_ms: u64,

    /// How long a `clientMessageId` is remembered, in seconds: a retry within
    /// this window answers with the original message.
    #[arg(long, env = "CLIENT_MESSAGE_ID_WINDOW_SECS", default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..=30 * 24 * 3600))]
    pub client_message_id_window_secs: u64,

    /// Run the projector, which applies the topic to the Redis read model
    /// (a Kafka consumer group: run it in as many instances as you like).
    #[arg(long, env = "PROJECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub projector: bool,

    /// Kafka consumer group of the projector.
    #[arg(long, env = "PROJECTOR_GROUP", default_value = "chat-projector")]
    pub projector_group: String,

    /// Messages kept per chat in the read model; older ones (and their
    /// reactions) are dropped from it, not from Kafka.
    #[arg(long, env = "RETENTION_MESSAGES", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub retention_messages: u32,

    /// Events kept per chat in Redis for publish-server to replay to
    /// clients that reconnect with an older Last-Event-ID.
    #[arg(long, env = "REPLAY_EVENTS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub replay_events: u32,

    /// How long a reaction waits for the projector to reach its message
    /// (posted a moment ago) before answering 503, in milliseconds.
    #[arg(long, env = "REACTION_WAIT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub reaction_wait_ms: u64,

    /// The most distinct emojis one message may hold: a reaction with
    /// another emoji is refused with 409 (and dropped by the projector, for
    /// adds that raced past that check).
    #[arg(long, env = "MAX_EMOJIS_PER_MESSAGE",
          default_value_t = chat_core::read_model::DEFAULT_MAX_EMOJIS_PER_MESSAGE,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_emojis_per_message: u32,

    #[command(flatten)]
    pub hot_store: HotStoreConfig,

    /// Fetches per second a hot chat may take, over all chat-server
    /// instances together (the cluster-wide budget).
    #[arg(long, env = "HOT_FETCH_BUDGET", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub hot_fetch_budget: u32,

    /// Fetches a hot chat may take at once beyond its steady budget.
    #[arg(long, env = "HOT_FETCH_BURST", default_value_t = 25,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub hot_fetch_burst: u32,

    /// How long a hot chat's shared snapshot (its latest page) answers
    /// fetches before it is read again, in milliseconds; 0: no snapshot,
    /// every fetch of a hot chat reads Redis through the chat's budget.
    #[arg(long, env = "HOT_SNAPSHOT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub hot_snapshot_ms: u64,

    /// Fetches per second one client may make of one hot chat, on each
    /// instance (a client is the token's user, else the `userId` named,
    /// else the address).
    #[arg(long, env = "HOT_CLIENT_RATE", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub hot_client_rate: u32,

    /// Fetches one client may make of one hot chat at once beyond its rate.
    #[arg(long, env = "HOT_CLIENT_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub hot_client_burst: u32,

    /// chat-server instances sharing the budget: while the hot-chat Redis
    /// is unreachable, each throttles a hot chat locally at budget / this.
    #[arg(long, env = "EXPECTED_INSTANCES", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub expected_instances: u32,

    /// Up to this many seconds are added at random to a 429's
    /// `Retry-After`, so refused clients do not return in lockstep.
    #[arg(long, env = "RETRY_AFTER_JITTER_SECS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=60))]
    pub retry_after_jitter_secs: u32,

    /// Count every fetch toward its chat's rate for the hot-chat scheduler
    /// (turn off only to measure what counting costs).
    #[arg(long, env = "COUNT_FETCHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub count_fetches: bool,

    /// How often the fetch counts are flushed to Redis, in milliseconds.
    #[arg(long, env = "FETCH_COUNT_FLUSH_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=1000))]
    pub fetch_count_flush_ms: u64,

    #[command(flatten)]
    pub auth: AuthConfig,

    /// Serve `POST /api/dev/token`, which gives a token to whoever asks
    /// (development only; needs `--auth-hmac-key`).
    #[arg(long, env = "DEV_TOKENS", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_tokens: bool,

    /// Give development tokens to clients on any address, not only to
    /// loopback ones (never in production: anyone may then be anyone).
    #[arg(long, env = "DEV_TOKENS_FROM_ANYWHERE", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_tokens_from_anywhere: bool,

    /// Messages per second one user may post (burst: twice that); 0: no limit.
    #[arg(long, env = "USER_MESSAGES_PER_SEC", default_value_t = 5)]
    pub user_messages_per_sec: u32,

    /// Reaction changes per second one user may make (burst: twice that); 0: no limit.
    #[arg(long, env = "USER_REACTIONS_PER_SEC", default_value_t = 10)]
    pub user_reactions_per_sec: u32,

    /// Folder of the built web UI, served at `/` (when it exists).
    #[arg(long, env = "WEB_DIR", default_value = "web/dist")]
    pub web_dir: std::path::PathBuf,

    /// Base URL of publish-server as browsers reach it, told to the web UI.
    #[arg(
        long,
        env = "PUBLIC_STREAM_URL",
        default_value = chat_core::config::defaults::PUBLIC_STREAM_URL
    )]
    pub public_stream_url: String,

    /// How long shutdown waits for unacknowledged writes, in milliseconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_timeout_ms: u64,
}

/// Why the server could not start.
pub type Error = chat_core::serve::StartError;

/// A chat-server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: http::AppState,
    config: Config,
    /// The Redis of fetch counters, hot-chat flags and throttle state.
    hot_redis: Arc<chat_core::redis_conn::RedisConn>,
}

impl Server {
    /// Binds the listen address (port 0 picks a free port) and prepares the
    /// Kafka producer and the Redis connection. Neither Kafka nor Redis needs
    /// to be up: requests that need them answer 503 until they are.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let listener = chat_core::serve::bind(config.listen).await?;
        let producer = producer::EventProducer::new(&config.kafka)?;
        let redis = Arc::new(chat_core::redis_conn::RedisConn::new(&config.redis)?);
        let read_model = Arc::new(
            chat_core::read_model::ReadModel::new(
                config.redis.keys(),
                &config.kafka.topic,
                config.retention_messages,
                config.replay_events,
            )
            .with_max_emojis(config.max_emojis_per_message),
        );
        let delivery_timeout = config.kafka.delivery_timeout();
        let claim_wait = delivery_timeout + Duration::from_secs(2);
        let client_messages = client_messages::ClientMessages::new(
            config.redis.keys(),
            Duration::from_secs(config.client_message_id_window_secs),
        );
        let limits = http::Limits {
            max_body_bytes: config.max_body_bytes as usize,
            max_text_chars: config.max_text_chars as usize,
            body_timeout: Duration::from_millis(config.body_timeout_ms),
        };
        let auth = chat_core::auth::Auth::from_config(&config.auth)?;
        let hot_store = config.hot_store.redis(&config.redis);
        let hot_redis = Arc::new(chat_core::redis_conn::RedisConn::new(&hot_store)?);
        let hot = chat_core::hot::HotChats::new();
        let throttle = hot::Throttle::new(
            hot::ThrottleSettings {
                budget: config.hot_fetch_budget,
                burst: config.hot_fetch_burst,
                expected_instances: config.expected_instances,
                retry_jitter_secs: config.retry_after_jitter_secs,
                client_rate: config.hot_client_rate,
                client_burst: config.hot_client_burst,
            },
            hot_redis.clone(),
            hot_store.keys(),
            hot.clone(),
            hot_store.timeout(),
        );
        let snapshots = (config.hot_snapshot_ms > 0).then(|| {
            snapshot::Snapshots::new(
                Duration::from_millis(config.hot_snapshot_ms),
                http::MAX_FETCH_LIMIT,
                read_model.clone(),
                redis.clone(),
            )
        });
        let state = http::AppState::new(http::Inner {
            producer,
            redis,
            read_model,
            client_messages,
            limits,
            metrics: chat_core::metrics::handle(),
            claim_wait,
            reaction_wait: Duration::from_millis(config.reaction_wait_ms),
            count_fetches: config.count_fetches,
            web_dir: config.web_dir.clone(),
            stream_url: config.public_stream_url.clone(),
            auth,
            dev_tokens: config.dev_tokens,
            dev_tokens_from_anywhere: config.dev_tokens_from_anywhere,
            trusted_proxies: config.trusted_proxies.clone().into(),
            // Without a projector here, there is nothing to wait for.
            projector_settled: Arc::new(std::sync::atomic::AtomicBool::new(!config.projector)),
            write_limits: limits::WriteLimits::new(
                config.user_messages_per_sec,
                config.user_reactions_per_sec,
            ),
            fetch_counter: Arc::default(),
            hot,
            throttle,
            snapshots,
        });
        Ok(Self {
            listener,
            state,
            config,
            hot_redis,
        })
    }

    /// Development tokens let anyone be anyone: say so loudly.
    fn warn_of_dev_tokens(&self) {
        if !self.config.dev_tokens {
            return;
        }
        if self.config.auth.auth_hmac_key.is_none() {
            warn!("--dev-tokens is set but has no effect: it needs --auth-hmac-key");
            return;
        }
        let whom = if self.config.dev_tokens_from_anywhere {
            "ANY client on ANY address"
        } else {
            "any client on a loopback address"
        };
        warn!(
            "DEVELOPMENT TOKENS ARE ON: POST /api/dev/token signs a token for any user to {whom}; \
             anyone who reaches it may act as anyone. Never run this in production \
             (unset DEV_TOKENS)."
        );
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` fires, then finishes requests in flight and
    /// waits (boundedly) for writes Kafka has not acknowledged yet.
    pub async fn run(self, shutdown: CancellationToken) {
        let addr = self.local_addr();
        if self.config.kafka.create_topic {
            self.ensure_topic(&shutdown).await;
        }
        let projector = self.config.projector.then(|| {
            tokio::spawn(projector::run(
                self.config.kafka.clone(),
                self.config.projector_group.clone(),
                self.state.read_model().clone(),
                self.state.redis().clone(),
                self.state.projector_settled().clone(),
                shutdown.clone(),
            ))
        });
        let hot_store = self.config.hot_store.redis(&self.config.redis);
        let hot_tasks = [
            tokio::spawn(chat_core::hot::watch(
                self.state.hot().clone(),
                hot_store.clone(),
                Duration::from_secs(1),
                shutdown.clone(),
            )),
            tokio::spawn(self.state.fetch_counter().clone().flush_loop(
                self.hot_redis.clone(),
                hot_store.keys(),
                self.state.hot().clone(),
                Duration::from_millis(self.config.fetch_count_flush_ms),
                shutdown.clone(),
            )),
            tokio::spawn(prune_local_limits(self.state.clone(), shutdown.clone())),
        ];
        info!(%addr, brokers = %self.config.kafka.brokers, topic = %self.config.kafka.topic, "chat-server listening");
        self.warn_of_dev_tokens();
        let app = http::app(self.state.clone());
        let limits = chat_core::serve::Limits {
            max_connections: self.config.max_connections as usize,
            write_timeout: Duration::from_millis(self.config.write_timeout_ms),
        };
        chat_core::serve::serve(self.listener, app, limits, shutdown.clone()).await;
        self.state
            .producer()
            .flush(Duration::from_millis(self.config.shutdown_timeout_ms))
            .await;
        if let Some(projector) = projector {
            match projector.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%error, "the projector could not start"),
                Err(error) => warn!(%error, "the projector failed"),
            }
        }
        for task in hot_tasks {
            let _ = task.await;
        }
        info!("chat-server stopped");
    }

    /// Creates the topic now if Kafka answers within 3 s; otherwise keeps
    /// trying in the background while the server runs.
    async fn ensure_topic(&self, shutdown: &CancellationToken) {
        let first =
            tokio::time::timeout(Duration::from_secs(3), self.state.producer().ensure_topic());
        if matches!(first.await, Ok(Ok(()))) {
            return;
        }
        warn!(topic = %self.config.kafka.topic, "cannot create the topic yet; retrying in the background");
        let state = self.state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                if state.producer().ensure_topic().await.is_ok() {
                    return;
                }
            }
        });
    }
}

/// Drops the local limiters' state of chats and clients back to a full
/// burst, and the snapshots of chats no longer hot, so their memory follows
/// the chats and clients recently throttled.
async fn prune_local_limits(state: http::AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        state.throttle().prune_local();
        state.write_limits().prune();
        if let Some(snapshots) = state.snapshots() {
            snapshots.retain(|chat| state.hot().is_hot(chat));
        }
    }
}
