//! Hot chats in chat-server: every fetch is counted in memory, once per
//! client and second, and the counts flushed to Redis in batches. A hot
//! chat's fetches pass a per-client budget kept by this instance; those the
//! chat's shared snapshot cannot answer also pass a cluster-wide budget
//! decided by one Lua script (GCRA), or, while that Redis is unreachable, a
//! local `governor` limiter at the budget's share of this instance.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher as _, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_core::hot::{HotChats, now_millis};
use chat_core::names::Keys;
use chat_core::redis_conn::RedisConn;
use chat_core::validate::{ChatId, UserId};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::Script;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Most distinct (second, chat, client) entries held between two flushes;
/// past it further fetches go uncounted (and are counted as dropped).
const MAX_PENDING: usize = 100_000;

/// Most (chat, client) pairs the per-client budget tracks at once; past it
/// (after a prune) a new pair is admitted untracked, as a client with a
/// fresh burst would be.
const MAX_TRACKED_CLIENTS: usize = 100_000;

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
        metrics::counter!("fetch_counts_dropped_total").increment(1);
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
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                () = shutdown.cancelled() => true,
                _ = ticks.tick() => false,
            };
            self.flush(&redis, &keys, &hot).await;
            if stop {
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
            metrics::counter!("fetch_counts_dropped_total").increment(total);
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
                metrics::counter!("fetch_counts_dropped_total").increment(total);
                warn!(%error, fetches = total, "cannot flush fetch counts; dropped");
            }
        }
    }
}

/// GCRA over a per-chat theoretical arrival time, on Redis's clock, in
/// microseconds. KEYS: the chat's throttle key. ARGV: emission interval
/// (1 s / budget), burst. Answers admitted (0/1), remaining burst,
/// microseconds until a retry can pass, microseconds until the burst is
/// whole again.
const GCRA: &str = include_str!("lua/gcra.lua");

type LocalLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// How a hot chat's fetches are limited.
#[derive(Debug, Clone)]
pub(crate) struct ThrottleSettings {
    /// Fetches per second per hot chat, over the whole cluster.
    pub budget: u32,
    /// Fetches a hot chat may take at once above the steady rate.
    pub burst: u32,
    /// chat-server instances sharing the budget, for the local fallback.
    pub expected_instances: u32,
    /// Up to this many seconds are added at random to `Retry-After`.
    pub retry_jitter_secs: u32,
    /// Fetches per second one client may make of one hot chat, on this
    /// instance.
    pub client_rate: u32,
    /// Fetches one client may make of one hot chat at once.
    pub client_burst: u32,
}

/// The throttle's answer for one fetch of a hot chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub admitted: bool,
    /// `RateLimit-Limit`: fetches per second.
    pub limit: u32,
    /// `RateLimit-Remaining`.
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds until the burst is whole again.
    pub reset_secs: u64,
    /// `Retry-After`, with jitter, when refused.
    pub retry_after_secs: u64,
    /// `redis` or `local` for the chat's cluster-wide budget, `instance`
    /// for a client's budget.
    pub mode: &'static str,
}

impl Decision {
    /// The `RateLimit-*` and `Retry-After` figures of this decision.
    pub(crate) fn rate(&self) -> chat_core::problem::RateLimit {
        chat_core::problem::RateLimit {
            limit: self.limit,
            remaining: self.remaining,
            reset_secs: self.reset_secs,
            retry_after_secs: self.retry_after_secs,
        }
    }
}

