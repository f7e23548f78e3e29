//! What the integration tests of every crate share. Service addresses come
//! from `KAFKA_BROKERS` and `REDIS_URL` (`make test` starts Apache Kafka
//! and a redis-server and sets them); every name a test makes is its own,
//! so tests run in parallel and need no cleanup.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

mod kafka;
mod sse;

pub use kafka::{KafkaNodes, OwnKafka, script, workspace_root};

pub use sse::{Event, SseBlock, SseDecoder, Subscriber};

/// The Kafka bootstrap servers of the tests.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

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

/// A name no other test (in this run or another) uses.
pub fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{name}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port free at the time of asking, and never handed out before in this
/// process: tests running side by side start servers that bind their port
/// a moment later (a Python S3 server takes seconds), and must not be given
/// the same one meanwhile.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !handed.contains(&port) {
            handed.push(port);
            return port;
        }
    }
}

/// A port for a Redis Cluster node: free, and with its cluster bus port
/// (10,000 higher, so at most 65535) free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A test's own corner of the shared broker and Redis: its topic and its
/// key prefix.
#[derive(Debug, Clone)]
pub struct Corner {
    pub topic: String,
    pub prefix: String,
}

impl Corner {
    /// A corner whose names start with `name`.
    pub fn new(name: &str) -> Self {
        Self {
            topic: unique(&format!("{name}-events")),
            prefix: unique(name),
        }
    }

    /// Points a server's Kafka and Redis settings at the test services
    /// and this corner, and its listener at a free port.
    pub fn apply(
        &self,
        listen: &mut SocketAddr,
        kafka: &mut chat_core::config::KafkaConfig,
        redis: &mut chat_core::config::RedisConfig,
    ) {
        *listen = SocketAddr::from(([127, 0, 0, 1], 0));
        kafka.brokers = kafka_brokers();
        kafka.topic = self.topic.clone();
        redis.url = redis_url();
        redis.cluster_nodes = redis_cluster_nodes();
        redis.key_prefix = self.prefix.clone();
    }
}

/// A server running in the test's process, stopped when dropped.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `run` is the server's run future; it gets `shutdown` to stop on.
    pub fn spawn<F>(addr: SocketAddr, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Self {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// Runs a bound server (`run` is its run method) and waits until
    /// `ready_path` answers 200.
    pub async fn start<S, F>(
        http: &reqwest::Client,
        addr: SocketAddr,
        server: S,
        run: impl FnOnce(S, CancellationToken) -> F,
        ready_path: &str,
    ) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let running = Self::spawn(addr, |shutdown| run(server, shutdown));
        running.until_ok(http, ready_path).await;
        running
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until `path` answers 200 (30 s at most).
    pub async fn until_ok(&self, http: &reqwest::Client, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = http.get(self.url(path)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "{} not ready", self.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful stop (SIGTERM's path): waits until the server returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("server stops within 20 s")
            .expect("server task");
    }

    /// Stops it abruptly, as a crash would: nothing runs on the way out.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A redis-server of the test's own on a port of its own, killed on drop.
/// With an append-only file, so that a restart on the same folder brings
/// its data back.
#[derive(Debug)]
pub struct OwnRedis {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
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
            dir,
            child: None,
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
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (make test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server binary in a process of its own whose log (stderr) is kept.
#[derive(Debug)]
pub struct LoggedProcess {
    child: Child,
    pub base: String,
}

impl LoggedProcess {
    /// Starts `binary` with `env`, telling it to listen on a free port
    /// through `listen_var`, and waits until `/healthz` answers.
    pub async fn start(binary: &str, listen_var: &str, env: &[(&str, String)]) -> Self {
        let port = free_port();
        let child = Command::new(binary)
            .env(listen_var, format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, base }
    }

    /// Stops it with SIGTERM and answers everything it logged.
    pub fn stop(self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let output = self.child.wait_with_output().expect("exits");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// Polls `check` every 50 ms until it answers `Some`, for up to `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A metric's value in Prometheus text, summed over the series whose
/// labels contain every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
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

/// What a server answers to the raw bytes of `request`, read until it
/// closes the connection (at most `wait`), and how long that took.
pub async fn raw_exchange(addr: SocketAddr, request: &str, wait: Duration) -> (String, Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let sent = Instant::now();
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        sent.elapsed(),
    )
}

/// `GET url`'s answer, whatever its status.
pub async fn get(http: &reqwest::Client, url: &str) -> reqwest::Response {
    http.get(url).send().await.expect("an answer")
}

/// Asserts that every metric of a Prometheus text exposition has HELP.
pub fn assert_described(text: &str) {
    assert_eq!(
        undescribed(text),
        Vec::<&str>::new(),
        "metrics without HELP"
    );
}

/// `GET url`'s body as text.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.expect("an answer");
    response.text().await.expect("a text body")
}

/// `GET url`'s body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = http.get(url).send().await.expect("an answer");
    response.json().await.expect("a JSON body")
}

/// The metrics of a Prometheus text exposition that have a `# TYPE` but
/// no `# HELP` line.
pub fn undescribed(text: &str) -> Vec<&str> {
    let described: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP ")?.split(' ').next())
        .collect();
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next())
        .filter(|name| !described.contains(name))
        .collect()
}
