//! Configuration blocks shared by the binaries. Every setting is a flag with
//! an environment variable and a default; the doc comment is its `--help`.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::names;

/// Where each server listens unless told otherwise, and how the others and
/// browsers reach it: the one place these defaults are written.
pub mod defaults {
    macro_rules! chat_port {
        () => {
            "8080"
        };
    }
    macro_rules! publish_port {
        () => {
            "8081"
        };
    }

    /// chat-server's API (and the web UI).
    pub const CHAT_SERVER_LISTEN: &str = concat!("127.0.0.1:", chat_port!());
    /// publish-server's event streams.
    pub const PUBLISH_SERVER_LISTEN: &str = concat!("127.0.0.1:", publish_port!());
    /// The scheduler's health and metrics.
    pub const SCHEDULER_LISTEN: &str = "127.0.0.1:8082";
    /// publish-server as browsers reach it.
    pub const PUBLIC_STREAM_URL: &str = concat!("http://127.0.0.1:", publish_port!());
    /// The origins of the web UI as chat-server serves it.
    pub const CORS_ORIGINS: &str = concat!(
        "http://127.0.0.1:",
        chat_port!(),
        ",http://localhost:",
        chat_port!()
    );
}

/// Where Kafka is and how the chat events topic is used.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated host:port pairs.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// The topic of chat events (key: chat id).
    #[arg(long = "kafka-topic", env = "KAFKA_TOPIC", default_value = names::CHAT_EVENTS_TOPIC)]
    pub topic: String,

    /// Longest a consumer's fetch waits at the broker for new events, in
    /// milliseconds. A broker that holds a waiting fetch until this runs out
    /// even when events arrive (librdkafka's mock cluster, Tansu) delays
    /// each event by up to this; lower costs more fetches while idle.
    #[arg(
        long = "kafka-fetch-wait-ms",
        env = "KAFKA_FETCH_WAIT_MS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=500)
    )]
    pub fetch_wait_ms: u64,

    /// How long a write may wait for the broker's acknowledgement, in
    /// milliseconds; past it the write fails and the POST answers 503.
    #[arg(
        long = "kafka-delivery-timeout-ms",
        env = "KAFKA_DELIVERY_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1000..=300_000)
    )]
    pub delivery_timeout_ms: u64,

    /// How long librdkafka goes on trying a write after its POST was
    /// answered 503 at the delivery timeout, in milliseconds (at least the
    /// delivery timeout). Long enough to outlast a leader's failover: a
    /// write that times out inside librdkafka makes it bump the idempotent
    /// producer's epoch and send what else was in flight afresh, which can
    /// store those writes twice. A retry with the same `clientMessageId`
    /// waits this long at most to learn whether the first write landed.
    #[arg(
        long = "kafka-message-timeout-ms",
        env = "KAFKA_MESSAGE_TIMEOUT_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1000..=600_000)
    )]
    pub message_timeout_ms: u64,

    /// How long the producer waits to fill a batch before sending it, in
    /// milliseconds (librdkafka's `linger.ms`): every event waits up to
    /// this, and under load more events go in one request.
    #[arg(
        long = "kafka-linger-ms",
        env = "KAFKA_LINGER_MS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u64).range(0..=1000)
    )]
    pub linger_ms: u64,

    /// Create the topic at start-up when it does not exist.
    #[arg(
        long = "kafka-create-topic",
        env = "KAFKA_CREATE_TOPIC",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub create_topic: bool,

    /// Partitions of the topic when it is created.
    #[arg(
        long = "kafka-topic-partitions",
        env = "KAFKA_TOPIC_PARTITIONS",
        default_value_t = 3,
        value_parser = clap::value_parser!(i32).range(1..=10_000)
    )]
    pub topic_partitions: i32,

    /// Replication factor of the topic when it is created.
    #[arg(
        long = "kafka-topic-replication",
        env = "KAFKA_TOPIC_REPLICATION",
        default_value_t = 1,
        value_parser = clap::value_parser!(i32).range(1..=16)
    )]
    pub topic_replication: i32,

    /// The consumer-group protocol of the projector's group: `classic`
    /// (every Kafka broker, the embedded mock, managed services) or
    /// `consumer` (KIP-848, served by Kafka 4 brokers: the broker assigns
    /// partitions and its group settings replace the client's session
    /// timeout and heartbeat).
    #[arg(
        long = "kafka-group-protocol",
        env = "KAFKA_GROUP_PROTOCOL",
        value_enum,
        default_value_t = GroupProtocol::Classic
    )]
    pub group_protocol: GroupProtocol,
}

