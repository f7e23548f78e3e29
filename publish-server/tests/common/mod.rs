//! Test helpers: a chat-server and publish-servers in this process, sharing
//! a topic and Redis prefix of the test's own, and an SSE client.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser as _;
use futures::StreamExt as _;
use serde_json::Value;
use tokio::sync::mpsc;

pub use test_support::{Running, kafka_brokers, redis_url, unique};

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
            topic: unique("ps-test-events"),
            prefix: unique("ps-test"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub async fn chat_server(&self) -> Running {
        self.chat_server_with(self.chat_config()).await
    }

    pub fn chat_config(&self) -> chat_server::Config {
        let mut config = chat_server::Config::parse_from(["chat-server"]);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.kafka.brokers = kafka_brokers();
        config.kafka.topic = self.topic.clone();
        config.redis.url = redis_url();
        config.redis.key_prefix = self.prefix.clone();
        config.projector_group = unique("ps-test-projector");
        config.user_messages_per_sec = 0;
        config.user_reactions_per_sec = 0;
        config
    }

    pub async fn chat_server_with(&self, config: chat_server::Config) -> Running {
        let server = chat_server::Server::bind(config)
            .await
            .expect("chat-server binds");
        let running = Running::spawn(server.local_addr(), |shutdown| async move {
            server.run(shutdown).await
        });
        running.until_ok(&self.http, "/readyz").await;
        running
    }

    pub fn publish_config(&self) -> publish_server::Config {
        let mut config = publish_server::Config::parse_from(["publish-server"]);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.kafka.brokers = kafka_brokers();
        config.kafka.topic = self.topic.clone();
        config.redis.url = redis_url();
        config.redis.key_prefix = self.prefix.clone();
        config
    }

    pub async fn publish_server(&self, config: publish_server::Config) -> Running {
        let server = publish_server::Server::bind(config)
            .await
            .expect("publish-server binds");
        let running = Running::spawn(server.local_addr(), |shutdown| async move {
            server.run(shutdown).await
        });
        running.until_ok(&self.http, "/readyz").await;
        running
    }

    /// The text of `server`'s `GET /metrics`.
    pub async fn metrics(&self, server: &Running) -> String {
        self.http
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("answer")
            .text()
            .await
            .expect("text")
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

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// An SSE subscriber: events arrive on `events` as the stream delivers them.
pub struct Subscriber {
    pub events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Opens a stream; returns once the response headers arrived and the
    /// first bytes (`retry:`) were read, so the subscription is live.
    pub async fn open(http: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let headers: Vec<(&str, String)> = last_event_id
            .map(|id| ("last-event-id", id.to_owned()))
            .into_iter()
            .collect();
        Self::open_with(http, url, &headers).await
    }

    /// Opens a stream with these request headers.
    pub async fn open_with(http: &reqwest::Client, url: &str, headers: &[(&str, String)]) -> Self {
        let mut request = http.get(url).timeout(Duration::from_secs(600));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.bytes_stream();
        let (tx, events) = mpsc::unbounded_channel();
        let first = body.next().await.expect("first bytes").expect("bytes");
        let task = tokio::spawn(async move {
            let mut buffer = String::from_utf8(first.to_vec()).expect("utf-8");
            loop {
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(event) = parse(&block)
                        && tx.send(event).is_err()
                    {
                        return;
                    }
                }
                match body.next().await {
                    Some(Ok(bytes)) => buffer.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                    _ => return,
                }
            }
        });
        Self { events, task }
    }

    /// The next `n` events, within `limit`.
    pub async fn take(&mut self, n: usize, limit: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => got.push(event),
                Ok(None) => break,
                Err(_) => panic!("got {} of {n} events: {got:?}", got.len()),
            }
        }
        got
    }

    /// Whether the stream has ended (the server closed it).
    pub fn ended(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse(block: &str) -> Option<Event> {
    let test_support::SseBlock { id, event, data } = test_support::SseBlock::parse(block);
    Some(Event {
        id,
        event: event?,
        data: serde_json::from_str(&data?).expect("data is JSON"),
    })
}
