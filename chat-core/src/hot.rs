//! Hot chats as every server sees them: the scheduler's `hotchat` flags,
//! learned from its pub/sub announcements and resynced from Redis every
//! second, so no request reads Redis to know whether its chat is hot.
//!
//! The flags live in one sorted set (chat id scored by the flag's expiry,
//! Unix milliseconds): a flag the scheduler stops renewing expires by
//! itself, and a missed announcement or a restart heals at the next resync.
//! While the hot-chat Redis is unreachable, the chats last known hot stay
//! hot here (their expiry is not applied), so a hot chat is never left
//! unthrottled because its store is down.
//!
//! The scheduler renews a flag every second without announcing it, and
//! clears it, announced, at its first tick after the expiry. So a server
//! honours a flag for [`LAPSE_GRACE_MS`] past its expiry: a renewal that
//! comes late (a late tick, a late resync) never lets a hot chat lapse for
//! a moment, while a scheduler that is gone still lets it lapse.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::RedisConfig;
use crate::names::Keys;
use crate::redis_conn::RedisConn;
use crate::validate::ChatId;

/// Where the hot-chat state (fetch counters, flags, throttle) is kept.
#[derive(Debug, Clone, clap::Args)]
pub struct HotStoreConfig {
    /// Redis holding fetch counters, hot-chat flags and throttle state
    /// (default: the Redis of `--redis-url`).
    #[arg(long = "hot-redis-url", env = "HOT_REDIS_URL")]
    pub hot_redis_url: Option<String>,

    /// How long one command to the hot-chat Redis may take, in
    /// milliseconds; past it the server falls back to local throttling.
    #[arg(
        long = "hot-redis-timeout-ms",
        env = "HOT_REDIS_TIMEOUT_MS",
        default_value_t = 250,
        value_parser = clap::value_parser!(u64).range(10..=60_000)
    )]
    pub hot_redis_timeout_ms: u64,
}

impl HotStoreConfig {
    /// The Redis settings of the hot-chat store: its own URL and timeout,
    /// the key prefix of `main`.
    pub fn redis(&self, main: &RedisConfig) -> RedisConfig {
        RedisConfig {
            url: self
                .hot_redis_url
                .clone()
                .unwrap_or_else(|| main.url.clone()),
            // A hot store of its own is one Redis; else the main one's cluster.
            cluster_nodes: if self.hot_redis_url.is_some() {
                Vec::new()
            } else {
                main.cluster_nodes.clone()
            },
            key_prefix: main.key_prefix.clone(),
            timeout_ms: self.hot_redis_timeout_ms,
        }
    }
}

/// How long past its expiry a server still honours a flag: a tick and a
/// resync may each come a second late under load.
pub const LAPSE_GRACE_MS: i64 = 2_000;

/// A flag change, as the scheduler announces it on the changes channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotChange {
    pub chat: ChatId,
    pub hot: bool,
    /// When the flag expires unless renewed (Unix milliseconds).
    pub until: i64,
    /// The wall-clock second whose fetches crossed the threshold.
    pub second: i64,
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The hot chats as this process knows them.
#[derive(Debug, Default)]
pub struct HotChats {
    flags: RwLock<Flags>,
    /// The hot-chat Redis answered the last resync.
    store_up: AtomicBool,
}

#[derive(Debug, Default)]
struct Flags {
    /// Chat id to its flag's expiry (Unix milliseconds).
    until: HashMap<String, i64>,
    /// Announcements applied so far.
    announced: u64,
    /// The chats announced since the resync in flight began, each with the
    /// number of its last announcement: that resync's read may be older
    /// than the announcement, and must not undo it.
    changed: HashMap<String, u64>,
}

/// Most chats remembered as announced between two resyncs; past it, an
/// announcement may be undone by a resync's older read until the next one.
const MAX_CHANGED: usize = 10_000;

