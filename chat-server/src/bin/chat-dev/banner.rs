//! What the launcher prints once everything is ready: where each part
//! listens, and three commands to try.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The banner of a running system.
pub(super) struct Banner<'a> {
    pub chat: SocketAddr,
    pub publish: SocketAddr,
    pub scheduler: SocketAddr,
    pub config: &'a chat_server::Config,
    /// The Kafka is the embedded mock broker (its events live until exit).
    pub embedded_kafka: bool,
    /// The local redis-server's folder, when this launcher started it.
    pub local_redis: Option<PathBuf>,
}

impl Banner<'_> {
    /// Where each part is, one row each: name, address, a note.
    fn rows(&self) -> Vec<(&'static str, String, String)> {
        let config = self.config;
        let index = config.web.web_dir.join("index.html");
        let web_note = if index.is_file() {
            String::new()
        } else {
            format!("(not built: no {})", index.display())
        };
        let kafka_note = if self.embedded_kafka {
            "(embedded mock broker: events live until exit)".to_owned()
        } else {
            String::new()
        };
        let redis = if config.redis.is_cluster() {
            format!("cluster {}", config.redis.cluster_nodes.join(","))
        } else {
            config.redis.url.clone()
        };
        let redis_note = self
            .local_redis
            .as_ref()
            .map(|dir| format!("(local redis-server, files in {})", dir.display()))
            .unwrap_or_default();
        vec![
            ("web UI", format!("http://{}/", self.chat), web_note),
            (
                "chat-server",
                format!("http://{}", self.chat),
                String::new(),
            ),
            (
                "publish-server",
                format!("http://{}", self.publish),
                String::new(),
            ),
            (
                "scheduler",
                format!("http://{}/metrics", self.scheduler),
                String::new(),
            ),
            (
                "Kafka",
                format!("{}  topic {}", config.kafka.brokers, config.kafka.topic),
                kafka_note,
            ),
            ("Redis", redis, redis_note),
        ]
    }
}

impl fmt::Display for Banner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nchat backend running:")?;
        for (name, place, note) in self.rows() {
            if note.is_empty() {
                writeln!(f, "  {name:<15} {place}")?;
            } else {
                writeln!(f, "  {name:<15} {place}  {note}")?;
            }
        }
        let (chat, publish) = (self.chat, self.publish);
        writeln!(f, "\nTry:")?;
        writeln!(f, "  curl -N http://{publish}/api/chats/lobby/events")?;
        writeln!(
            f,
            "  curl -X POST http://{chat}/api/chats/lobby/messages \
             -H 'content-type: application/json' -d '{{\"userId\":\"alice\",\"text\":\"hi\"}}'"
        )?;
        writeln!(f, "  curl http://{chat}/api/chats/lobby/messages")?;
        writeln!(f, "  API description: http://{chat}/api/openapi.json")?;
        writeln!(f, "\nPress Ctrl-C to stop.")
    }
}
