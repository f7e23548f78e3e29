//! chat-server: the HTTP API that writes chat messages and reactions to Kafka.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod client_messages;
mod config;
mod hot;
mod http;
mod limits;
mod producer;
mod projector;
mod reaction_changes;
pub mod token;

pub use config::{Config, ProjectorConfig, RequestsConfig, WebConfig, WritesConfig};
pub use hot::{HotConfig, ThrottleConfig};

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

/// Why the server could not start.
pub type Error = chat_core::serve::StartError;

/// A chat-server bound to its address, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: http::AppState,
    config: Config,
}

impl Server {
    /// Binds the listen address (port 0 picks a free port) and prepares the
    /// Kafka producer and the Redis connection. Neither Kafka nor Redis needs
    /// to be up: requests that need them answer 503 until they are.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let listener = chat_core::serve::bind(config.listen).await?;
        let producer = producer::EventProducer::new(&config.kafka)?;
        let redis = Arc::new(chat_core::redis_conn::RedisConn::new(&config.redis)?);
        let retention = chat_core::read_model::Retention {
            messages: config.projector.retention_messages,
            replay_events: config.projector.replay_events,
        };
        let read_model = Arc::new(
            chat_core::read_model::ReadModel::new(
                config.redis.keys(),
                &config.kafka.topic,
                retention,
            )
            .with_max_emojis(config.writes.max_emojis_per_message),
        );
        let claim_wait = config.kafka.delivery_timeout() + Duration::from_secs(2);
        let client_messages = client_messages::ClientMessages::new(
            config.redis.keys(),
            config.writes.client_message_id_window(),
        );
        // A write may still reach the log until librdkafka gives it up.
        let reaction_changes = reaction_changes::ReactionChanges::new(
            config.redis.keys(),
            config.writes.max_emojis_per_message,
            config.kafka.message_timeout() + Duration::from_secs(2),
        );
        let limits = http::Limits {
            max_body_bytes: config.requests.max_body_bytes as usize,
            max_text_chars: config.requests.max_text_chars as usize,
            body_timeout: config.requests.body_timeout(),
        };
        let auth = chat_core::auth::Auth::from_config(&config.auth)?;
        let hot = hot::Hot::new(
            &config.hot,
            &config.redis,
            read_model.clone(),
            redis.clone(),
            http::MAX_FETCH_LIMIT,
        )?;
        let state = http::AppState::new(http::Inner {
            producer,
            redis,
            read_model,
            client_messages,
            reaction_changes,
            limits,
            metrics: chat_core::metrics::handle(),
            claim_wait,
            reaction_wait: config.writes.reaction_wait(),
            web_dir: config.web.web_dir.clone(),
            stream_url: config.web.public_stream_url.clone(),
            auth,
            dev_tokens: config.web.dev_tokens,
            dev_tokens_from_anywhere: config.web.dev_tokens_from_anywhere,
            trusted_proxies: config.requests.trusted_proxies.clone().into(),
            // Without a projector here, there is nothing to wait for.
            projector_settled: Arc::new(std::sync::atomic::AtomicBool::new(!config.projector.run)),
            write_limits: limits::WriteLimits::new(
                config.writes.user_messages_per_sec,
                config.writes.user_reactions_per_sec,
            ),
            hot,
        });
        Ok(Self {
            listener,
            state,
            config,
        })
    }

    /// Development tokens let anyone be anyone: say so loudly.
    fn warn_of_dev_tokens(&self) {
        if !self.config.web.dev_tokens {
            return;
        }
        if self.config.auth.auth_hmac_key.is_none() {
            warn!("--dev-tokens is set but has no effect: it needs --auth-hmac-key");
            return;
        }
        let whom = if self.config.web.dev_tokens_from_anywhere {
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
    /// The hot chats this server knows of: the flags it resyncs every
    /// second and hears announced.
    pub fn hot_chats(&self) -> std::sync::Arc<chat_core::hot::HotChats> {
        self.state.hot.chats().clone()
    }

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
        let projector = self.config.projector.run.then(|| {
            tokio::spawn(projector::run(
                self.config.kafka.clone(),
                self.config.projector.group.clone(),
                self.state.read_model.clone(),
                self.state.redis.clone(),
                self.state.projector_settled.clone(),
                shutdown.clone(),
            ))
        });
        let mut background = self.state.hot.spawn(&shutdown);
        background.push(tokio::spawn(prune_local_limits(
            self.state.clone(),
            shutdown.clone(),
        )));
        info!(%addr, brokers = %self.config.kafka.brokers, topic = %self.config.kafka.topic, "chat-server listening");
        self.warn_of_dev_tokens();
        let app = http::app(self.state.clone());
        let limits = chat_core::serve::Limits {
            max_connections: self.config.requests.max_connections as usize,
            write_timeout: self.config.requests.write_timeout(),
        };
        chat_core::serve::serve(self.listener, app, limits, shutdown.clone()).await;
        self.state
            .producer
            .flush(self.config.shutdown_timeout())
            .await;
        if let Some(projector) = projector {
            match projector.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%error, "the projector could not start"),
                Err(error) => warn!(%error, "the projector failed"),
            }
        }
        for task in background {
            let _ = task.await;
        }
        info!("chat-server stopped");
    }

    /// Creates the topic now if Kafka answers within 3 s; otherwise keeps
    /// trying in the background while the server runs.
    async fn ensure_topic(&self, shutdown: &CancellationToken) {
        let first =
            tokio::time::timeout(Duration::from_secs(3), self.state.producer.ensure_topic());
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
                if state.producer.ensure_topic().await.is_ok() {
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
        state.hot.prune();
        state.write_limits.prune();
    }
}
