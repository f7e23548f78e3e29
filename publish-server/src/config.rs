//! Everything publish-server can be told: flags with environment
//! variables and defaults.

use std::net::SocketAddr;
use std::time::Duration;

use chat_core::auth::AuthConfig;
use chat_core::config::{KafkaConfig, RedisConfig};
use chat_core::hot::HotStoreConfig;

/// Everything publish-server can be told.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "publish-server",
    version,
    about = "Streams chat events over Server-Sent Events",
    // Kafka settings of the producer side and of the projector's group
    // (publish-server joins no group), meaningless here.
    mut_arg("delivery_timeout_ms", |a| a.hide(true)),
    mut_arg("message_timeout_ms", |a| a.hide(true)),
    mut_arg("linger_ms", |a| a.hide(true)),
    mut_arg("create_topic", |a| a.hide(true)),
    mut_arg("topic_partitions", |a| a.hide(true)),
    mut_arg("topic_replication", |a| a.hide(true)),
    mut_arg("group_protocol", |a| a.hide(true))
)]
pub struct Config {
    /// Address the SSE API listens on.
    #[arg(long, env = "PUBLISH_SERVER_LISTEN", default_value = chat_core::config::defaults::PUBLISH_SERVER_LISTEN)]
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

    /// Most open streams from one client address (an IPv6 client: its
    /// /64); one more answers 429. 0: no limit.
    #[arg(long, env = "MAX_STREAMS_PER_ADDRESS", default_value_t = 256)]
    pub max_streams_per_address: usize,

    /// Proxies (addresses or networks, comma-separated) whose
    /// `X-Forwarded-For` names the client, for the per-address limit; from
    /// any other peer the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<chat_core::client_ip::Network>,

    /// Origins allowed to open streams from a browser (CORS), comma-separated.
    #[arg(
        long,
        env = "CORS_ORIGINS",
        default_value = chat_core::config::defaults::CORS_ORIGINS,
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Most chats one stream of `/api/events` may follow; more is a 400.
    #[arg(long, env = "MAX_CHATS_PER_STREAM", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_chats_per_stream: u64,

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

    /// Bytes of recent events kept in memory per chat (the oldest go
    /// first), whatever `--hub-buffer` allows.
    #[arg(long, env = "HUB_BUFFER_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 40))]
    pub hub_buffer_bytes: u64,

    /// Bytes of recent events kept in memory over all chats together; past
    /// it, the chat that grows gives back its oldest events.
    #[arg(long, env = "HUB_BUFFER_TOTAL_BYTES", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 50))]
    pub hub_buffer_total_bytes: u64,

    /// Most events replayed from Redis to a reconnecting client; a client
    /// further behind gets `reset`.
    #[arg(long, env = "REPLAY_MAX", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub replay_max: u32,

    /// Most bytes of events replayed from Redis to a reconnecting client; a
    /// client further behind gets `reset`.
    #[arg(long, env = "REPLAY_MAX_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 40))]
    pub replay_max_bytes: u64,

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

impl Config {
    /// How long an idle stream waits between heartbeat comments.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// How long a client may take no data before it is disconnected.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    /// How long a resume waits for the replay log to reach its cursor.
    pub fn replay_wait(&self) -> Duration {
        Duration::from_millis(self.replay_wait_ms)
    }
}