impl HotChats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether `chat` is hot: its flag has not expired, or the store is
    /// unreachable and it was hot when last seen.
    pub fn is_hot(&self, chat: &ChatId) -> bool {
        self.is_hot_at(chat.as_str(), now_millis())
    }

    fn is_hot_at(&self, chat: &str, now: i64) -> bool {
        let flags = self.flags.read().unwrap_or_else(|e| e.into_inner());
        flags
            .until
            .get(chat)
            .is_some_and(|&until| until.saturating_add(LAPSE_GRACE_MS) > now || !self.store_up())
    }

    /// Whether the hot-chat Redis answered the last resync.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Acquire)
    }

    /// Records that the hot-chat Redis failed (or answered) a command.
    pub fn set_store_up(&self, up: bool) {
        let was = self.store_up.swap(up, Ordering::AcqRel);
        if was != up {
            if up {
                info!("hot-chat Redis reachable: cluster-wide throttling");
            } else {
                warn!("hot-chat Redis unreachable: chats last known hot are throttled locally");
            }
        }
        metrics::gauge!("hot_store_up").set(if up { 1.0 } else { 0.0 });
    }

    /// Applies an announcement; answers whether the chat just became hot.
    pub fn apply(&self, change: &HotChange) -> bool {
        let mut flags = self.flags.write().unwrap_or_else(|e| e.into_inner());
        flags.announced += 1;
        let number = flags.announced;
        let chat = change.chat.as_str();
        if flags.changed.len() < MAX_CHANGED || flags.changed.contains_key(chat) {
            flags.changed.insert(chat.to_owned(), number);
        }
        if change.hot {
            match flags.until.get_mut(chat) {
                Some(until) => {
                    *until = (*until).max(change.until);
                    false
                }
                None => {
                    flags.until.insert(chat.to_owned(), change.until);
                    true
                }
            }
        } else {
            flags.until.remove(chat);
            false
        }
    }

    /// How many announcements were applied so far: taken before a resync
    /// reads Redis, and given back to [`Self::replace`].
    fn announced(&self) -> u64 {
        self.flags
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .announced
    }

    /// Replaces every flag with `current`, what Redis held when read, once
    /// `since` announcements had been applied; a chat announced after that
    /// keeps what its announcement said (and the later expiry of the two).
    fn replace(&self, mut current: HashMap<String, i64>, since: u64) {
        let mut flags = self.flags.write().unwrap_or_else(|e| e.into_inner());
        let flags = &mut *flags;
        flags.changed.retain(|_, number| *number > since);
        for chat in flags.changed.keys() {
            match flags.until.get(chat) {
                Some(&until) => {
                    let read = current.entry(chat.clone()).or_insert(until);
                    *read = (*read).max(until);
                }
                None => {
                    current.remove(chat);
                }
            }
        }
        let count = current.len();
        flags.until = current;
        metrics::gauge!("hot_chats").set(count as f64);
    }
}

/// Reads every flag that has not expired by `now`, in one round trip.
pub async fn read_flags(
    redis: &RedisConn,
    keys: &Keys,
    now: i64,
) -> redis::RedisResult<HashMap<String, i64>> {
    let mut conn = redis.get().await?;
    let flat: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
        .arg(keys.hot_chats())
        .arg(format!("({now}"))
        .arg("+inf")
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    Ok(flat
        .into_iter()
        .map(|(chat, until)| (chat, until as i64))
        .collect())
}

/// Keeps `hot` up to date until `shutdown` fires: listens to the
/// scheduler's announcements and resyncs every `resync`.
pub async fn watch(
    hot: Arc<HotChats>,
    store: RedisConfig,
    resync: Duration,
    shutdown: CancellationToken,
) {
    let conn = match RedisConn::new(&store) {
        Ok(conn) => conn,
        Err(error) => {
            warn!(%error, "invalid hot-chat Redis URL; no chat will be hot");
            return;
        }
    };
    let keys = store.keys();
    tokio::join!(
        resync_loop(&hot, &conn, &keys, resync, &shutdown),
        listen(&hot, &store, &keys, &shutdown),
    );
}

async fn resync_loop(
    hot: &HotChats,
    conn: &RedisConn,
    keys: &Keys,
    every: Duration,
    shutdown: &CancellationToken,
) {
    let mut ticks = crate::shutdown::Ticks::every(every, shutdown);
    while ticks.next().await {
        let since = hot.announced();
        match read_flags(conn, keys, now_millis() - LAPSE_GRACE_MS).await {
            Ok(flags) => {
                hot.replace(flags, since);
                hot.set_store_up(true);
            }
            Err(error) => {
                if hot.store_up() {
                    warn!(%error, "cannot resync hot-chat flags");
                }
                hot.set_store_up(false);
            }
        }
    }
}

