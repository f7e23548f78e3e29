//! Test helpers: chat-servers and schedulers in this process, sharing a
//! topic and Redis key prefix of the test's own, a fetch load generator,
//! and a redis-server of a test's own.
//!
//! Kafka and Redis addresses come from `KAFKA_BROKERS` and `REDIS_URL`
//! (`make test` starts a Tansu broker and a redis-server and sets them).

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use tokio_util::sync::CancellationToken;

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

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A server running in this process; stopped on drop.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops it gracefully.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
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
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.kafka.brokers = kafka_brokers();
        config.kafka.topic = self.topic.clone();
        config.redis.url = redis_url();
        config.redis.key_prefix = self.prefix.clone();
        config.projector_group = unique("hot-test-projector");
        config.user_messages_per_sec = 0;
        config.user_reactions_per_sec = 0;
        config
    }

    pub async fn chat_server(&self, config: chat_server::Config) -> Running {
        let server = chat_server::Server::bind(config)
            .await
            .expect("chat-server binds");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let run = server.run(shutdown.clone());
        let task = tokio::spawn(async move { run.await.expect("chat-server runs") });
        let running = Running {
            addr,
            shutdown,
            task: Some(task),
        };
        self.until_ready(&running, "/healthz").await;
        running
    }

    pub fn scheduler_config(&self, threshold: u64, cool_down: u64) -> scheduler::Config {
        let mut config = scheduler::Config::parse_from(["scheduler"]);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.redis.url = redis_url();
        config.redis.key_prefix = self.prefix.clone();
        config.hot_threshold = threshold;
        config.cool_down = cool_down;
        config
    }

    pub async fn scheduler(&self, config: scheduler::Config) -> (Running, scheduler::AppState) {
        let scheduler = scheduler::Scheduler::bind(config)
            .await
            .expect("scheduler binds");
        let addr = scheduler.local_addr();
        let state = scheduler.state();
        let shutdown = CancellationToken::new();
        let run = scheduler.run(shutdown.clone());
        let task = tokio::spawn(async move { run.await.expect("scheduler runs") });
        let running = Running {
            addr,
            shutdown,
            task: Some(task),
        };
        self.until_ready(&running, "/healthz").await;
        (running, state)
    }

    async fn until_ready(&self, server: &Running, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.http.get(server.url(path)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "{} not ready", server.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The hot flags held in Redis `redis`: chat id to expiry (ms).
    pub async fn flags(&self, redis: &str) -> HashMap<String, i64> {
        let client = redis::Client::open(redis).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let flat: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{}:hotchats", self.prefix))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .expect("ZRANGE");
        flat.into_iter().map(|(c, s)| (c, s as i64)).collect()
    }
}

/// What one fetch answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub at: Instant,
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

impl Answer {
    /// The answer carries the hot-chat throttle's headers.
    pub fn throttled_path(&self) -> bool {
        self.headers.contains_key("ratelimit-limit")
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
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..workers)
            .map(|_| {
                let (http, url, answers, stop) =
                    (http.clone(), url.clone(), answers.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        if let Ok(response) = http.get(&url).send().await {
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

/// A redis-server of the test's own on a free port, killed on drop.
pub struct OwnRedis {
    pub port: u16,
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = free_port();
        Self::start_on(port)
    }

    pub fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(unique("hot-test-redis"));
        std::fs::create_dir_all(&dir).expect("dir");
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: gone at once, with everything it held.
    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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
