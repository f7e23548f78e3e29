//! The fault suite's harness: the whole system in processes of its own on
//! 127.0.0.1 (Tansu, redis-server with an append-only file, two chat-servers, two publish-servers and the
//! scheduler), posting clients and SSE subscribers that run throughout, and
//! the final check: every message that got a 201 reached every subscriber
//! of its chat exactly once, in id order, and is fetchable.
//!
//! The server binaries are the ones `cargo build --bins` leaves beside the
//! test binary (`make test` builds them first).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use test_support::{SseBlock, eventually, free_port, unique};

/// A binary of the workspace, built beside the running test binary.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (make test does)",
        bin.display()
    );
    bin
}

/// How a service tells that it is up.
#[derive(Debug, Clone, Copy)]
enum Ready {
    /// It accepts TCP connections.
    Tcp,
    /// `GET /healthz` answers 200.
    Health,
}

/// One process of the system, restartable on the same port and data.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub port: u16,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready: Ready,
    /// The cluster's data folder, the process's working folder.
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the process (again) and waits until it is up (30 s at most).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program.display()));
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = match self.ready {
                Ready::Tcp => tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok(),
                Ready::Health => http
                    .get(format!("{}/healthz", self.base()))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200),
            };
            if up {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status}; log: {}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(Instant::now() < deadline, "{} did not come up", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash would: nothing runs on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a deploy would, and waits until it is gone (30 s).
    pub async fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets (or overrides) environment for the next start.
    pub fn add_env(&mut self, env: &[(String, String)]) {
        for (key, value) in env {
            self.env.retain(|(k, _)| k != key);
            self.env.push((key.clone(), value.clone()));
        }
    }

    /// Freezes the process (SIGSTOP): it holds its sockets and answers
    /// nothing, as a hung or partitioned host would.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.pid().to_string()])
            .status();
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Resident memory not backed by a file (heaps, stacks) in KiB; the
    /// rest of the RSS is the mapped binary and libraries.
    pub fn rss_anon_kib(&self) -> u64 {
        self.status_kib("RssAnon")
    }

    /// A `kB` field of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in {status}"))
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("fd folder")
            .count()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the broker keeps its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BrokerStorage {
    /// In the broker's own memory (Tansu's `memory://` engine): it dies
    /// with the broker.
    #[default]
    Memory,
    /// In an S3 bucket (Tansu's `s3://` engine, the same engine as memory
    /// over another object store), served by moto's S3 server in a process
    /// of its own: the broker can be killed and restarted with its log kept.
    S3,
}

/// Settings of a cluster.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the broker keeps its log.
    pub broker_storage: BrokerStorage,
    /// Extra environment for both chat-servers.
    pub chat_env: Vec<(String, String)>,
    /// Extra environment for both publish-servers.
    pub publish_env: Vec<(String, String)>,
}

/// The whole system. Dropping it kills every process and removes its data.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub redis: Service,
    /// The S3 server holding the broker's log, with `BrokerStorage::S3`.
    pub s3: Option<Service>,
    pub kafka: Service,
    pub chat: Vec<Service>,
    pub publish: Vec<Service>,
    pub scheduler: Service,
    pub http: reqwest::Client,
}

