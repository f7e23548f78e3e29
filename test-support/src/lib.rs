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
pub mod labels;
pub mod load;
pub mod servers;
mod settings_table;
mod sse;
mod store;

pub use kafka::{KafkaNodes, OwnKafka, script, workspace_root};
pub use settings_table::{assert_settings_table, check_settings_table};

pub use sse::{Event, SseBlock, SseDecoder, Subscriber};
pub use store::{
    OwnRedis, describe_keys, flag_hot, flag_hot_in, redis_cluster_nodes, redis_config, redis_conn,
    redis_url,
};

/// The Kafka bootstrap servers of the tests.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
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

/// What a test waits for before it talks to a server it started; every
/// harness waits the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `/readyz` answers 200: the services it needs answer (and a
    /// chat-server's projector owns its partitions). The default.
    Ready,
    /// `/healthz` answers 200: it serves, whatever its services, for a
    /// test of a server whose Kafka or Redis is down.
    Serving,
}

impl Until {
    fn path(self) -> &'static str {
        match self {
            Self::Ready => "/readyz",
            Self::Serving => "/healthz",
        }
    }
}

/// A server running in the test's process, stopped when dropped.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The hot chats the server knows of, where it has them.
    hot: Option<std::sync::Arc<chat_core::hot::HotChats>>,
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
            hot: None,
        }
    }

    /// The same, with the hot chats the server knows of (see
    /// [`Running::until_knows_hot`]).
    #[must_use]
    pub fn knowing_hot(mut self, hot: std::sync::Arc<chat_core::hot::HotChats>) -> Self {
        self.hot = Some(hot);
        self
    }

    /// Waits until the server knows `chat` is hot (servers resync the
    /// flags every second): it asks the server's own flags, so nothing is
    /// fetched, counted or throttled.
    pub async fn until_knows_hot(&self, chat: &str) {
        let hot = self
            .hot
            .as_ref()
            .expect("a server started with its hot chats");
        let chat: chat_core::validate::ChatId = chat.parse().expect("chat id");
        eventually(
            Duration::from_secs(10),
            &format!("{chat} to be known hot"),
            || {
                let known = hot.is_hot(&chat);
                async move { known.then_some(()) }
            },
        )
        .await;
    }

    /// Runs a bound server (`run` is its run method) and waits `until` it
    /// is ready or serving.
    pub async fn start<S, F>(
        http: &reqwest::Client,
        addr: SocketAddr,
        server: S,
        run: impl FnOnce(S, CancellationToken) -> F,
        until: Until,
    ) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let running = Self::spawn(addr, |shutdown| run(server, shutdown));
        running.until_ok(http, until.path()).await;
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

/// A child process of a test's own and the folder it keeps its data in:
/// killed, and the folder removed, on drop.
#[derive(Debug)]
struct OwnProcess {
    dir: std::path::PathBuf,
    /// `None` while it is not running.
    child: Option<Child>,
}

impl OwnProcess {
    /// Kills the process (SIGKILL), as a crash would, and waits until it
    /// is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnProcess {
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

/// Runs `command` (`what`) to its end and answers its output; panics,
/// with what it wrote to stderr, unless it succeeded.
pub fn run_ok(command: &mut Command, what: &str) -> std::process::Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
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
