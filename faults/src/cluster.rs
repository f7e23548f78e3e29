//! The whole system in processes of its own: Apache Kafka (one node, or a
//! replicated cluster of three), redis-server, two chat-servers, two
//! publish-servers and the scheduler.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::launcher::Launcher;
use crate::*;

/// One 3-node Kafka at a time (the tests of a binary run side by side):
/// three JVMs are what this machine's two cores hold beside the load.
static THREE_NODE_TURN: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(Default::default);

/// Settings of a cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Kafka nodes: 1 (the default) or 3. With three, the topic and the
    /// group offsets are on every node, a write needs two in-sync
    /// replicas, and no replica that missed writes is ever elected leader.
    pub kafka_nodes: usize,
    /// Extra environment for both chat-servers.
    pub chat_env: Vec<(String, String)>,
    /// Extra environment for both publish-servers.
    pub publish_env: Vec<(String, String)>,
    /// The servers speak to a Redis Cluster of 3 masters and 3 replicas
    /// (`redis_nodes`) instead of the one redis-server.
    pub redis_cluster: bool,
}

/// The whole system. Dropping it kills every process and removes its data.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub redis: Service,
    /// With `Options::redis_cluster`: the cluster's nodes, the first three
    /// its masters when it was made.
    pub redis_nodes: Vec<Service>,
    /// The Kafka nodes, node `i + 1` at index `i`; each keeps its log in
    /// the cluster's folder across a restart.
    pub kafka: Vec<Service>,
    pub kafka_config: KafkaNodes,
    /// Held while a 3-node Kafka runs: only one runs at a time.
    _kafka_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    pub chat: Vec<Service>,
    pub publish: Vec<Service>,
    pub scheduler: Service,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts every service of `options` and waits until the API servers
    /// are ready.
    pub async fn start(options: Options) -> Self {
        let dir = std::env::temp_dir().join(unique("faults"));
        std::fs::create_dir_all(&dir).expect("data folder");
        let launch = Launcher { dir: dir.clone() };
        let redis = launch.redis().await;
        let redis_nodes = if options.redis_cluster {
            launch.redis_cluster().await
        } else {
            Vec::new()
        };
        let nodes = options.kafka_nodes.max(1);
        let kafka_turn = if nodes > 1 {
            Some(THREE_NODE_TURN.clone().lock_owned().await)
        } else {
            None
        };
        let (kafka_config, kafka) = launch.kafka(nodes).await;
        let cluster_nodes = redis_nodes
            .iter()
            .take(3)
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",");
        let common: Vec<(String, String)> = [
            ("KAFKA_BROKERS", kafka_config.bootstrap()),
            (
                "KAFKA_TOPIC",
                chat_core::names::CHAT_EVENTS_TOPIC.to_owned(),
            ),
            ("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port)),
            ("REDIS_CLUSTER_NODES", cluster_nodes),
            ("REDIS_KEY_PREFIX", "faults".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        let chat_own = [
            ("KAFKA_CREATE_TOPIC", "true".to_owned()),
            ("KAFKA_TOPIC_PARTITIONS", "3".to_owned()),
            ("KAFKA_TOPIC_REPLICATION", nodes.to_string()),
            ("KAFKA_DELIVERY_TIMEOUT_MS", "3000".to_owned()),
            ("USER_MESSAGES_PER_SEC", "0".to_owned()),
            ("USER_REACTIONS_PER_SEC", "0".to_owned()),
            ("EXPECTED_INSTANCES", "2".to_owned()),
        ];
        let publish_own = [("MAX_STREAMS_PER_ADDRESS", "0".to_owned())];
        let mut chat = Vec::new();
        let mut publish = Vec::new();
        for (servers, binary, listen_var, own, extra) in [
            (
                &mut chat,
                "chat-server",
                "CHAT_SERVER_LISTEN",
                &chat_own[..],
                &options.chat_env,
            ),
            (
                &mut publish,
                "publish-server",
                "PUBLISH_SERVER_LISTEN",
                &publish_own[..],
                &options.publish_env,
            ),
        ] {
            for i in 0..2 {
                let mut s = launch.server(
                    &format!("{binary}-{i}"),
                    binary,
                    listen_var,
                    &common,
                    own,
                    extra,
                );
                s.start().await;
                servers.push(s);
            }
        }
        let mut scheduler = launch.server(
            "scheduler",
            "scheduler",
            "SCHEDULER_LISTEN",
            &common,
            &[],
            &[],
        );
        scheduler.start().await;

        let cluster = Self {
            dir,
            redis,
            redis_nodes,
            kafka,
            kafka_config,
            _kafka_turn: kafka_turn,
            chat,
            publish,
            scheduler,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        for s in cluster.chat.iter().chain(&cluster.publish) {
            cluster.until_ready(s).await;
        }
        cluster
    }

    /// Waits until `service` answers `/readyz` with 200 (60 s at most).
    pub async fn until_ready(&self, service: &Service) {
        let url = format!("{}/readyz", service.base());
        eventually(
            Duration::from_secs(60),
            &format!("{} ready", service.name),
            || async {
                self.http
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(drop)
            },
        )
        .await;
    }

    pub fn chat_bases(&self) -> Vec<String> {
        self.chat.iter().map(Service::base).collect()
    }

    pub fn publish_bases(&self) -> Vec<String> {
        self.publish.iter().map(Service::base).collect()
    }

    /// Every message of `chat` through the fetch API, oldest first, as
    /// (id, text, 👍 count): the latest page, then older pages with
    /// `before`.
    pub async fn fetch_all(&self, chat: &str) -> Vec<(String, String, u64)> {
        let base = &self.chat[0].base();
        let mut pages = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let mut url = format!("{base}/api/chats/{chat}/messages?limit=100");
            if let Some(before) = &before {
                url.push_str(&format!("&before={before}"));
            }
            // A chat still hot answers 429 beyond its budget: wait as its
            // Retry-After says, as a client would.
            let deadline = Instant::now() + Duration::from_secs(60);
            let response = loop {
                let response = self.http.get(&url).send().await.expect("fetch");
                if response.status() != 429 {
                    break response;
                }
                assert!(Instant::now() < deadline, "{chat} throttled for 60 s");
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait)).await;
            };
            let page: Value = response
                .error_for_status()
                .expect("fetch answers 200")
                .json()
                .await
                .expect("fetch JSON");
            let messages: Vec<(String, String, u64)> = page["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| {
                    (
                        m["id"].as_str().expect("id").to_owned(),
                        m["text"].as_str().expect("text").to_owned(),
                        m["reactions"]["👍"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            before = messages.first().map(|(id, ..)| id.clone());
            let older = page["hasOlder"] == true;
            pages.push(messages);
            if !older || before.is_none() {
                break;
            }
        }
        pages.into_iter().rev().flatten().collect()
    }
}

/// Makes a cluster of `nodes` (3 masters, then a replica each) with
/// `redis-cli --cluster create`, and waits until every node serves every
/// slot.
pub(crate) async fn create_redis_cluster(nodes: &[Service]) {
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = tokio::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .await
        .expect("redis-cli runs");
    assert!(
        created.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&created.stdout)
    );
    for node in nodes {
        eventually(
            Duration::from_secs(30),
            "the cluster's slots served",
            || async {
                let info = redis_cli(node.port, &["cluster", "info"]).await;
                info.contains("cluster_state:ok").then_some(())
            },
        )
        .await;
    }
    // A replica that never finished its first sync cannot take over: wait
    // until all three have.
    eventually(Duration::from_secs(60), "every replica in sync", || async {
        let mut in_sync = 0;
        for node in nodes {
            let info = redis_cli(node.port, &["info", "replication"]).await;
            if info.contains("role:slave") && info.contains("master_link_status:up") {
                in_sync += 1;
            }
        }
        (in_sync == nodes.len() / 2).then_some(())
    })
    .await;
}

/// What `redis-cli -p port args...` prints.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = tokio::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Cluster {
    /// The Kafka nodes running now, by index.
    pub fn live_kafka(&self) -> Vec<usize> {
        (0..self.kafka.len())
            .filter(|&i| self.kafka[i].child.is_some())
            .collect()
    }

    /// Waits until a live node lists `brokers` live brokers (120 s at most).
    pub async fn until_kafka_brokers(&self, brokers: usize) {
        let node = self.live_kafka()[0];
        self.kafka_config
            .until_brokers(self.kafka[node].port, brokers, Duration::from_secs(120))
            .await;
    }

    /// Each partition of the chat topic as (partition, leader node index,
    /// in-sync replicas), asked of a live node.
    pub async fn kafka_leaders(&self) -> Vec<(i32, usize, usize)> {
        let topic = chat_core::names::CHAT_EVENTS_TOPIC;
        for i in self.live_kafka() {
            if let Some(leaders) = self.kafka_config.leaders(self.kafka[i].port, topic).await {
                return leaders
                    .into_iter()
                    .map(|(p, leader, isr)| (p, (leader - 1).max(0) as usize, isr))
                    .collect();
            }
        }
        panic!("no live Kafka node answers metadata for {topic}");
    }

    /// The index of the node that coordinates consumer group `group`.
    pub async fn kafka_coordinator(&self, group: &str) -> usize {
        eventually(
            Duration::from_secs(30),
            &format!("{group}'s coordinator"),
            || async {
                for i in self.live_kafka() {
                    if let Some(node) = self
                        .kafka_config
                        .coordinator(self.kafka[i].port, group)
                        .await
                    {
                        return Some((node - 1) as usize);
                    }
                }
                None
            },
        )
        .await
    }

    /// The node serving `key`'s slot as master now, by its port.
    pub async fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .await
            .unwrap_or_else(|| panic!("no master serves {key}'s slot"))
    }

    /// The node serving `key`'s slot as master now, if one does (during a
    /// failover, none may).
    pub async fn try_master_of(&self, key: &str) -> Option<u16> {
        let live = self
            .redis_nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node");
        let slot: u16 = redis_cli(live.port, &["cluster", "keyslot", key])
            .await
            .trim()
            .parse()
            .expect("slot");
        let nodes = redis_cli(live.port, &["cluster", "nodes"]).await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("port");
            for range in &fields[8..] {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(low), Ok(high)) = (low.parse::<u16>(), high.parse::<u16>())
                    && (low..=high).contains(&slot)
                {
                    return Some(port);
                }
            }
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self
            .chat
            .iter_mut()
            .chain(&mut self.publish)
            .chain([&mut self.scheduler, &mut self.redis])
        {
            s.kill();
        }
        for node in self.kafka.iter_mut().chain(&mut self.redis_nodes) {
            node.kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
