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

pub use test_support::load::{Answer, Load};
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

    fn corner(&self) -> test_support::Corner {
        test_support::Corner {
            topic: self.topic.clone(),
            prefix: self.prefix.clone(),
        }
    }

    pub fn chat_config(&self) -> chat_server::Config {
        test_support::servers::chat_config(&self.corner(), "hot-test-projector")
    }

    pub async fn chat_server(&self, config: chat_server::Config) -> Running {
        test_support::servers::chat_server(&self.http, config, test_support::Until::Ready).await
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
        test_support::servers::scheduler(&self.http, config, test_support::Until::Ready).await
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

    /// A chat-server of `chat` settings beside a leading scheduler that
    /// flags a chat hot at `threshold` fetches a second, for `cool_down`
    /// seconds.
    pub async fn chat_and_leader(
        &self,
        chat: chat_server::Config,
        threshold: u64,
        cool_down: u64,
    ) -> (Running, Running) {
        let chat = self.chat_server(chat).await;
        let config = self.scheduler_config(threshold, cool_down);
        let (scheduler, _) = self.leading_scheduler(config).await;
        (chat, scheduler)
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

/// Stops `servers` gracefully, in this order.
pub async fn stop(servers: impl IntoIterator<Item = Running>) {
    for server in servers {
        server.stop().await;
    }
}
