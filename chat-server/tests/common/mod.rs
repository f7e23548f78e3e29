//! Test helpers: a chat-server on a free port with its own topic and Redis
//! prefix, and a Kafka reader that sees exactly what the server wrote.
//!
//! Kafka and Redis addresses come from `KAFKA_BROKERS` and `REDIS_URL`
//! (`make test` starts Apache Kafka and a redis-server and sets them).

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use reqwest::Response;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use test_support::{
    OwnRedis, Running, eventually, free_port, kafka_brokers, redis_url, unique,
};

/// The configuration of a test server: port 0, its own topic and prefix.
pub fn config() -> chat_server::Config {
    let mut config =
        test_support::servers::chat_config(&test_support::Corner::new("test"), "test-projector");
    config.kafka.topic_partitions = 3;
    config.kafka.create_topic = true;
    config
}

/// A chat-server running in this process, with the requests the tests
/// make of it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub config: chat_server::Config,
    pub http: reqwest::Client,
    running: Running,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    /// A server of `config`, once ready: Kafka and Redis answer and its
    /// projector owns its partitions.
    pub async fn start_with(config: chat_server::Config) -> Self {
        Self::start_until(config, test_support::Until::Ready).await
    }

    /// A server of [`config`] as `configure` changes it, once ready.
    pub async fn start_configured(configure: impl FnOnce(&mut chat_server::Config)) -> Self {
        let mut config = config();
        configure(&mut config);
        Self::start_with(config).await
    }

    /// A server of `config` whose Kafka or Redis is down, once it serves.
    pub async fn start_unready(config: chat_server::Config) -> Self {
        Self::start_until(config, test_support::Until::Serving).await
    }

    async fn start_until(config: chat_server::Config, until: test_support::Until) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let running = test_support::servers::chat_server(&http, config.clone(), until).await;
        let addr = running.addr;
        Self {
            addr,
            config,
            http,
            running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.running.url(path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Result<Response> {
        self.http.get(self.url(path)).send().await
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request completes")
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.get(path).await.expect("request completes");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// `DELETE path`; answers the response as it is.
    pub async fn delete(&self, path: &str) -> Response {
        self.http
            .delete(self.url(path))
            .send()
            .await
            .expect("request completes")
    }

    /// Adds `emoji` by `user` to `message` in `chat`; answers the response
    /// as it is.
    pub async fn react(&self, chat: &str, message: &str, user: &str, emoji: &str) -> Response {
        self.post_json(
            &format!("/api/chats/{chat}/messages/{message}/reactions"),
            serde_json::json!({"userId": user, "emoji": emoji}),
        )
        .await
    }

    /// Removes `emoji` by `user` from `message` in `chat`, the emoji
    /// percent-encoded in the path; answers the response as it is.
    pub async fn unreact(&self, chat: &str, message: &str, user: &str, emoji: &str) -> Response {
        let encoded: String = emoji.bytes().map(|b| format!("%{b:02X}")).collect();
        self.delete(&format!(
            "/api/chats/{chat}/messages/{message}/reactions/{encoded}?userId={user}"
        ))
        .await
    }

    /// Posts `text` to `chat` as `user`; answers the response as it is.
    pub async fn post_text(&self, chat: &str, user: &str, text: &str) -> Response {
        self.post_json(
            &format!("/api/chats/{chat}/messages"),
            serde_json::json!({"userId": user, "text": text}),
        )
        .await
    }

    /// Posts `text` to `chat` as `user` under the `clientMessageId`
    /// `client_id`; answers the response as it is.
    pub async fn post_with_client_id(
        &self,
        chat: &str,
        user: &str,
        text: &str,
        client_id: &str,
    ) -> Response {
        self.post_json(
            &format!("/api/chats/{chat}/messages"),
            serde_json::json!({"userId": user, "text": text, "clientMessageId": client_id}),
        )
        .await
    }

    /// Posts a message and answers its id.
    pub async fn post_message(&self, chat: &str, user: &str, text: &str) -> String {
        let response = self.post_text(chat, user, text).await;
        assert_eq!(response.status(), 201, "posting {text}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Posts `n` messages as `user`, texts `{prefix} 0` on; answers their ids.
    pub async fn post_messages(
        &self,
        chat: &str,
        user: &str,
        prefix: &str,
        n: usize,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(
                self.post_message(chat, user, &format!("{prefix} {i}"))
                    .await,
            );
        }
        ids
    }

    /// Every message of `chat`, oldest first: walks back with `before` to
    /// the oldest page, then forward with `after` to the newest.
    pub async fn all_messages(&self, chat: &str, limit: u32) -> Vec<serde_json::Value> {
        self.walk(chat, limit).await.0
    }

    /// Every message of `chat`, as `all_messages` walks them, and the
    /// cursor of the walk's last page: what one reader saw of the chat.
    pub async fn walk(
        &self,
        chat: &str,
        limit: u32,
    ) -> (Vec<serde_json::Value>, serde_json::Value) {
        let base = format!("/api/chats/{chat}/messages?limit={limit}");
        let (status, mut page) = self.get_json(&base).await;
        assert_eq!(status, 200, "{page}");
        while page["hasOlder"] == true {
            let first = page["messages"][0]["id"].as_str().expect("id").to_owned();
            let (status, older) = self.get_json(&format!("{base}&before={first}")).await;
            assert_eq!(status, 200, "{older}");
            page = older;
        }
        let mut messages: Vec<serde_json::Value> =
            page["messages"].as_array().expect("messages").clone();
        while page["hasMore"] == true {
            let cursor = page["cursor"].as_str().expect("cursor").to_owned();
            let (status, newer) = self.get_json(&format!("{base}&after={cursor}")).await;
            assert_eq!(status, 200, "{newer}");
            messages.extend(
                newer["messages"]
                    .as_array()
                    .expect("messages")
                    .iter()
                    .cloned(),
            );
            page = newer;
        }
        (messages, page["cursor"].clone())
    }

    /// Waits, for `limit` at most, until the newest message of `chat` is
    /// `id`: the projector has applied it.
    pub async fn until_newest(&self, chat: &str, id: &str, limit: Duration) {
        let path = format!("/api/chats/{chat}/messages");
        eventually(
            limit,
            &format!("{id} to be the newest of {chat}"),
            || async {
                let (_, page) = self.get_json(&path).await;
                (page["messages"][0]["id"] == id).then_some(())
            },
        )
        .await;
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// Waits until this server knows `chat` is hot (it resyncs the flags
    /// every second), asking its own flags: nothing is fetched.
    pub async fn until_knows_hot(&self, chat: &str) {
        self.running.until_knows_hot(chat).await;
    }

    /// Waits until this server's projector has committed the end of every
    /// partition of its topic: it has applied the whole log.
    pub async fn until_projector_caught_up(&self) {
        let brokers = self.config.kafka.brokers.clone();
        let topic = self.config.kafka.topic.clone();
        let group = self.config.projector.group.clone();
        eventually(
            Duration::from_secs(60),
            "the projector to reach the end of the log",
            || {
                let (brokers, topic, group) = (brokers.clone(), topic.clone(), group.clone());
                async move {
                    tokio::task::spawn_blocking(move || caught_up(&brokers, &topic, &group))
                        .await
                        .ok()
                        .flatten()
                }
            },
        )
        .await;
    }

    /// Every record of this server's topic, oldest first per partition.
    pub async fn records(&self) -> Vec<Record> {
        read_topic(&self.config.kafka.brokers, &self.config.kafka.topic).await
    }

    /// The greatest event id of this server's topic: the head a reader that
    /// applied the whole log reaches.
    pub async fn last_event_id(&self) -> String {
        self.records()
            .await
            .iter()
            .map(Record::id)
            .max()
            .expect("records")
    }
}

/// Asserts that `response` is a problem+json answer with `status` (`what`
/// it answered, for the failure's message).
pub fn assert_problem(response: &Response, status: u16, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
}

/// Asserts that the `detail` of a problem+json body says `words`.
pub fn assert_detail_contains(problem: &serde_json::Value, words: &str) {
    let detail = problem["detail"].as_str().expect("detail");
    assert!(detail.contains(words), "{problem}");
}

/// One record as a reader of the topic sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: serde_json::Value,
}

impl Record {
    /// The id the API gives the event at this record's position.
    pub fn id(&self) -> String {
        format!("{}-{:016x}", self.partition, self.offset)
    }
}

/// Reads every record of `topic`: at least as many as the partitions' high
/// watermarks promise, and then on until none came for two seconds (a
/// broker may report a high watermark behind its last offset for a moment,
/// as Tansu 0.6.0, the earlier test broker, did after a batch of several
/// records, so the watermark alone could stop short).
pub async fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    let brokers = brokers.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&brokers, &topic))
        .await
        .expect("reader thread")
}

