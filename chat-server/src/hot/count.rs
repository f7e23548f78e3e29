//! Fetch counting: every fetch is counted in memory, once per client and
//! second, and the counts flushed to Redis in batches, where the scheduler
//! reads them to decide which chats are hot.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher as _, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_core::hot::{HotChats, now_millis};
use chat_core::names::Keys;
use chat_core::redis_conn::RedisConn;
use chat_core::validate::{ChatId, UserId};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Most distinct (second, chat, client) entries held between two flushes;
/// past it further fetches go uncounted (and are counted as dropped).
const MAX_PENDING: usize = 100_000;

/// How long the fetch counters stay in Redis, in seconds: the scheduler
/// reads each second once, right after it ends.
const COUNTER_TTL_SECS: i64 = 60;

/// Who a fetch comes from, for hotness and the per-client budget: the
/// token's user with authentication on; with it off the `userId` the
/// request names, else the client's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    User(UserId),
    Address(IpAddr),
    /// Neither a user nor an address (a request not from a socket).
    Unknown,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(user) => write!(f, "user {user}"),
            Self::Address(address) => write!(f, "address {address}"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// Counts the distinct clients fetching each chat per second, and
/// flushes the counts in batches: a chat's hotness is how many clients
/// read it, so one client alone cannot make it hot.
#[derive(Debug, Default)]
pub(crate) struct FetchCounter {
    /// Unix second to chat id to the clients (hashed) not flushed yet.
    pending: Mutex<HashMap<i64, HashMap<String, HashSet<u64>>>>,
    /// Number of entries in `pending`.
    held: AtomicU64,
    hasher: RandomState,
}

impl FetchCounter {
    /// Counts `client`'s fetch of `chat` in the current second, once per
    /// second. Never waits for Redis.
    pub(crate) fn count(&self, chat: &ChatId, client: &Client) {
        let second = now_millis().div_euclid(1000);
        let who = self.hasher.hash_one(client);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(clients) = pending
            .get_mut(&second)
            .and_then(|chats| chats.get_mut(chat.as_str()))
        {
            if clients.contains(&who) {
                return;
            }
            if self.held.load(Ordering::Relaxed) < MAX_PENDING as u64 {
                clients.insert(who);
                self.held.fetch_add(1, Ordering::Relaxed);
                return;
            }
        } else if self.held.load(Ordering::Relaxed) < MAX_PENDING as u64 {
            pending
                .entry(second)
                .or_default()
                .insert(chat.as_str().to_owned(), HashSet::from([who]));
            self.held.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(pending);
        metrics::counter!(chat_core::metrics::name::FETCH_COUNTS_DROPPED_TOTAL).increment(1);
    }

    /// The counts not flushed yet: per second, chat id to distinct clients.
    fn take(&self) -> HashMap<i64, HashMap<String, u64>> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.held.store(0, Ordering::Relaxed);
        std::mem::take(&mut *pending)
            .into_iter()
            .map(|(second, chats)| {
                let counts = chats
                    .into_iter()
                    .map(|(chat, clients)| (chat, clients.len() as u64))
                    .collect();
                (second, counts)
            })
            .collect()
    }

    /// Flushes every `every` until `shutdown`, then once more.
    pub(crate) async fn flush_loop(
        self: Arc<Self>,
        redis: Arc<RedisConn>,
        keys: Keys,
        hot: Arc<HotChats>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticks = chat_core::shutdown::Ticks::every(every, &shutdown);
        loop {
            let more = ticks.next().await;
            self.flush(&redis, &keys, &hot).await;
            if !more {
                return;
            }
        }
    }

    /// Adds the pending counts to Redis, one pipeline per shard (one slot
    /// of a cluster each), sent together; when Redis cannot take them they
    /// are dropped, never retried into a pile.
    async fn flush(&self, redis: &RedisConn, keys: &Keys, hot: &HotChats) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        let total: u64 = batch.values().flat_map(HashMap::values).sum();
        if !hot.store_up() {
            metrics::counter!(chat_core::metrics::name::FETCH_COUNTS_DROPPED_TOTAL)
                .increment(total);
            return;
        }
        let mut pipes: HashMap<String, redis::Pipeline> = HashMap::new();
        for (second, chats) in &batch {
            for (chat, n) in chats {
                let key = keys.fetch_counts(*second, chat_core::names::fetch_count_shard(chat));
                pipes
                    .entry(key.clone())
                    .or_insert_with(redis::pipe)
                    .zincr(&key, chat, *n)
                    .ignore();
            }
        }
        let sent = async {
            let conn = redis.get().await?;
            let sends = pipes.into_iter().map(|(key, mut pipe)| {
                let mut conn = conn.clone();
                async move {
                    pipe.expire(&key, COUNTER_TTL_SECS).ignore();
                    pipe.query_async::<()>(&mut conn).await
                }
            });
            futures::future::try_join_all(sends).await.map(drop)
        };
        match sent.await {
            Ok(()) => metrics::counter!("fetch_counts_flushed_total").increment(total),
            Err(error) => {
                metrics::counter!(chat_core::metrics::name::FETCH_COUNTS_DROPPED_TOTAL)
                    .increment(total);
                warn!(%error, fetches = total, "cannot flush fetch counts; dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_second_and_chat() {
        let counter = FetchCounter::default();
        let lobby: ChatId = "lobby".parse().expect("chat");
        let ann = Client::User("ann".parse().expect("user"));
        for _ in 0..3 {
            counter.count(&lobby, &ann);
        }
        counter.count(&lobby, &Client::User("bob".parse().expect("user")));
        counter.count(&lobby, &Client::Address([127, 0, 0, 1].into()));
        let batch = counter.take();
        let counts: Vec<(&String, &u64)> = batch.values().flatten().collect();
        assert_eq!(
            counts.iter().map(|(_, n)| **n).sum::<u64>(),
            3,
            "three clients, whatever their fetches"
        );
        assert!(counts.iter().all(|(chat, _)| chat.as_str() == "lobby"));
        assert!(counter.take().is_empty(), "taken once");
    }
}