/// Subscribes to the changes channel, resubscribing after failures. On a
/// cluster it listens on one seed node, and on the next one after that
/// node failed: a cluster carries every PUBLISH to every node.
async fn listen(hot: &HotChats, store: &RedisConfig, keys: &Keys, shutdown: &CancellationToken) {
    let channel = keys.hot_changes_channel();
    let clients: Vec<redis::Client> = store
        .plain_urls()
        .iter()
        .filter_map(|url| redis::Client::open(url.as_str()).ok())
        .collect();
    if clients.is_empty() {
        return;
    }
    for attempt in 0.. {
        let client = &clients[attempt % clients.len()];
        let subscribed = async {
            let mut pubsub =
                tokio::time::timeout(store.timeout(), client.get_async_pubsub()).await??;
            pubsub.subscribe(&channel).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.cancelled() => return,
            subscribed = subscribed => subscribed,
        };
        match pubsub {
            Ok(pubsub) => {
                debug!(%channel, "listening for hot-chat changes");
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                    match serde_json::from_slice::<HotChange>(&payload) {
                        Ok(change) => {
                            if hot.apply(&change) {
                                let crossed_end = (change.second + 1) * 1000;
                                let delay = (now_millis() - crossed_end).max(0) as f64 / 1000.0;
                                metrics::histogram!("hotchat_flag_delay_seconds").record(delay);
                                info!(chat = %change.chat, until = change.until, "chat is hot");
                            } else if !change.hot {
                                info!(chat = %change.chat, "chat cooled down");
                            }
                        }
                        Err(error) => warn!(%error, "skipped a malformed hot-chat announcement"),
                    }
                }
            }
            Err(error) => debug!(%error, "cannot subscribe to hot-chat changes yet"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_expires_unless_the_store_is_down() {
        let hot = HotChats::default();
        hot.set_store_up(true);
        let change = HotChange {
            chat: "lobby".parse().expect("chat id"),
            hot: true,
            until: 10_000,
            second: 5,
        };
        assert!(hot.apply(&change), "first announcement makes it hot");
        assert!(!hot.apply(&change), "a renewal is not news");
        assert!(hot.is_hot_at("lobby", 9_999));
        assert!(
            hot.is_hot_at("lobby", 10_000 + LAPSE_GRACE_MS - 1),
            "a renewal may come late"
        );
        assert!(!hot.is_hot_at("lobby", 10_000 + LAPSE_GRACE_MS), "expired");
        assert!(!hot.is_hot_at("other", 0));
        hot.set_store_up(false);
        assert!(
            hot.is_hot_at("lobby", 20_000),
            "last known hot while the store is down"
        );
        hot.apply(&HotChange {
            hot: false,
            ..change
        });
        assert!(!hot.is_hot_at("lobby", 0));
    }

    fn announce(hot: &HotChats, chat: &str, on: bool, until: i64) -> bool {
        hot.apply(&HotChange {
            chat: chat.parse().expect("chat id"),
            hot: on,
            until,
            second: 0,
        })
    }

    #[test]
    fn a_resync_read_before_an_announcement_does_not_undo_it() {
        let hot = HotChats::default();
        hot.set_store_up(true);
        announce(&hot, "stage", true, 5_000);
        hot.replace(HashMap::from([("stage".into(), 5_000)]), hot.announced());

        // A resync reads Redis; meanwhile "crowd" turns hot and "stage"
        // cools down, announced before the read's answer is applied.
        let since = hot.announced();
        assert!(announce(&hot, "crowd", true, 9_000));
        announce(&hot, "stage", false, 6_000);
        hot.replace(HashMap::from([("stage".into(), 7_000)]), since);
        assert!(hot.is_hot_at("crowd", 8_000), "the new flag is kept");
        assert!(!hot.is_hot_at("stage", 0), "the clear is kept");

        // The next resync's read is newer than both: it decides.
        let since = hot.announced();
        hot.replace(HashMap::from([("stage".into(), 12_000)]), since);
        assert!(!hot.is_hot_at("crowd", 0));
        assert!(hot.is_hot_at("stage", 11_000));
    }

    #[test]
    fn a_resync_keeps_the_later_expiry_of_an_announcement_and_its_read() {
        let hot = HotChats::default();
        hot.set_store_up(true);
        let since = hot.announced();
        announce(&hot, "lobby", true, 9_000);
        hot.replace(HashMap::from([("lobby".into(), 4_000)]), since);
        assert!(hot.is_hot_at("lobby", 8_000));
        let since = hot.announced();
        hot.replace(HashMap::from([("lobby".into(), 12_000)]), since);
        assert!(hot.is_hot_at("lobby", 11_000), "a renewal read from Redis");
    }
}