fn read_topic_blocking(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("test-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let timeout = Duration::from_secs(10);
    let partitions = partition_ids(&consumer, topic, timeout).expect("topic metadata");
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0;
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .expect("watermarks");
        expected += high - low;
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut idle_since = Instant::now();
    while (records.len() as i64) < expected || idle_since.elapsed() < Duration::from_secs(2) {
        assert!(
            Instant::now() < deadline,
            "read {} of {expected} records of {topic}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                idle_since = Instant::now();
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8 key"),
                    value: serde_json::from_slice(m.payload().expect("value")).expect("JSON value"),
                })
            }
        }
    }
    records
}

/// The chat-server binary in a process of its own, killed on drop.
pub struct ServerProcess {
    child: std::process::Child,
}

impl ServerProcess {
    pub fn start(config: &chat_server::Config) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .env("CHAT_SERVER_LISTEN", "127.0.0.1:0")
            .env("KAFKA_BROKERS", &config.kafka.brokers)
            .env("KAFKA_TOPIC", &config.kafka.topic)
            .env("REDIS_URL", &config.redis.url)
            .env("REDIS_KEY_PREFIX", &config.redis.key_prefix)
            .env("PROJECTOR", config.projector.run.to_string())
            .env("PROJECTOR_GROUP", &config.projector.group)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("chat-server binary starts");
        Self { child }
    }

    /// SIGKILL: no shutdown, no flush, no offset commit.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `group` has committed the end of every partition of `topic`.
fn caught_up(brokers: &str, topic: &str, group: &str) -> Option<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let timeout = Duration::from_secs(5);
    let partitions = partition_ids(&consumer, topic, timeout)?;
    let mut wanted = TopicPartitionList::new();
    for &partition in &partitions {
        wanted.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(wanted, timeout).ok()?;
    for &partition in &partitions {
        let (_, end) = consumer.fetch_watermarks(topic, partition, timeout).ok()?;
        let at = match committed.find_partition(topic, partition)?.offset() {
            Offset::Offset(at) => at,
            _ => 0,
        };
        if at < end {
            return None;
        }
    }
    Some(())
}

/// The partitions of `topic`, as the broker's metadata lists them; `None`
/// when it did not answer within `timeout`.
fn partition_ids(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Option<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
    let listed = metadata.topics().first()?;
    Some(listed.partitions().iter().map(|p| p.id()).collect())
}
