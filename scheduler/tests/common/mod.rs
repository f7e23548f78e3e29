//! Test helpers: chat-servers and schedulers in this process, sharing a
//! topic and Redis key prefix of the test's own, a fetch load generator,
//! and a redis-server of a test's own.
//!
//! Kafka and Redis addresses come from `KAFKA_BROKERS` and `REDIS_URL`
//! (`make test` starts Apache Kafka and a redis-server and sets them).

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::HashMap;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;

use tokio_util::sync::CancellationToken;

pub use test_support::{OwnRedis, Running, free_port, kafka_brokers, metric, redis_url, unique};

/// One test's world: its topic and key prefix.
#[derive(Clone)]
pub struct World {
    pub topic: String,
    pub prefix: String,
    pub http: reqwest::Client,
}

impl World {
    pub fn new() -> Self {
        Self {
            topic: unique("hot-test-events"),
            prefix: unique("hot-test"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
        }
    }

    pub fn chat_config(&self) -> chat_server::Config {
        let mut config = chat_server::Config::parse_from(["chat-server"]);
        let corner = test_support::Corner {
            topic: self.topic.clone(),
            prefix: self.prefix.clone(),
        };
        corner.apply(&mut config.listen, &mut config.kafka, &mut config.redis);
        config.projector.group = unique("hot-test-projector");
        config.writes.user_messages_per_sec = 0;
        config.writes.user_reactions_per_sec = 0;
        config
    }

    pub async fn chat_server(&self, config: chat_server::Config) -> Running {
        let server = chat_server::Server::bind(config)
            .await
            .expect("chat-server binds");
        let addr = server.local_addr();
        Running::start(
            &self.http,
            addr,
            server,
            chat_server::Server::run,
            test_support::Until::Ready,
        )
        .await
    }

    pub fn scheduler_config(&self, threshold: u64, cool_down: u64) -> scheduler::Config {
        let mut config = scheduler::Config::parse_from(["scheduler"]);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        let test = test_support::redis_config(&self.prefix);
        config.redis.url = test.url;
        config.redis.cluster_nodes = test.cluster_nodes;
        config.redis.key_prefix = test.key_prefix;
        config.hot_threshold = threshold;
        config.cool_down = cool_down;
        config
    }

    pub async fn scheduler(&self, config: scheduler::Config) -> (Running, scheduler::AppState) {
        let scheduler = scheduler::Scheduler::bind(config)
            .await
            .expect("scheduler binds");
        let state = scheduler.state();
        let addr = scheduler.local_addr();
        let running = Running::start(
            &self.http,
            addr,
            scheduler,
            scheduler::Scheduler::run,
            test_support::Until::Ready,
        )
        .await;
        (running, state)
    }

    /// A scheduler of `config` that leads: started, and waited for until it
    /// took the lock (within a tenth of the lock's TTL when no other holds
    /// it).
    pub async fn leading_scheduler(
        &self,
        config: scheduler::Config,
    ) -> (Running, scheduler::AppState) {
        let (running, state) = self.scheduler(config).await;
        test_support::eventually(Duration::from_secs(10), "the scheduler to lead", || {
            let leads = state.is_leader();
            async move { leads.then_some(()) }
        })
        .await;
        (running, state)
    }

    /// The tests' Redis settings under this world's prefix.
    pub fn redis(&self) -> chat_core::config::RedisConfig {
        test_support::redis_config(&self.prefix)
    }

    /// A plain client for pub/sub: a cluster carries a PUBLISH to every
    /// node, so any seed node will do.
    pub fn pubsub_client(&self) -> redis::Client {
        let url = self.redis().plain_urls().remove(0);
        redis::Client::open(url).expect("url")
    }

    /// The hot flags held in the tests' Redis: chat id to expiry (ms).
    pub async fn flags(&self) -> HashMap<String, i64> {
        let mut conn = test_support::redis_conn(&self.redis()).await;
        let flat: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.redis().keys().hot_chats())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .expect("flags");
        flat.into_iter()
            .map(|(chat, until)| (chat, until as i64))
            .collect()
    }
}

/// What one fetch answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub at: Instant,
    /// The worker that asked.
    pub worker: usize,
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

impl Answer {
    /// The answer carries the hot-chat throttle's headers.
    pub fn throttled_path(&self) -> bool {
        self.headers.contains_key("ratelimit-limit")
    }

    /// The answer came from a hot chat's shared snapshot.
    pub fn answered_from_snapshot(&self) -> bool {
        self.headers.contains_key("snapshot-age-ms")
    }
}

/// Fetches of one URL by some workers, every answer kept.
pub struct Load {
    pub answers: Arc<Mutex<Vec<Answer>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` loops fetching `url`, each pausing `pause` between fetches.
    pub fn start(http: &reqwest::Client, url: String, workers: usize, pause: Duration) -> Self {
        Self::start_with(http, move |_, _| url.clone(), workers, pause)
    }

    /// `workers` loops, each pausing `pause` between fetches; the `n`th
    /// fetch of worker `w` asks `url(w, n)`.
    pub fn start_with(
        http: &reqwest::Client,
        url: impl Fn(usize, u64) -> String + Send + Sync + 'static,
        workers: usize,
        pause: Duration,
    ) -> Self {
        let url = Arc::new(url);
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..workers)
            .map(|worker| {
                let (http, url, answers, stop) =
                    (http.clone(), url.clone(), answers.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.is_cancelled() {
                        let asked = http.get(url(worker, n)).send();
                        n += 1;
                        if let Ok(response) = asked.await {
                            let status = response.status().as_u16();
                            let headers = response
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = response.json().await.unwrap_or_default();
                            answers.lock().expect("lock").push(Answer {
                                at: Instant::now(),
                                worker,
                                status,
                                headers,
                                body,
                            });
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            answers,
            stop,
            tasks,
        }
    }

    /// Every answer so far.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().expect("lock").clone()
    }

    /// The first answer satisfying `test`, waiting up to `limit`.
    pub async fn first(&self, limit: Duration, test: impl Fn(&Answer) -> bool) -> Option<Answer> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.answers().into_iter().find(&test) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> Vec<Answer> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.answers.lock().expect("lock").clone()
    }
}
