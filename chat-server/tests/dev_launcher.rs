//! `make run`'s launcher, chat-dev, as a user meets it: the whole system up
//! (embedded broker, its own redis-server, chat-server, publish-server,
//! scheduler), a
//! post streamed over SSE, and one Ctrl-C (or the launcher's death) leaving
//! no process behind.
//!
//! chat-dev starts the `publish-server` and `scheduler` binaries beside it,
//! which `cargo test --workspace` builds.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use test_support::free_port;

struct Dev {
    child: Child,
    chat: u16,
    publish: u16,
    scheduler: u16,
    /// chat-dev's log (its stderr), told when a test fails.
    log: std::path::PathBuf,
    _data: TempDir,
}

impl Dev {
    /// chat-dev's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `path` of chat-dev's chat-server.
    fn chat_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.chat)
    }

    /// Posts `text` to `chat` as alice through chat-dev's chat-server;
    /// answers the response as it is.
    async fn post_text(&self, chat: &str, text: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.chat_url(&format!("/api/chats/{chat}/messages")))
            .json(&serde_json::json!({"userId": "alice", "text": text}))
            .send()
            .await
            .expect("POST")
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Starts `make run`'s launcher: on its embedded defaults, or with the
/// seed nodes of a Redis Cluster.
async fn start(cluster: Option<String>) -> Dev {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_chat-dev"));
    for binary in ["publish-server", "scheduler"] {
        assert!(
            exe.with_file_name(binary).exists(),
            "{binary} is not built beside chat-dev: run `cargo build --workspace --bins`"
        );
    }
    let data = std::env::temp_dir().join(format!(
        "chat-dev-test-{}-{}",
        std::process::id(),
        free_port()
    ));
    let (chat, publish, scheduler) = (free_port(), free_port(), free_port());
    std::fs::create_dir_all(&data).expect("data folder");
    let log = std::env::temp_dir().join(format!("chat-dev-test-{}-{chat}.log", std::process::id()));
    let mut command = Command::new(exe);
    match cluster {
        Some(nodes) => command.env("REDIS_CLUSTER_NODES", nodes),
        None => command.env_remove("REDIS_CLUSTER_NODES"),
    };
    let child = command
        .env_remove("KAFKA_BROKERS")
        .env_remove("REDIS_URL")
        .env("CHAT_SERVER_LISTEN", format!("127.0.0.1:{chat}"))
        .env("PUBLISH_SERVER_LISTEN", format!("127.0.0.1:{publish}"))
        .env("SCHEDULER_LISTEN", format!("127.0.0.1:{scheduler}"))
        .env("DEV_REDIS_PORT", free_port().to_string())
        .env("DEV_DATA_DIR", &data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("chat-dev starts");
    let dev = Dev {
        child,
        chat,
        publish,
        scheduler,
        log,
        _data: TempDir(data),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for port in [publish, scheduler, chat] {
        loop {
            let ready = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "port {port} not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    dev
}

/// The children of `pid` (redis-server, publish-server and scheduler).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("children")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn make_run_serves_posts_and_streams_and_one_ctrl_c_stops_everything() {
    let mut dev = start(None).await;
    let helpers = children(dev.child.id());
    assert_eq!(
        helpers.len(),
        3,
        "redis-server, publish-server and scheduler"
    );
    let health: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/healthz", dev.scheduler))
            .await
            .expect("scheduler health")
            .json()
            .await
            .expect("JSON");
    assert_eq!(health["status"], "ok");

    let http = reqwest::Client::new();
    let stream = http
        .get(format!(
            "http://127.0.0.1:{}/api/chats/lobby/events",
            dev.publish
        ))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    let first = body.next().await.expect("retry").expect("bytes");
    assert!(first.starts_with(b"retry:"));
    let posted: serde_json::Value = dev
        .post_text("lobby", "hi")
        .await
        .json()
        .await
        .expect("JSON");
    let id = posted["id"].as_str().expect("id").to_owned();
    let mut seen = String::new();
    let mut decoder = test_support::SseDecoder::default();
    let wanted = format!("id: {id}\nevent: message\n");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(&wanted) {
            let bytes = body.next().await.expect("more").expect("bytes");
            seen.extend(decoder.push(&bytes));
        }
    })
    .await
    .expect("the post arrives on the stream");

    signal(dev.child.id(), "INT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "chat-dev still running 30 s after Ctrl-C; its log:\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "chat-dev exits cleanly: {status}");
    for pid in helpers {
        assert!(!alive(pid), "process {pid} left behind");
    }
}

#[tokio::test]
async fn killing_the_launcher_outright_takes_its_children_along() {
    let mut dev = start(None).await;
    let helpers = children(dev.child.id());
    assert_eq!(helpers.len(), 3);
    dev.child.kill().expect("SIGKILL");
    dev.child.wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(10);
    while helpers.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "children still alive 10 s after the launcher died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `REDIS_CLUSTER_NODES` set, `make run` uses that cluster and starts
/// no redis-server of its own. It runs in `make test`'s pass against a
/// local cluster (scripts/test.sh), where that variable is set.
#[tokio::test]
async fn with_a_redis_cluster_make_run_starts_no_redis_server_of_its_own() {
    let nodes = test_support::redis_cluster_nodes();
    if nodes.is_empty() {
        eprintln!("no REDIS_CLUSTER_NODES: this runs in make test's Redis Cluster pass");
        return;
    }
    let dev = start(Some(nodes.join(","))).await;
    assert_eq!(
        children(dev.child.id()).len(),
        2,
        "publish-server and scheduler only"
    );
    let posted = dev.post_text("dev-cluster", "on the cluster").await;
    assert_eq!(posted.status(), 201);
    let id = posted.json::<serde_json::Value>().await.expect("JSON")["id"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page: serde_json::Value = reqwest::get(dev.chat_url("/api/chats/dev-cluster/messages"))
            .await
            .expect("fetch")
            .json()
            .await
            .expect("JSON");
        if page["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == id))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the post was not fetchable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
