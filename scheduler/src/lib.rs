//! scheduler: once per second, reads the fetch counters of the second that
//! just ended and sets or clears the chats' `hotchat` flags. Several
//! replicas may run; one leads through a Redis lock with expiry, the others
//! stand by and take over within the lock's TTL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router, middleware};
use chat_core::config::RedisConfig;
use chat_core::hot::{HotStoreConfig, now_millis};
use chat_core::metrics::PrometheusHandle;
use chat_core::names::Keys;
use chat_core::problem::ApiError;
use chat_core::redis_conn::RedisConn;
use redis::Script;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod ticks;

pub use ticks::{Tick, next_tick};

/// Everything the scheduler can be told.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "scheduler",
    version,
    about = "Flags hot chats once per second from their fetch counters"
)]
pub struct Config {
    /// Address of the health and metrics endpoints.
    #[arg(long, env = "SCHEDULER_LISTEN", default_value = chat_core::config::defaults::SCHEDULER_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisConfig,

    #[command(flatten)]
    pub hot_store: HotStoreConfig,

    /// Clients fetching a chat in one second (each chat-server counts a
    /// client once), summed over every chat-server, at or over which the
    /// chat is flagged hot.
    #[arg(long, env = "HOT_THRESHOLD", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub hot_threshold: u64,

    /// Seconds a hot chat must stay under the threshold before its flag is
    /// cleared (the flag's TTL after the last second over it).
    #[arg(long, env = "COOL_DOWN", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub cool_down: u64,

    /// How long the leader lock lasts without renewal, in milliseconds: a
    /// standby takes over within this time after the leader dies.
    #[arg(long, env = "LEADER_LOCK_TTL_MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(300..=60_000))]
    pub leader_lock_ttl_ms: u64,

    /// How long after each wall-clock second the tick runs, in
    /// milliseconds, so the servers' last counter flush of that second
    /// (every `--fetch-count-flush-ms` of chat-server) has landed.
    #[arg(long, env = "TICK_OFFSET_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(0..=900))]
    pub tick_offset_ms: u64,

    /// This replica's name in the leader lock (default: host name, pid and
    /// a random suffix); it must differ between replicas.
    #[arg(long, env = "SCHEDULER_ID")]
    pub instance_id: Option<String>,
}

/// Why the scheduler could not start.
pub type Error = chat_core::serve::StartError;

/// Takes or renews the lock. KEYS: lock. ARGV: instance id, TTL ms.
/// Answers 1 when this instance holds the lock afterwards.
const LOCK: &str = include_str!("lua/lock.lua");

/// Gives the lock up if held. KEYS: lock. ARGV: instance id.
const UNLOCK: &str = include_str!("lua/unlock.lua");

/// One tick, only while this instance holds the lock. KEYS: lock, the
/// flags (one slot). ARGV: instance id, the second, the expiry a flag set
/// now gets, now (ms), the changes channel, then the chats at or over the
/// threshold in that second. Answers the chats that became hot, the chats
/// cleared, and how many are hot; or `{-1}` when another instance leads.
const TICK: &str = include_str!("lua/tick.lua");

/// The state behind an [`AppState`] (its fields are the scheduler's own).
#[derive(Debug)]
pub struct Inner {
    config: Config,
    instance: String,
    redis: RedisConn,
    keys: Keys,
    leader: AtomicBool,
    metrics: PrometheusHandle,
    lock: Script,
    unlock: Script,
    tick: Script,
}

/// What the HTTP handlers and the loops share: a cheap clone, read through
/// `Deref` as its [`Inner`].
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Runs a lock script for this instance (with the lock's TTL, to take
    /// or renew it).
    async fn call(
        &self,
        script: &Script,
        lock_key: &str,
        ttl_ms: Option<u64>,
    ) -> redis::RedisResult<i64> {
        let mut conn = self.redis.get().await?;
        let mut call = script.key(lock_key);
        call.arg(&self.instance);
        if let Some(ttl) = ttl_ms {
            call.arg(ttl);
        }
        call.invoke_async(&mut conn).await
    }

    fn set_leader(&self, leads: bool) {
        let was = self.leader.swap(leads, Ordering::AcqRel);
        if was != leads {
            if leads {
                info!(instance = %self.instance, "leading");
            } else {
                info!(instance = %self.instance, "standing by");
            }
        }
        metrics::gauge!("scheduler_leader").set(if leads { 1.0 } else { 0.0 });
    }
}

/// A scheduler bound to its address, ready to run.
#[derive(Debug)]
pub struct Scheduler {
    listener: TcpListener,
    state: AppState,
}

impl Scheduler {
    /// Binds the listen address (port 0 picks a free one). Redis need not be
    /// up: the replica stands by until it answers.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let listener = chat_core::serve::bind(config.listen).await?;
        let store = config.hot_store.redis(&config.redis);
        let instance = config.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "scheduler".to_owned());
            // Replicas in one process (tests) need names of their own too.
            let salt = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
            format!("{host}-{}-{:04x}", std::process::id(), salt & 0xffff)
        });
        let state = AppState(Arc::new(Inner {
            instance,
            redis: RedisConn::new(&store)?,
            keys: store.keys(),
            leader: AtomicBool::new(false),
            metrics: chat_core::metrics::handle(),
            lock: Script::new(LOCK),
            unlock: Script::new(UNLOCK),
            tick: Script::new(TICK),
            config,
        }));
        state.set_leader(false);
        Ok(Self { listener, state })
    }

    /// The address of the health and metrics endpoints.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.listen)
    }

    /// The shared state, to ask whether this replica leads.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Runs until `shutdown` fires; a leader gives its lock up on the way out.
    pub async fn run(self, shutdown: CancellationToken) {
        let state = self.state;
        info!(addr = %self.listener.local_addr().unwrap_or(state.config.listen),
              instance = %state.instance,
              threshold = state.config.hot_threshold,
              cool_down = state.config.cool_down,
              "scheduler listening");
        // Joined, not spawned: should this future be dropped (the task
        // aborted), the loops stop with it, as in a crash.
        tokio::join!(
            chat_core::serve::serve(
                self.listener,
                app(state.clone()),
                chat_core::serve::Limits::default(),
                shutdown.clone(),
            ),
            lead(state.clone(), shutdown.clone()),
            tick_loop(state.clone(), shutdown.clone()),
        );
        info!("scheduler stopped");
    }
}

