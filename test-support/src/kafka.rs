//! Apache Kafka of a test's own, through `scripts/kafka.sh` (KRaft, every
//! node broker and controller, on free loopback ports, with the jars that
//! `scripts/ensure.sh kafka` fetched): one node for a test that stops its
//! broker, three for the fault suite.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::OwnProcess;

/// The workspace's root folder (the scripts live in its `scripts/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `scripts/<name>` of the workspace.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("scripts").join(name)
}

/// A cluster's nodes, configured and formatted in `dir` but not started:
/// how to start each is [`KafkaNodes::command`].
#[derive(Debug, Clone)]
pub struct KafkaNodes {
    pub dir: PathBuf,
    /// Each node's client port, node `i + 1` at index `i`.
    pub ports: Vec<u16>,
}

impl KafkaNodes {
    /// Writes the properties of `nodes` nodes (1 or 3) on free ports into
    /// `dir` and formats their storage; `extra` (`key=value`) goes into
    /// every node's properties.
    pub fn prepare(dir: &Path, nodes: usize, extra: &[&str]) -> Self {
        crate::run_ok(
            Command::new(script("kafka.sh"))
                .arg("prepare")
                .arg(dir)
                .arg(nodes.to_string())
                .args(extra)
                .stdin(Stdio::null()),
            "scripts/kafka.sh prepare (with the jars scripts/ensure.sh kafka fetches)",
        );
        let ports = (1..=nodes)
            .map(|i| {
                std::fs::read_to_string(dir.join(format!("node-{i}.port")))
                    .expect("node port file")
                    .trim()
                    .parse()
                    .expect("node port")
            })
            .collect();
        Self {
            dir: dir.to_path_buf(),
            ports,
        }
    }

    /// The bootstrap servers: every node.
    pub fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The program and arguments that run node `node` (1-based) in the
    /// foreground; the process is the broker's JVM itself.
    pub fn command(&self, node: usize) -> (PathBuf, Vec<String>) {
        (
            script("kafka.sh"),
            vec![
                "node".into(),
                self.dir.display().to_string(),
                node.to_string(),
            ],
        )
    }

    /// Waits until the node on `port` lists at least `brokers` live brokers
    /// (`limit` at most).
    pub async fn until_brokers(&self, port: u16, brokers: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let listed = metadata_tool(port, &[&brokers.to_string()]).await;
            if listed.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Kafka on port {port} did not list {brokers} live brokers within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Each partition of `topic` as (partition, leader node, in-sync
    /// replicas), asked of the node on `port`; `None` when it cannot say.
    pub async fn leaders(&self, port: u16, topic: &str) -> Option<Vec<(i32, i32, usize)>> {
        let text = metadata_tool(port, &["--leaders", topic]).await?;
        text.lines()
            .map(|line| {
                let mut fields = line.split_whitespace().map(str::parse::<i64>);
                let (Some(Ok(p)), Some(Ok(l)), Some(Ok(isr))) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    return None;
                };
                Some((p as i32, l as i32, isr as usize))
            })
            .collect()
    }

    /// The node that coordinates consumer group `group`, asked of the node
    /// on `port`.
    pub async fn coordinator(&self, port: u16, group: &str) -> Option<i32> {
        metadata_tool(port, &["--coordinator", group])
            .await?
            .trim()
            .parse()
            .ok()
    }
}

/// What `scripts/kafka-metadata.py 127.0.0.1:port args...` prints, if it
/// succeeds.
async fn metadata_tool(port: u16, args: &[&str]) -> Option<String> {
    let output = tokio::process::Command::new("python3")
        .arg(script("kafka-metadata.py"))
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A one-node Apache Kafka of the test's own, killed and removed on drop.
#[derive(Debug)]
pub struct OwnKafka {
    pub brokers: String,
    nodes: KafkaNodes,
    process: OwnProcess,
}

impl OwnKafka {
    /// Starts one node and waits until it serves metadata.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(crate::unique("test-kafka"));
        let nodes = KafkaNodes::prepare(&dir, 1, &[]);
        let (program, args) = nodes.command(1);
        let log = std::fs::File::create(dir.join("node-1.log")).expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("scripts/kafka.sh node starts");
        let kafka = Self {
            brokers: nodes.bootstrap(),
            process: OwnProcess {
                dir,
                child: Some(child),
            },
            nodes,
        };
        kafka
            .nodes
            .until_brokers(kafka.nodes.ports[0], 1, Duration::from_secs(120))
            .await;
        kafka
    }

    /// Kills the broker (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
