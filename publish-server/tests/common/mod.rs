//! Test helpers: a chat-server and publish-servers in this process, sharing
//! a topic and Redis prefix of the test's own (the SSE client is test-support's).

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use serde_json::Value;

pub use test_support::{Event, Running, Subscriber, kafka_brokers, redis_url, unique};

/// One test's world: its topic and key prefix.
#[derive(Clone)]
pub struct World {
    pub topic: String,
    pub prefix: String,
    pub http: reqwest::Client,
}

impl World {
    fn corner(&self) -> test_support::Corner {
        test_support::Corner {
            topic: self.topic.clone(),
            prefix: self.prefix.clone(),
        }
    }

    pub fn new() -> Self {
        Self {
            topic: unique("ps-test-events"),
            prefix: unique("ps-test"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// A world of its own with a chat-server and a publish-server of the
    /// default settings.
    pub async fn start() -> (Self, Running, Running) {
        Self::start_with(|_| {}).await
    }

    /// A world of its own with a chat-server (which creates the topic) and
    /// a publish-server of the default settings, `configure`d.
    pub async fn start_with(
        configure: impl FnOnce(&mut publish_server::Config),
    ) -> (Self, Running, Running) {
        let world = Self::new();
        let chat = world.chat_server().await;
        let mut config = world.publish_config();
        configure(&mut config);
        let publish = world.publish_server(config).await;
        (world, chat, publish)
    }

    pub async fn chat_server(&self) -> Running {
        self.chat_server_with(self.chat_config()).await
    }

    pub fn chat_config(&self) -> chat_server::Config {
        test_support::servers::chat_config(&self.corner(), "ps-test-projector")
    }

    pub async fn chat_server_with(&self, config: chat_server::Config) -> Running {
        test_support::servers::chat_server(&self.http, config, test_support::Until::Ready).await
    }

    pub fn publish_config(&self) -> publish_server::Config {
        test_support::servers::publish_config(&self.corner())
    }

    pub async fn publish_server(&self, config: publish_server::Config) -> Running {
        test_support::servers::publish_server(&self.http, config, test_support::Until::Ready).await
    }

    /// The text of `server`'s `GET /metrics`.
    pub async fn metrics(&self, server: &Running) -> String {
        test_support::get_text(&self.http, &server.url("/metrics")).await
    }

    /// Posts a message through chat-server; answers its id.
    pub async fn post(&self, chat_server: SocketAddr, chat: &str, text: &str) -> String {
        let response = self
            .http
            .post(format!("http://{chat_server}/api/chats/{chat}/messages"))
            .json(&serde_json::json!({"userId": "tester", "text": text}))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 201, "posting {text}");
        let body: Value = response.json().await.expect("JSON");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Adds a reaction through chat-server; answers the reaction's id.
    pub async fn react(
        &self,
        chat_server: SocketAddr,
        chat: &str,
        message: &str,
        user: &str,
    ) -> String {
        let response = self
            .http
            .post(format!(
                "http://{chat_server}/api/chats/{chat}/messages/{message}/reactions"
            ))
            .json(&serde_json::json!({"userId": user, "emoji": "👍"}))
            .send()
            .await
            .expect("react");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("JSON");
        body["id"].as_str().expect("id").to_owned()
    }
}

/// Stops `servers` gracefully, in this order.
pub async fn stop(servers: impl IntoIterator<Item = Running>) {
    for server in servers {
        server.stop().await;
    }
}
