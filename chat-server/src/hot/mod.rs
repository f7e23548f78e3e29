//! Hot chats in chat-server, behind one handle: [`Hot`] counts every fetch
//! toward its chat's hotness (`count`), keeps the flags the scheduler
//! announces, throttles a hot chat's fetches (`throttle`) and answers them
//! from the chat's shared snapshot (`snapshot`). Its settings are one clap
//! group, [`HotConfig`].

use std::sync::Arc;
use std::time::Duration;

use chat_core::config::RedisConfig;
use chat_core::hot::{HotChats, HotStoreConfig};
use chat_core::read_model::ReadModel;
use chat_core::redis_conn::RedisConn;
use chat_core::validate::ChatId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod count;
mod snapshot;
mod throttle;

pub(crate) use count::{Client, FetchCounter};
pub(crate) use snapshot::Snapshots;
pub use throttle::ThrottleConfig;
pub(crate) use throttle::{Decision, Throttle};

/// How often the flags are read again whole, besides the announcements.
const FLAG_RESYNC: Duration = Duration::from_secs(1);

/// Everything chat-server can be told about hot chats.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Hot chats")]
pub struct HotConfig {
    #[command(flatten)]
    pub store: HotStoreConfig,

    #[command(flatten)]
    pub throttle: ThrottleConfig,

    /// How long a hot chat's shared snapshot (its latest page) answers
    /// fetches before it is read again, in milliseconds; 0: no snapshot,
    /// every fetch of a hot chat reads Redis through the chat's budget.
    #[arg(long = "hot-snapshot-ms", env = "HOT_SNAPSHOT_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub snapshot_ms: u64,

    /// Count every fetch toward its chat's rate for the hot-chat scheduler
    /// (turn off only to measure what counting costs).
    #[arg(long, env = "COUNT_FETCHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub count_fetches: bool,

    /// How often the fetch counts are flushed to Redis, in milliseconds.
    #[arg(long, env = "FETCH_COUNT_FLUSH_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(10..=1000))]
    pub fetch_count_flush_ms: u64,
}

/// A chat-server's hot chats: their flags, the fetch counts, the throttle
/// and the snapshots.
#[derive(Debug)]
pub(crate) struct Hot {
    chats: Arc<HotChats>,
    /// `None`: fetches are not counted (to measure what counting costs).
    counter: Option<Arc<FetchCounter>>,
    throttle: Throttle,
    /// `None`: no snapshots; every hot fetch reads Redis.
    snapshots: Option<Snapshots>,
    /// The Redis of counters, flags and throttle state.
    store: RedisConfig,
    store_conn: Arc<RedisConn>,
    flush_every: Duration,
}

impl Hot {
    /// The flags of the hot chats.
    pub(crate) fn chats(&self) -> &Arc<HotChats> {
        &self.chats
    }

    /// The hot chats of `config`, their store derived from `main_redis`;
    /// snapshots of `max_page` messages read through `read_model` and
    /// `redis`. Connects to nothing yet.
    pub(crate) fn new(
        config: &HotConfig,
        main_redis: &RedisConfig,
        read_model: Arc<ReadModel>,
        redis: Arc<RedisConn>,
        max_page: u32,
    ) -> redis::RedisResult<Self> {
        let store = config.store.redis(main_redis);
        let store_conn = Arc::new(RedisConn::new(&store)?);
        let chats = HotChats::new();
        let throttle = Throttle::new(
            config.throttle.clone(),
            store_conn.clone(),
            store.keys(),
            chats.clone(),
            store.timeout(),
        );
        let snapshots = (config.snapshot_ms > 0).then(|| {
            Snapshots::new(
                Duration::from_millis(config.snapshot_ms),
                max_page,
                read_model,
                redis,
            )
        });
        Ok(Self {
            chats,
            counter: config.count_fetches.then(Arc::default),
            throttle,
            snapshots,
            store,
            store_conn,
            flush_every: Duration::from_millis(config.fetch_count_flush_ms),
        })
    }

    /// Counts `client`'s fetch of `chat` toward the chat's hotness.
    pub(crate) fn count(&self, chat: &ChatId, client: &Client) {
        if let Some(counter) = &self.counter {
            counter.count(chat, client);
        }
    }

    /// Whether `chat` is hot now.
    pub(crate) fn is_hot(&self, chat: &ChatId) -> bool {
        self.chats.is_hot(chat)
    }

    pub(crate) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub(crate) fn snapshots(&self) -> Option<&Snapshots> {
        self.snapshots.as_ref()
    }

    /// Starts following the scheduler's flags and flushing the fetch
    /// counts, until `shutdown` (the counts are flushed once more then).
    pub(crate) fn spawn(&self, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(chat_core::hot::watch(
            self.chats.clone(),
            self.store.clone(),
            FLAG_RESYNC,
            shutdown.clone(),
        ))];
        if let Some(counter) = &self.counter {
            tasks.push(tokio::spawn(counter.clone().flush_loop(
                self.store_conn.clone(),
                self.store.keys(),
                self.chats.clone(),
                self.flush_every,
                shutdown.clone(),
            )));
        }
        tasks
    }

    /// Forgets the throttle state of chats and clients back to a full
    /// burst, and the snapshots of chats no longer hot.
    pub(crate) fn prune(&self) {
        self.throttle.prune_local();
        if let Some(snapshots) = &self.snapshots {
            snapshots.retain(|chat| self.chats.is_hot(chat));
        }
    }
}