/// Holds or waits for the leader lock until `shutdown`.
async fn lead(state: AppState, shutdown: CancellationToken) {
    let ttl = Duration::from_millis(state.config.leader_lock_ttl_ms);
    let lock_key = state.keys.scheduler_leader();
    // The leader renews three times per TTL, so the lock outlives a missed
    // renewal; a standby asks ten times per TTL, so it takes over within a
    // tenth of the TTL after the lock lapses.
    loop {
        let pause = if state.is_leader() { ttl / 3 } else { ttl / 10 };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
        let held = state.call(
            &state.lock,
            &lock_key,
            Some(state.config.leader_lock_ttl_ms),
        );
        match held.await {
            Ok(held) => state.set_leader(held == 1),
            Err(error) => {
                if state.is_leader() {
                    warn!(%error, "cannot renew the leader lock; standing by");
                }
                state.set_leader(false);
            }
        }
    }
    if state.is_leader() {
        state.set_leader(false);
        if let Err(error) = state.call(&state.unlock, &lock_key, None).await {
            warn!(%error, "cannot release the leader lock; it expires by itself");
        }
    }
}

/// Runs a tick just after every wall-clock second, until `shutdown`.
async fn tick_loop(state: AppState, shutdown: CancellationToken) {
    let offset = state.config.tick_offset_ms as i64;
    loop {
        let tick = next_tick(now_millis(), offset);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(tick.wait_ms as u64)) => {}
        }
        if !state.is_leader() {
            continue;
        }
        let lateness = (now_millis() - tick.due_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("scheduler_tick_lateness_seconds").record(lateness);
        let started = Instant::now();
        match run_tick(&state, tick.second).await {
            Ok(()) => {}
            Err(error) => {
                metrics::counter!("scheduler_tick_errors_total").increment(1);
                warn!(%error, second = tick.second, "tick failed");
            }
        }
        metrics::histogram!("scheduler_tick_duration_seconds").record(started.elapsed());
        // The next tick is computed from the clock after this one ends: a
        // slow tick skips the seconds it overran, it never piles up.
    }
}

/// The chats fetched at least `threshold` times in `second`: one read per
/// shard of the counts, all sent together.
async fn chats_over(
    conn: &chat_core::redis_conn::Conn,
    keys: &Keys,
    second: i64,
    threshold: u64,
) -> redis::RedisResult<Vec<String>> {
    let reads = (0..chat_core::names::FETCH_COUNT_SHARDS).map(|shard| {
        let mut conn = conn.clone();
        let key = keys.fetch_counts(second, shard);
        async move {
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(threshold)
                .arg("+inf")
                .query_async::<Vec<String>>(&mut conn)
                .await
        }
    });
    let shards = futures::future::try_join_all(reads).await?;
    Ok(shards.into_iter().flatten().collect())
}

/// Flags and clears chats from the counters of `second`: the shards read
/// together, then one script on the flags' slot.
async fn run_tick(state: &AppState, second: i64) -> redis::RedisResult<()> {
    let config = &state.config;
    let mut conn = state.redis.get().await?;
    let over = chats_over(&conn, &state.keys, second, config.hot_threshold).await?;
    let now = now_millis();
    let expiry = (second + 1 + config.cool_down as i64) * 1000;
    let mut call = state.tick.key(state.keys.scheduler_leader());
    call.key(state.keys.hot_chats())
        .arg(&state.instance)
        .arg(second)
        .arg(expiry)
        .arg(now)
        .arg(state.keys.hot_changes_channel());
    for chat in &over {
        call.arg(chat);
    }
    let reply: redis::Value = call.invoke_async(&mut conn).await?;
    // `{-1}`: another replica took the lock since this one last renewed it.
    if let redis::Value::Array(items) = &reply
        && matches!(items.as_slice(), [redis::Value::Int(-1)])
    {
        state.set_leader(false);
        return Ok(());
    }
    let (became, cleared, hot): (Vec<String>, Vec<String>, i64) =
        redis::from_redis_value_ref(&reply)?;
    metrics::gauge!("scheduler_hot_chats").set(hot as f64);
    for chat in &became {
        info!(%chat, second, "chat is hot");
    }
    for chat in &cleared {
        info!(%chat, second, "chat cooled down");
    }
    Ok(())
}

/// The scheduler's HTTP endpoints: health, readiness, metrics.
fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(chat_core::problem::no_route)
        .method_not_allowed_fallback(chat_core::problem::method_not_allowed)
        .layer(middleware::from_fn(chat_core::metrics::track))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "instance": state.instance,
        "leader": state.is_leader(),
    }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let redis = state.redis.ping().await;
    let Json(mut body) = chat_core::serve::ready(&[("redis", redis.err().map(|e| e.to_string()))])?;
    body["leader"] = state.is_leader().into();
    Ok(Json(body))
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    chat_core::metrics::exposition(&state.metrics)
}
