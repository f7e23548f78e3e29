//! The tests' Redis: its address, connections and what its nodes hold, a
//! redis-server of a test's own, and hot flags set as the scheduler sets
//! them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{OwnProcess, free_port, unique};

/// The Redis of the tests.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The seed nodes of the tests' Redis Cluster (`REDIS_CLUSTER_NODES`), if
/// they run against one: then every server of a test speaks Redis Cluster.
pub fn redis_cluster_nodes() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The tests' Redis settings: `REDIS_URL`, or the cluster of
/// `REDIS_CLUSTER_NODES`.
pub fn redis_config(prefix: &str) -> chat_core::config::RedisConfig {
    chat_core::config::RedisConfig {
        url: redis_url(),
        cluster_nodes: redis_cluster_nodes(),
        key_prefix: prefix.to_owned(),
        timeout_ms: 2000,
    }
}

/// A connection to the Redis (or cluster) of `config`, for a test's own
/// reads and writes.
pub async fn redis_conn(config: &chat_core::config::RedisConfig) -> chat_core::redis_conn::Conn {
    chat_core::redis_conn::RedisConn::new(config)
        .expect("Redis settings")
        .get()
        .await
        .expect("Redis answers")
}

/// What each Redis node holds of `keys` (their type and size), asked of
/// every node of a cluster (a replica, too, with `READONLY`) and each
/// node's role as `CLUSTER NODES` gives it: for the message of a failing
/// test, so that a read model that looks wrong can be told apart from a
/// read served by the wrong node.
pub async fn describe_keys(config: &chat_core::config::RedisConfig, keys: &[String]) -> String {
    let mut nodes = Vec::new();
    let mut report = String::new();
    if config.is_cluster() {
        let seed = format!("redis://{}", config.cluster_nodes[0]);
        match plain_redis(&seed).await {
            Ok(mut conn) => {
                let listing: redis::RedisResult<String> = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut conn)
                    .await;
                for line in listing
                    .unwrap_or_else(|e| format!("CLUSTER NODES failed: {e}"))
                    .lines()
                {
                    report.push_str(&format!("  {line}\n"));
                    if let Some(address) = line.split_whitespace().nth(1) {
                        let address = address.split('@').next().unwrap_or(address);
                        nodes.push(format!("redis://{address}"));
                    }
                }
            }
            Err(e) => report.push_str(&format!("  seed {seed}: {e}\n")),
        }
    } else {
        nodes.push(config.url.clone());
    }
    for node in nodes {
        report.push_str(&format!("  {node}:"));
        let mut conn = match plain_redis(&node).await {
            Ok(conn) => conn,
            Err(e) => {
                report.push_str(&format!(" {e}\n"));
                continue;
            }
        };
        if config.is_cluster() {
            let _: redis::RedisResult<()> = redis::cmd("READONLY").query_async(&mut conn).await;
        }
        for key in keys {
            report.push_str(&format!(" {key}{}", describe_key(&mut conn, key).await));
        }
        report.push('\n');
    }
    report
}

/// `=type/size` of one key (`=none` when absent), or `: error` (`MOVED`,
/// on a node that does not serve its slot).
async fn describe_key(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    let kind: String = match redis::cmd("TYPE").arg(key).query_async(conn).await {
        Ok(kind) => kind,
        Err(e) => return format!(": {e}"),
    };
    let size = match kind.as_str() {
        "zset" => "ZCARD",
        "hash" => "HLEN",
        _ => return format!("={kind}"),
    };
    match redis::cmd(size).arg(key).query_async::<i64>(conn).await {
        Ok(n) => format!("={kind}/{n}"),
        Err(e) => format!(": {e}"),
    }
}

/// A plain connection to one Redis node, given up on after 2 s.
async fn plain_redis(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A redis-server of the test's own on a port of its own, killed on drop.
/// With an append-only file, so that a restart on the same folder brings
/// its data back.
#[derive(Debug)]
pub struct OwnRedis {
    pub port: u16,
    process: OwnProcess,
}

impl OwnRedis {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(unique("test-redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = Self {
            port,
            process: OwnProcess { dir, child: None },
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and folder.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.process.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (make test installs it)");
        self.process.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// Flags `chat` hot for ten minutes the way the scheduler does: a member of
/// the flags set, scored by its expiry, in the tests' Redis (or cluster).
/// The servers learn of it at their next resync, within a second.
pub async fn flag_hot(keys: &chat_core::names::Keys, chat: &str) {
    flag_hot_in(&redis_config(""), keys, chat).await;
}

/// Flags `chat` hot for ten minutes in the Redis of `redis`, as the
/// scheduler does.
pub async fn flag_hot_in(
    redis: &chat_core::config::RedisConfig,
    keys: &chat_core::names::Keys,
    chat: &str,
) {
    let mut conn = redis_conn(redis).await;
    let until = chat_core::hot::now_millis() + 600_000;
    redis::cmd("ZADD")
        .arg(keys.hot_chats())
        .arg(until)
        .arg(chat)
        .query_async::<()>(&mut conn)
        .await
        .expect("ZADD");
}
