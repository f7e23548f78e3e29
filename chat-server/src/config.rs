//! chat-server's command line and environment, in blocks by concern:
//! requests, writes, the projector, hot chats, authentication and the web
//! UI. docs/configuration.md lists every flag (a test holds it equal).

use std::net::SocketAddr;
use std::time::Duration;

use chat_core::auth::AuthConfig;
use chat_core::config::{KafkaConfig, RedisConfig};

use crate::hot::HotConfig;

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

    #[command(flatten)]
    pub requests: RequestsConfig,

    #[command(flatten)]
    pub writes: WritesConfig,

    #[command(flatten)]
    pub projector: ProjectorConfig,

    #[command(flatten)]
    pub hot: HotConfig,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub web: WebConfig,

    /// How long shutdown waits for unacknowledged writes, in milliseconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_timeout_ms: u64,
}

impl Config {
    /// How long shutdown waits for unacknowledged writes.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

/// Bounds on connections and requests.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Requests")]
pub struct RequestsConfig {
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
}

impl RequestsConfig {
    /// How long a client may take no bytes of an answer.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// How long a client may take to send a request body.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

/// How posts and reactions are taken.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Writes")]
pub struct WritesConfig {
    /// How long a `clientMessageId` is remembered, in seconds: a retry within
    /// this window answers with the original message.
    #[arg(long, env = "CLIENT_MESSAGE_ID_WINDOW_SECS", default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..=30 * 24 * 3600))]
    pub client_message_id_window_secs: u64,

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

    /// Messages per second one user may post (burst: twice that); 0: no limit.
    #[arg(long, env = "USER_MESSAGES_PER_SEC", default_value_t = 5)]
    pub user_messages_per_sec: u32,

    /// Reaction changes per second one user may make (burst: twice that); 0: no limit.
    #[arg(long, env = "USER_REACTIONS_PER_SEC", default_value_t = 10)]
    pub user_reactions_per_sec: u32,
}

impl WritesConfig {
    /// How long a `clientMessageId` is remembered.
    pub fn client_message_id_window(&self) -> Duration {
        Duration::from_secs(self.client_message_id_window_secs)
    }

    /// How long a reaction waits for the projector to reach its message.
    pub fn reaction_wait(&self) -> Duration {
        Duration::from_millis(self.reaction_wait_ms)
    }
}

/// The projector, which folds the topic into the Redis read model.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Projector")]
pub struct ProjectorConfig {
    /// Run the projector, which applies the topic to the Redis read model
    /// (a Kafka consumer group: run it in as many instances as you like).
    #[arg(long = "projector", env = "PROJECTOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub run: bool,

    /// Kafka consumer group of the projector.
    #[arg(
        long = "projector-group",
        env = "PROJECTOR_GROUP",
        default_value = "chat-projector"
    )]
    pub group: String,

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
}

/// The web UI and development tokens.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Web UI")]
pub struct WebConfig {
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

    /// Serve `POST /api/dev/token`, which gives a token to whoever asks
    /// (development only; needs `--auth-hmac-key`).
    #[arg(long, env = "DEV_TOKENS", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_tokens: bool,

    /// Give development tokens to clients on any address, not only to
    /// loopback ones (never in production: anyone may then be anyone).
    #[arg(long, env = "DEV_TOKENS_FROM_ANYWHERE", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_tokens_from_anywhere: bool,
}