/// The consumer-group protocols librdkafka speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// Join/sync with client-side assignment; every broker serves it.
    Classic,
    /// KIP-848: heartbeats to the coordinator, which assigns partitions
    /// incrementally (Kafka 4.0 and later).
    Consumer,
}

impl KafkaConfig {
    /// The delivery timeout as a duration.
    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    /// How long librdkafka tries a write: the message timeout, and never
    /// less than the delivery timeout.
    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms.max(self.delivery_timeout_ms))
    }

    /// Client settings every Kafka client of the system starts from.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // Notice a dead broker within seconds, not minutes.
            .set("socket.connection.setup.timeout.ms", "3000")
            .set("reconnect.backoff.max.ms", "2000");
        config
    }

    /// Settings of a consumer that commits nothing by itself and learns of
    /// new events quickly. `group` is the projector's consumer group; with
    /// `None` the consumer is assigned partitions and joins no group (the
    /// client needs a `group.id` all the same, which it never uses).
    pub fn consumer_config(&self, client_id: &str, group: Option<&str>) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("group.id", group.unwrap_or("publish-server-no-group"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Brokers that do not answer a waiting fetch when data arrives
            // (the embedded mock broker, Tansu) hold each new event for the
            // whole wait: short by default, at the cost of idle fetches.
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string());
        if group.is_some() {
            config.set("auto.offset.reset", "earliest");
            match self.group_protocol {
                GroupProtocol::Classic => {
                    // A member that died hands its partitions over within 10 s.
                    config
                        .set("group.protocol", "classic")
                        .set("session.timeout.ms", "10000")
                        .set("heartbeat.interval.ms", "2000");
                }
                // The broker's group.consumer.session.timeout.ms (45 s by
                // default) and heartbeat interval (5 s) apply; librdkafka
                // refuses the client-side ones under this protocol.
                GroupProtocol::Consumer => {
                    config.set("group.protocol", "consumer");
                }
            }
        } else {
            // Offsets are assigned, never stored or committed.
            config.set("enable.auto.offset.store", "false");
        }
        config
    }

    /// Settings of a producer whose acknowledged writes are never lost nor
    /// duplicated: idempotent, acknowledged by all in-sync replicas, and
    /// giving a write up after the message timeout instead of waiting
    /// forever.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.client_config(client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A chat's partition is CRC32(chat id) mod partitions, which
            // publish-server computes too (`names::partition_of`).
            .set("partitioner", "consistent_random")
            // librdkafka tries a write for the message timeout; the POST is
            // answered 503 at the delivery timeout all the same.
            .set(
                "message.timeout.ms",
                self.message_timeout().as_millis().to_string(),
            )
            .set(
                "request.timeout.ms",
                self.delivery_timeout_ms.min(30_000).to_string(),
            )
            .set("linger.ms", self.linger_ms.to_string())
            // Bounded local queue: past it a write fails at once.
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "65536");
        config
    }
}

/// Where Redis is and how keys are named.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisConfig {
    /// Redis URL (`redis://host:port/db`).
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,

    /// Seed nodes of a Redis Cluster (`host:port`, comma-separated): given,
    /// the servers speak Redis Cluster to them and `--redis-url` is not used.
    #[arg(
        long = "redis-cluster-nodes",
        env = "REDIS_CLUSTER_NODES",
        value_delimiter = ','
    )]
    pub cluster_nodes: Vec<String>,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long = "redis-key-prefix", env = "REDIS_KEY_PREFIX", default_value = names::DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// How long one Redis command may take, in milliseconds, before it fails.
    #[arg(
        long = "redis-timeout-ms",
        env = "REDIS_TIMEOUT_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(10..=60_000)
    )]
    pub timeout_ms: u64,
}

impl RedisConfig {
    /// The command timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The key names under the configured prefix.
    pub fn keys(&self) -> names::Keys {
        names::Keys::new(self.key_prefix.clone())
    }

    /// The cluster's seed nodes as `redis://` URLs.
    pub fn cluster_seed_urls(&self) -> Vec<String> {
        self.cluster_nodes
            .iter()
            .map(|node| node.trim())
            .filter(|node| !node.is_empty())
            .map(|node| {
                if node.contains("://") {
                    node.to_owned()
                } else {
                    format!("redis://{node}")
                }
            })
            .collect()
    }

    /// Whether seed nodes of a cluster are given.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_seed_urls().is_empty()
    }

    /// Where a plain connection (pub/sub) can go: the URL, or each seed
    /// node of the cluster in turn (a cluster carries a PUBLISH to every
    /// node, so a subscriber may listen on any).
    pub fn plain_urls(&self) -> Vec<String> {
        if !self.is_cluster() {
            vec![self.url.clone()]
        } else {
            self.cluster_seed_urls()
        }
    }
}