impl Cluster {
    pub async fn start(options: Options) -> Self {
        let dir = std::env::temp_dir().join(unique("faults"));
        std::fs::create_dir_all(&dir).expect("data folder");
        let service = |name: &str, program: PathBuf, ready| Service {
            name: name.to_owned(),
            port: free_port(),
            program,
            args: Vec::new(),
            env: vec![("RUST_LOG".into(), "warn".into())],
            ready,
            dir: dir.clone(),
            log: dir.join(format!("{name}.log")),
            child: None,
        };

        let mut redis = service("redis", "redis-server".into(), Ready::Tcp);
        redis.args = vec![
            "--port".into(),
            redis.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "always".into(),
            "--dir".into(),
            dir.display().to_string(),
        ];
        redis.start().await;

        let tansu = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let mut kafka = service("tansu", tansu.into(), Ready::Tcp);
        let mut s3 = None;
        let storage = match options.broker_storage {
            BrokerStorage::Memory => "memory://tansu/",
            BrokerStorage::S3 => {
                let mut server = service("s3", "python3".into(), Ready::Tcp);
                server.args = ["-m", "moto.server", "-H", "127.0.0.1", "-p"]
                    .map(String::from)
                    .to_vec();
                server.args.push(server.port.to_string());
                server.start().await;
                let bucket = format!("{}/tansu", server.base());
                let created = reqwest::Client::new()
                    .put(&bucket)
                    .send()
                    .await
                    .expect("S3 server answers");
                assert!(created.status().is_success(), "bucket: {created:?}");
                kafka.env.extend(
                    [
                        ("AWS_ACCESS_KEY_ID", "faults".to_owned()),
                        ("AWS_SECRET_ACCESS_KEY", "faults".to_owned()),
                        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
                        ("AWS_ENDPOINT", server.base()),
                        ("AWS_ALLOW_HTTP", "true".to_owned()),
                    ]
                    .map(|(k, v)| (k.to_owned(), v)),
                );
                s3 = Some(server);
                "s3://tansu/"
            }
        };
        let listener = format!("tcp://127.0.0.1:{}", kafka.port);
        kafka.args = vec![
            "broker".into(),
            "--listener-url".into(),
            listener.clone(),
            "--advertised-listener-url".into(),
            listener,
            "--storage-engine".into(),
            storage.into(),
        ];
        kafka.start().await;

        let brokers = format!("127.0.0.1:{}", kafka.port);
        let redis_url = format!("redis://127.0.0.1:{}", redis.port);
        let common = [
            ("KAFKA_BROKERS", brokers),
            ("KAFKA_TOPIC", "chat-events".to_owned()),
            ("REDIS_URL", redis_url),
            ("REDIS_KEY_PREFIX", "faults".to_owned()),
        ];
        let mut chat = Vec::new();
        for i in 0..2 {
            let mut s = service(
                &format!("chat-server-{i}"),
                workspace_bin("chat-server"),
                Ready::Health,
            );
            s.env
                .extend(common.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            s.env.extend(
                [
                    ("CHAT_SERVER_LISTEN", format!("127.0.0.1:{}", s.port)),
                    ("KAFKA_CREATE_TOPIC", "true".to_owned()),
                    ("KAFKA_TOPIC_PARTITIONS", "3".to_owned()),
                    ("KAFKA_DELIVERY_TIMEOUT_MS", "3000".to_owned()),
                    ("USER_MESSAGES_PER_SEC", "0".to_owned()),
                    ("USER_REACTIONS_PER_SEC", "0".to_owned()),
                    ("EXPECTED_INSTANCES", "2".to_owned()),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
            s.env.extend(options.chat_env.iter().cloned());
            s.start().await;
            chat.push(s);
        }
        let mut publish = Vec::new();
        for i in 0..2 {
            let mut s = service(
                &format!("publish-server-{i}"),
                workspace_bin("publish-server"),
                Ready::Health,
            );
            s.env
                .extend(common.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            s.env.extend(
                [
                    ("PUBLISH_SERVER_LISTEN", format!("127.0.0.1:{}", s.port)),
                    ("MAX_STREAMS_PER_ADDRESS", "0".to_owned()),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
            s.env.extend(options.publish_env.iter().cloned());
            s.start().await;
            publish.push(s);
        }
        let mut scheduler = service("scheduler", workspace_bin("scheduler"), Ready::Health);
        scheduler
            .env
            .extend(common.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        scheduler.env.push((
            "SCHEDULER_LISTEN".into(),
            format!("127.0.0.1:{}", scheduler.port),
        ));
        scheduler.start().await;

        let cluster = Self {
            dir,
            redis,
            s3,
            kafka,
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

    /// Every message of `chat` through the fetch API, oldest first: the
    /// latest page, then older pages with `before`.
    pub async fn fetch_all(&self, chat: &str) -> Vec<(String, String)> {
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
            let messages: Vec<(String, String)> = page["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| {
                    (
                        m["id"].as_str().expect("id").to_owned(),
                        m["text"].as_str().expect("text").to_owned(),
                    )
                })
                .collect();
            before = messages.first().map(|(id, _)| id.clone());
            let older = page["hasOlder"] == true;
            pages.push(messages);
            if !older || before.is_none() {
                break;
            }
        }
        pages.into_iter().rev().flatten().collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.chat.iter_mut().chain(&mut self.publish).chain([
            &mut self.scheduler,
            &mut self.kafka,
            &mut self.redis,
        ]) {
            s.kill();
        }
        if let Some(s3) = &mut self.s3 {
            s3.kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a POST ended as, counted by kind.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub created: AtomicU64,
    pub unavailable: AtomicU64,
    pub conflict: AtomicU64,
    pub other_status: AtomicU64,
    pub transport_error: AtomicU64,
    pub retried_then_created: AtomicU64,
}

impl Outcomes {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "201 {} (after a retry {}), 503 {}, 409 {}, other status {}, no answer {}",
            Self::get(&self.created),
            Self::get(&self.retried_then_created),
            Self::get(&self.unavailable),
            Self::get(&self.conflict),
            Self::get(&self.other_status),
            Self::get(&self.transport_error),
        )
    }
}

/// A message that got its 201.
#[derive(Debug, Clone)]
pub struct Acked {
    pub id: String,
    pub text: String,
    pub at: Instant,
}

/// What one subscriber received.
#[derive(Debug, Default)]
pub struct Received {
    /// Messages in arrival order: (id, text).
    pub messages: Vec<(String, String)>,
    pub resets: u64,
    pub reconnects: u64,
}

/// Posting clients and SSE subscribers running against a cluster.
#[derive(Debug)]
pub struct Load {
    pub chats: Vec<String>,
    pub acked: Arc<Mutex<HashMap<String, Vec<Acked>>>>,
    pub outcomes: Arc<Outcomes>,
    /// Per chat, one entry per subscriber.
    pub received: HashMap<String, Vec<Arc<Mutex<Received>>>>,
    stop_posting: CancellationToken,
    stop_streaming: CancellationToken,
    posters: Vec<tokio::task::JoinHandle<()>>,
    subscribers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `posters` clients each post one message every `every` round-robin
    /// over `chats` chats and both chat-servers, retrying a refused post
    /// with its `clientMessageId`; `per_chat` subscribers per chat stream
    /// from the publish-servers, reconnecting with `Last-Event-ID` (to the
    /// other server) when a stream ends. Returns once every subscriber is
    /// connected.
    pub async fn start(
        cluster: &Cluster,
        chats: usize,
        per_chat: usize,
        posters: usize,
        every: Duration,
    ) -> Self {
        Self::start_with(cluster, chats, per_chat, posters, every, true).await
    }

    /// As `start`; without `client_ids` the posts carry no
    /// `clientMessageId` and a refused post is not retried (a retry could
    /// store it twice).
    pub async fn start_with(
        cluster: &Cluster,
        chats: usize,
        per_chat: usize,
        posters: usize,
        every: Duration,
        client_ids: bool,
    ) -> Self {
        let tag = unique("c");
        let chats: Vec<String> = (0..chats)
            .map(|i| format!("{}-{i}", tag.replace(['.', ':'], "-")))
            .collect();
        let stop_posting = CancellationToken::new();
        let stop_streaming = CancellationToken::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        let stream_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let mut received = HashMap::new();
        let mut subscribers = Vec::new();
        let connected = Arc::new(AtomicU64::new(0));
        let publish = cluster.publish_bases();
        for chat in &chats {
            let mut list = Vec::new();
            for i in 0..per_chat {
                let got = Arc::new(Mutex::new(Received::default()));
                list.push(got.clone());
                subscribers.push(tokio::spawn(subscribe(
                    stream_http.clone(),
                    publish.clone(),
                    chat.clone(),
                    i,
                    got,
                    connected.clone(),
                    stop_streaming.clone(),
                )));
            }
            received.insert(chat.clone(), list);
        }
        let want = (chats.len() * per_chat) as u64;
        eventually(
            Duration::from_secs(60),
            "every subscriber connected",
            || {
                let connected = connected.clone();
                async move { (connected.load(Ordering::Relaxed) >= want).then_some(()) }
            },
        )
        .await;

        let acked = Arc::new(Mutex::new(HashMap::new()));
        let outcomes = Arc::new(Outcomes::default());
        let bases = cluster.chat_bases();
        let posters = (0..posters)
            .map(|i| {
                tokio::spawn(post(
                    http.clone(),
                    bases.clone(),
                    chats.clone(),
                    format!("{tag}-{i}"),
                    i,
                    every,
                    client_ids,
                    acked.clone(),
                    outcomes.clone(),
                    stop_posting.clone(),
                ))
            })
            .collect();
        Self {
            chats,
            acked,
            outcomes,
            received,
            stop_posting,
            stop_streaming,
            posters,
            subscribers,
        }
    }

    /// Messages acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked
            .lock()
            .expect("acked")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Stops posting (posts in flight finish, retries included), then
    /// waits until every subscriber holds every acknowledged message of
    /// its chat, or `limit` passed; then stops the subscribers.
    pub async fn finish(mut self, limit: Duration) -> Report {
        self.stop_posting.cancel();
        for poster in self.posters.drain(..) {
            poster.await.expect("poster");
        }
        let acked = self.acked.lock().expect("acked").clone();
        let deadline = Instant::now() + limit;
        let drained_at = loop {
            let complete = self.received.iter().all(|(chat, subs)| {
                let want: HashSet<&str> = acked
                    .get(chat)
                    .map(|a| a.iter().map(|m| m.id.as_str()).collect())
                    .unwrap_or_default();
                subs.iter().all(|got| {
                    let got = got.lock().expect("received");
                    let have: HashSet<&str> =
                        got.messages.iter().map(|(id, _)| id.as_str()).collect();
                    want.is_subset(&have)
                })
            });
            if complete || Instant::now() >= deadline {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.stop_streaming.cancel();
        for s in self.subscribers.drain(..) {
            let _ = s.await;
        }
        let received = self
            .received
            .iter()
            .map(|(chat, subs)| {
                (
                    chat.clone(),
                    subs.iter()
                        .map(|r| std::mem::take(&mut *r.lock().expect("received")))
                        .collect(),
                )
            })
            .collect();
        Report {
            chats: self.chats.clone(),
            acked,
            received,
            outcomes: self.outcomes.clone(),
            drained_at,
        }
    }
}

/// What the load saw, to check at the end.
#[derive(Debug)]
pub struct Report {
    pub chats: Vec<String>,
    pub acked: HashMap<String, Vec<Acked>>,
    pub received: HashMap<String, Vec<Received>>,
    pub outcomes: Arc<Outcomes>,
    pub drained_at: Instant,
}

/// An id's position in its chat: the offset (hexadecimal) after the
/// partition.
fn offset_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|o| u64::from_str_radix(o, 16).ok())
        .unwrap_or_else(|| panic!("message id {id:?} has no offset"))
}

impl Report {
    pub fn acked_total(&self) -> usize {
        self.acked.values().map(Vec::len).sum()
    }

    pub fn resets(&self) -> u64 {
        self.received.values().flatten().map(|r| r.resets).sum()
    }

    pub fn reconnects(&self) -> u64 {
        self.received.values().flatten().map(|r| r.reconnects).sum()
    }

    /// Checks that every acknowledged message reached every subscriber of
    /// its chat exactly once and in id order, and that the fetch API holds
    /// each exactly once. Panics with what went wrong; answers a one-line
    /// summary (acknowledged, delivered, lost, duplicated).
    pub async fn check(&self, cluster: &Cluster) -> String {
        self.check_with(Some(cluster)).await
    }

    /// As `check`, without the fetch API: for a broker that died for good
    /// before the projector had read everything (only a broker that comes
    /// back lets the read model catch up).
    pub async fn check_streams(&self) -> String {
        self.check_with(None).await
    }

    async fn check_with(&self, cluster: Option<&Cluster>) -> String {
        let mut delivered = 0usize;
        let mut problems = Vec::new();
        for chat in &self.chats {
            let acked = self.acked.get(chat).cloned().unwrap_or_default();
            let acked_ids: HashSet<&str> = acked.iter().map(|m| m.id.as_str()).collect();
            // A text is posted once (its retries share its clientMessageId),
            // so two ids for one text are a duplicate.
            for (i, got) in self.received[chat].iter().enumerate() {
                let mut seen_ids = HashSet::new();
                let mut seen_texts: HashMap<&str, &str> = HashMap::new();
                let mut last = None;
                for (id, text) in &got.messages {
                    if !seen_ids.insert(id.as_str()) {
                        problems.push(format!("{chat} subscriber {i}: {id} twice"));
                    }
                    if let Some(other) = seen_texts.insert(text, id)
                        && other != id
                    {
                        problems.push(format!(
                            "{chat} subscriber {i}: {text:?} as {other} and as {id}"
                        ));
                    }
                    let offset = offset_of(id);
                    if last.is_some_and(|l| offset <= l) {
                        problems.push(format!("{chat} subscriber {i}: {id} out of order"));
                    }
                    last = Some(offset);
                }
                let missing: Vec<&&str> = acked_ids
                    .iter()
                    .filter(|id| !seen_ids.contains(**id))
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "{chat} subscriber {i} is missing {} acknowledged messages, e.g. {:?}",
                        missing.len(),
                        missing.iter().take(3).collect::<Vec<_>>()
                    ));
                }
                delivered += acked_ids
                    .iter()
                    .filter(|id| seen_ids.contains(**id))
                    .count();
            }
            let Some(cluster) = cluster else { continue };
            // The projector may still be catching up (a member that died
            // hands its partitions over after its session times out).
            let deadline = Instant::now() + Duration::from_secs(60);
            let fetched = loop {
                let fetched = cluster.fetch_all(chat).await;
                let ids: HashSet<&str> = fetched.iter().map(|(id, _)| id.as_str()).collect();
                if acked_ids.is_subset(&ids) || Instant::now() >= deadline {
                    break fetched;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let fetched_ids: HashSet<&str> = fetched.iter().map(|(id, _)| id.as_str()).collect();
            let mut texts = HashSet::new();
            for (id, text) in &fetched {
                if !texts.insert(text.as_str()) {
                    problems.push(format!(
                        "{chat}: fetch holds {text:?} twice (again as {id})"
                    ));
                }
            }
            let unfetchable = acked_ids
                .iter()
                .filter(|id| !fetched_ids.contains(**id))
                .count();
            if unfetchable > 0 {
                problems.push(format!(
                    "{chat}: {unfetchable} acknowledged messages not fetchable"
                ));
            }
        }
        let subscribers: usize =
            self.received.values().map(Vec::len).sum::<usize>() / self.chats.len().max(1);
        let expected = self.acked_total() * subscribers;
        let summary = format!(
            "acknowledged {}, delivered {delivered} of {expected} ({} subscribers per chat), lost {}, resets {}, reconnects {}; posts: {}",
            self.acked_total(),
            subscribers,
            expected - delivered,
            self.resets(),
            self.reconnects(),
            self.outcomes.summary()
        );
        assert!(
            problems.is_empty(),
            "{summary}\n{}",
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        summary
    }
}

#[allow(clippy::too_many_arguments)]
async fn post(
    http: reqwest::Client,
    bases: Vec<String>,
    chats: Vec<String>,
    tag: String,
    poster: usize,
    every: Duration,
    client_ids: bool,
    acked: Arc<Mutex<HashMap<String, Vec<Acked>>>>,
    outcomes: Arc<Outcomes>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let chat = &chats[(n as usize + poster) % chats.len()];
        let text = format!("{tag}-{n}");
        let mut body = json!({"userId": format!("poster-{poster}"), "text": text});
        if client_ids {
            body["clientMessageId"] = json!(text);
        }
        // A refused post is retried with its clientMessageId, on the other
        // server, for up to 30 s; it is given up only then.
        let give_up = Instant::now()
            + if client_ids {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            };
        for attempt in 0usize.. {
            let base = &bases[(n as usize + attempt) % bases.len()];
            let answer = http
                .post(format!("{base}/api/chats/{chat}/messages"))
                .json(&body)
                .send()
                .await;
            let counter = match &answer {
                Ok(r) if r.status() == 201 || r.status() == 200 => None,
                Ok(r) if r.status() == 503 => Some(&outcomes.unavailable),
                Ok(r) if r.status() == 409 => Some(&outcomes.conflict),
                Ok(_) => Some(&outcomes.other_status),
                Err(_) => Some(&outcomes.transport_error),
            };
            match counter {
                None => {
                    let stored: Value = answer.expect("answer").json().await.unwrap_or(Value::Null);
                    if let Some(id) = stored["id"].as_str() {
                        outcomes.created.fetch_add(1, Ordering::Relaxed);
                        if attempt > 0 {
                            outcomes
                                .retried_then_created
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        acked
                            .lock()
                            .expect("acked")
                            .entry(chat.clone())
                            .or_default()
                            .push(Acked {
                                id: id.to_owned(),
                                text: text.clone(),
                                at: Instant::now(),
                            });
                    }
                    break;
                }
                Some(counter) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() >= give_up {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

async fn subscribe(
    http: reqwest::Client,
    bases: Vec<String>,
    chat: String,
    index: usize,
    got: Arc<Mutex<Received>>,
    connected: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut last_id: Option<String> = None;
    let mut first = true;
    for attempt in index.. {
        if stop.is_cancelled() {
            return;
        }
        let base = &bases[attempt % bases.len()];
        let mut request = http.get(format!("{base}/api/chats/{chat}/events"));
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::select! {
            () = stop.cancelled() => return,
            r = request.send() => r,
        };
        match response {
            Ok(r) if r.status() == 200 => {
                if first {
                    connected.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                let mut body = r.bytes_stream();
                let mut buffer = Vec::new();
                loop {
                    let chunk = tokio::select! {
                        () = stop.cancelled() => return,
                        c = body.next() => c,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    buffer.extend_from_slice(&chunk);
                    while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                        let block: Vec<u8> = buffer.drain(..end + 2).collect();
                        let SseBlock { id, event, data } =
                            SseBlock::parse(&String::from_utf8_lossy(&block));
                        let data = data.and_then(|d| serde_json::from_str::<Value>(&d).ok());
                        let mut got = got.lock().expect("received");
                        match event.as_deref() {
                            Some("message") => {
                                let text = data
                                    .as_ref()
                                    .and_then(|d| d["text"].as_str())
                                    .unwrap_or_default()
                                    .to_owned();
                                got.messages.push((id.clone().unwrap_or_default(), text));
                            }
                            Some("reset") => {
                                got.resets += 1;
                            }
                            _ => {}
                        }
                        if id.is_some() {
                            last_id = id;
                        }
                    }
                }
            }
            _ => {}
        }
        got.lock().expect("received").reconnects += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