/// Decides hot chats' fetches.
pub(crate) struct Throttle {
    settings: ThrottleSettings,
    script: Script,
    redis: Arc<RedisConn>,
    keys: Keys,
    hot: Arc<HotChats>,
    timeout: Duration,
    local: LocalLimiter,
    /// Per (chat, client): the per-client budget.
    clients: LocalLimiter,
    /// Source of the `Retry-After` jitter.
    jitter: RandomState,
    draws: AtomicU64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    pub(crate) fn new(
        settings: ThrottleSettings,
        redis: Arc<RedisConn>,
        keys: Keys,
        hot: Arc<HotChats>,
        timeout: Duration,
    ) -> Self {
        let instances = settings.expected_instances.max(1);
        let per_instance = f64::from(settings.budget.max(1)) / f64::from(instances);
        let period = Duration::from_secs_f64(1.0 / per_instance);
        let burst = NonZeroU32::new((settings.burst / instances).max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let client_quota =
            Quota::per_second(NonZeroU32::new(settings.client_rate).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(settings.client_burst).unwrap_or(NonZeroU32::MIN));
        Self {
            settings,
            script: Script::new(GCRA),
            redis,
            keys,
            hot,
            timeout,
            local: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            clients: RateLimiter::keyed(client_quota)
                .with_middleware::<StateInformationMiddleware>(),
            jitter: RandomState::new(),
            draws: AtomicU64::new(0),
        }
    }

    /// Decides one fetch of the hot chat `chat`: in Redis while it answers,
    /// else locally. Never fails.
    pub(crate) async fn decide(&self, chat: &ChatId) -> Decision {
        if self.hot.store_up() {
            match tokio::time::timeout(self.timeout, self.in_redis(chat)).await {
                Ok(Ok(decision)) => return decision,
                Ok(Err(error)) => warn!(%error, "throttle store failed; throttling locally"),
                Err(_) => warn!("throttle store timed out; throttling locally"),
            }
            self.hot.set_store_up(false);
        }
        self.locally(chat)
    }

    async fn in_redis(&self, chat: &ChatId) -> redis::RedisResult<Decision> {
        let settings = &self.settings;
        let interval = 1_000_000 / u64::from(settings.budget.max(1));
        let mut conn = self.redis.get().await?;
        let (admitted, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .script
            .key(self.keys.throttle(chat))
            .arg(interval)
            .arg(settings.burst.max(1))
            .invoke_async(&mut conn)
            .await?;
        let admitted = admitted == 1;
        Ok(Decision {
            admitted,
            limit: settings.budget,
            remaining: remaining.max(0) as u64,
            reset_secs: micros_to_secs(reset_us),
            retry_after_secs: if admitted {
                0
            } else {
                self.retry_after(micros_to_secs(retry_us))
            },
            mode: "redis",
        })
    }

    /// Decides one fetch of the hot chat `chat` by `client` against the
    /// client's own budget on this instance. Never waits.
    pub(crate) fn client(&self, chat: &ChatId, client: &Client) -> Decision {
        if self.clients.len() >= MAX_TRACKED_CLIENTS {
            self.clients.retain_recent();
        }
        let key = format!("{chat}\u{1f}{client}");
        if self.clients.len() >= MAX_TRACKED_CLIENTS {
            metrics::counter!("hot_client_budget_full_total").increment(1);
            return Decision {
                admitted: true,
                limit: self.settings.client_rate,
                remaining: u64::from(self.settings.client_burst),
                reset_secs: 0,
                retry_after_secs: 0,
                mode: "instance",
            };
        }
        self.limited(&self.clients, key, self.settings.client_rate, "instance")
    }

    fn locally(&self, chat: &ChatId) -> Decision {
        let instances = self.settings.expected_instances.max(1);
        let limit = (self.settings.budget / instances).max(1);
        self.limited(&self.local, chat.as_str().to_owned(), limit, "local")
    }

    fn limited(
        &self,
        limiter: &LocalLimiter,
        key: String,
        limit: u32,
        mode: &'static str,
    ) -> Decision {
        match limiter.check_key(&key) {
            Ok(snapshot) => Decision {
                admitted: true,
                limit,
                remaining: u64::from(snapshot.remaining_burst_capacity()),
                reset_secs: 1,
                retry_after_secs: 0,
                mode,
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let secs = wait.as_micros().div_ceil(1_000_000) as u64;
                Decision {
                    admitted: false,
                    limit,
                    remaining: 0,
                    reset_secs: secs.max(1),
                    retry_after_secs: self.retry_after(secs),
                    mode,
                }
            }
        }
    }

    /// At least one second, plus up to `retry_jitter_secs` at random, so
    /// refused clients do not come back in lockstep.
    fn retry_after(&self, secs: u64) -> u64 {
        let draw = self
            .jitter
            .hash_one(self.draws.fetch_add(1, Ordering::Relaxed));
        let spread = u64::from(self.settings.retry_jitter_secs) + 1;
        secs.max(1) + draw % spread
    }

    /// Forgets local limiter state of chats and clients that are back to
    /// a full burst.
    pub(crate) fn prune_local(&self) {
        self.local.retain_recent();
        self.clients.retain_recent();
        self.clients.shrink_to_fit();
    }
}

fn micros_to_secs(micros: i64) -> u64 {
    (micros.max(0) as u64).div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(budget: u32, burst: u32, instances: u32) -> Throttle {
        let config = chat_core::config::RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            cluster_nodes: Vec::new(),
            key_prefix: "unit".into(),
            timeout_ms: 10,
        };
        Throttle::new(
            ThrottleSettings {
                budget,
                burst,
                expected_instances: instances,
                retry_jitter_secs: 2,
                client_rate: 5,
                client_burst: 10,
            },
            Arc::new(RedisConn::new(&config).expect("url")),
            config.keys(),
            HotChats::new(),
            Duration::from_millis(10),
        )
    }

    #[test]
    fn the_local_limiter_takes_its_share_of_the_burst_then_refuses() {
        let throttle = throttle(60, 30, 3);
        let chat: ChatId = "hot".parse().expect("chat");
        let admitted = (0..20)
            .map(|_| throttle.locally(&chat))
            .filter(|d| d.admitted)
            .count();
        assert_eq!(admitted, 10, "a third of the burst of 30");
        let refused = throttle.locally(&chat);
        assert!(!refused.admitted);
        assert_eq!(refused.limit, 20);
        assert!((1..=3).contains(&refused.retry_after_secs));
        let other: ChatId = "other".parse().expect("chat");
        assert!(throttle.locally(&other).admitted, "chats are limited apart");
    }

    #[test]
    fn a_client_over_its_budget_is_refused_and_no_one_else() {
        let throttle = throttle(1000, 1000, 1);
        let chat: ChatId = "hot".parse().expect("chat");
        let abuser = Client::User("abuser".parse().expect("user"));
        let admitted = (0..100)
            .filter(|_| throttle.client(&chat, &abuser).admitted)
            .count();
        assert_eq!(admitted, 10, "the burst of 10");
        let refused = throttle.client(&chat, &abuser);
        assert!(!refused.admitted);
        assert_eq!((refused.limit, refused.mode), (5, "instance"));
        assert!(refused.retry_after_secs >= 1);
        let member = Client::User("member".parse().expect("user"));
        assert!(throttle.client(&chat, &member).admitted);
        let elsewhere: ChatId = "other".parse().expect("chat");
        assert!(
            throttle.client(&elsewhere, &abuser).admitted,
            "budgets are per chat"
        );
    }

    #[test]
    fn retry_after_is_spread_over_the_jitter() {
        let throttle = throttle(10, 5, 1);
        let seen: std::collections::HashSet<u64> =
            (0..200).map(|_| throttle.retry_after(1)).collect();
        assert_eq!(seen, [1, 2, 3].into_iter().collect());
    }

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
