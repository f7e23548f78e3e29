//! The throttle of hot chats' fetches: a per-client budget kept by this
//! instance, and, for fetches the chat's shared snapshot cannot answer, a
//! cluster-wide budget decided by one Lua script (GCRA), or, while that
//! Redis is unreachable, a local `governor` limiter at the budget's share of
//! this instance.

use std::hash::{BuildHasher as _, RandomState};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_core::hot::HotChats;
use chat_core::names::Keys;
use chat_core::redis_conn::RedisConn;
use chat_core::validate::ChatId;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use redis::Script;
use tracing::warn;

use super::Client;

/// Most (chat, client) pairs the per-client budget tracks at once; past it
/// (after a prune) a new pair is admitted untracked, as a client with a
/// fresh burst would be.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// GCRA over a per-chat theoretical arrival time, on Redis's clock, in
/// microseconds. KEYS: the chat's throttle key. ARGV: emission interval
/// (1 s / budget), burst. Answers admitted (0/1), remaining burst,
/// microseconds until a retry can pass, microseconds until the burst is
/// whole again.
const GCRA: &str = include_str!("../lua/gcra.lua");

type LocalLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// How a hot chat's fetches are limited.
#[derive(Debug, Clone, clap::Args)]
pub struct ThrottleConfig {
    /// Fetches per second a hot chat may take, over all chat-server
    /// instances together (the cluster-wide budget).
    #[arg(long = "hot-fetch-budget", env = "HOT_FETCH_BUDGET", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub fetch_budget: u32,

    /// Fetches a hot chat may take at once beyond its steady budget.
    #[arg(long = "hot-fetch-burst", env = "HOT_FETCH_BURST", default_value_t = 25,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub fetch_burst: u32,

    /// Fetches per second one client may make of one hot chat, on each
    /// instance (a client is the token's user, else the `userId` named,
    /// else the address).
    #[arg(long = "hot-client-rate", env = "HOT_CLIENT_RATE", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub client_rate: u32,

    /// Fetches one client may make of one hot chat at once beyond its rate.
    #[arg(long = "hot-client-burst", env = "HOT_CLIENT_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub client_burst: u32,

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
}

/// Which budget decided a fetch, and where it was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The chat's cluster-wide budget, kept in Redis.
    Redis,
    /// The chat's budget at this instance's share, while Redis is away.
    Local,
    /// A client's own budget on this instance.
    Instance,
}

impl Mode {
    /// The `mode` label of `hot_fetches_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
            Self::Instance => "instance",
        }
    }
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
    /// Which budget decided, and where.
    pub mode: Mode,
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
    settings: ThrottleConfig,
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
        settings: ThrottleConfig,
        redis: Arc<RedisConn>,
        keys: Keys,
        hot: Arc<HotChats>,
        timeout: Duration,
    ) -> Self {
        let instances = settings.expected_instances.max(1);
        let per_instance = f64::from(settings.fetch_budget.max(1)) / f64::from(instances);
        let period = Duration::from_secs_f64(1.0 / per_instance);
        let burst =
            NonZeroU32::new((settings.fetch_burst / instances).max(1)).unwrap_or(NonZeroU32::MIN);
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
        let interval = 1_000_000 / u64::from(settings.fetch_budget.max(1));
        let mut conn = self.redis.get().await?;
        let (admitted, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .script
            .key(self.keys.throttle(chat))
            .arg(interval)
            .arg(settings.fetch_burst.max(1))
            .invoke_async(&mut conn)
            .await?;
        let admitted = admitted == 1;
        Ok(Decision {
            admitted,
            limit: settings.fetch_budget,
            remaining: remaining.max(0) as u64,
            reset_secs: micros_to_secs(reset_us),
            retry_after_secs: if admitted {
                0
            } else {
                self.retry_after(micros_to_secs(retry_us))
            },
            mode: Mode::Redis,
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
                mode: Mode::Instance,
            };
        }
        self.limited(
            &self.clients,
            key,
            self.settings.client_rate,
            Mode::Instance,
        )
    }

    fn locally(&self, chat: &ChatId) -> Decision {
        let instances = self.settings.expected_instances.max(1);
        let limit = (self.settings.fetch_budget / instances).max(1);
        self.limited(&self.local, chat.as_str().to_owned(), limit, Mode::Local)
    }

    fn limited(&self, limiter: &LocalLimiter, key: String, limit: u32, mode: Mode) -> Decision {
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

    /// At least one second, plus up to `retry_after_jitter_secs` at random, so
    /// refused clients do not come back in lockstep.
    fn retry_after(&self, secs: u64) -> u64 {
        let draw = self
            .jitter
            .hash_one(self.draws.fetch_add(1, Ordering::Relaxed));
        let spread = u64::from(self.settings.retry_after_jitter_secs) + 1;
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
            ThrottleConfig {
                fetch_budget: budget,
                fetch_burst: burst,
                expected_instances: instances,
                retry_after_jitter_secs: 2,
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
        assert_eq!((refused.limit, refused.mode), (5, Mode::Instance));
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
}
