//! The posting side: a paced stream of posts through chat-server or
//! straight to Kafka.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::*;

pub(crate) struct Posted {
    /// Acknowledged posts per chat.
    pub(crate) acknowledged: Vec<u64>,
    pub(crate) failed: u64,
    /// How far the pacing fell behind its schedule at worst.
    pub(crate) behind: Duration,
    /// When the first measured post was due: after the sender's warm-up.
    pub(crate) started: Instant,
}

/// A sender that has posted once: a new producer first fetches metadata
/// and its producer id, and a new HTTP client opens its connections, which
/// is not part of what is measured. The warm-up post goes to a chat nobody
/// subscribes to.
pub(crate) async fn warmed_sender(args: &RunArgs) -> Result<Sender, Failure> {
    let sender = Sender::new(args)?;
    let warm_up = chat_id(&args.shared.chat_prefix, usize::MAX);
    sender
        .send(&warm_up, "warm-up".to_owned())
        .await
        .map_err(|e| format!("warm-up post to {warm_up} failed: {e}"))?;
    Ok(sender)
}

/// Sends `rate` posts per second for `duration` seconds, chats in turn,
/// each chat's posts numbered from 0 in its marker.
pub(crate) async fn post_all(args: &RunArgs, sender: Sender) -> Result<Posted, Failure> {
    let chats = args.shared.chats;
    let total = args.rate * args.duration;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..chats).map(|_| AtomicU64::new(0)).collect());
    let failed = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut behind = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..total {
        let due = start + Duration::from_nanos(k * 1_000_000_000 / args.rate);
        tokio::time::sleep_until(due).await;
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(Failure::from)?;
        behind = behind.max(tokio::time::Instant::now().saturating_duration_since(due));
        let chat = (k % chats as u64) as usize;
        // Numbered over all chats: a stream of several chats tells each
        // post apart.
        let seq = k;
        let sender = sender.clone();
        let acknowledged = acknowledged.clone();
        let failed = failed.clone();
        let chat_name = chat_id(&args.shared.chat_prefix, chat);
        let size = args.size;
        tasks.spawn(async move {
            let mut text = sse::marker(seq, now_micros());
            text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
            match sender.send(&chat_name, text).await {
                Ok(()) => acknowledged[chat].fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("sse-bench: post to {chat_name} failed: {error}");
                    }
                    0
                }
            };
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(Posted {
        acknowledged: acknowledged
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
        failed: failed.load(Ordering::Relaxed),
        behind,
        started: start.into_std(),
    })
}

#[derive(Clone)]
pub(crate) enum Sender {
    ChatServer {
        http: reqwest::Client,
        url: Arc<str>,
    },
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        topic: Arc<str>,
    },
    /// nchan, Pushpin or Centrifugo: an HTTP POST per message.
    Peer {
        http: reqwest::Client,
        url: Arc<str>,
        kind: Publish,
        api_key: Arc<str>,
    },
}

/// An HTTP client that keeps up to `connections` connections open.
fn client(connections: usize) -> Result<reqwest::Client, Failure> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(connections)
        .build()?)
}

impl Sender {
    fn new(args: &RunArgs) -> Result<Self, Failure> {
        Ok(match args.publish {
            Publish::ChatServer => Sender::ChatServer {
                http: client(args.max_in_flight)?,
                url: args.post_url.as_str().into(),
            },
            Publish::Nchan | Publish::Pushpin | Publish::Centrifugo => Sender::Peer {
                http: client(args.max_in_flight)?,
                url: args.publish_url.as_str().into(),
                kind: args.publish,
                api_key: args.publish_api_key.as_str().into(),
            },
            Publish::Kafka => Sender::Kafka {
                producer: rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &args.kafka_brokers)
                    .set("enable.idempotence", "true")
                    // Where chat-server places a chat (`names::partition_of`).
                    .set("partitioner", "consistent_random")
                    .set("linger.ms", "1")
                    .set("message.timeout.ms", "10000")
                    .create()
                    .map_err(|e| format!("Kafka producer: {e}"))?,
                topic: args.kafka_topic.as_str().into(),
            },
        })
    }

    async fn send(&self, chat: &str, text: String) -> Result<(), Failure> {
        match self {
            Sender::ChatServer { http, url } => {
                let response = http
                    .post(url.replace("{chat}", chat))
                    .json(&serde_json::json!({"userId": "bench", "text": text}))
                    .send()
                    .await
                    .map_err(Failure::from)?;
                if response.status() == 201 {
                    Ok(())
                } else {
                    Err(format!("answered {}", response.status()).into())
                }
            }
            Sender::Peer {
                http,
                url,
                kind,
                api_key,
            } => {
                let request = match kind {
                    Publish::Pushpin => {
                        let content = format!("event: message\ndata: {text}\n\n");
                        http.post(url.as_ref()).json(&serde_json::json!({
                            "items": [{"channel": chat, "formats": {"http-stream": {"content": content}}}]
                        }))
                    }
                    Publish::Centrifugo => http
                        .post(url.as_ref())
                        .header("X-API-Key", api_key.as_ref())
                        .json(&serde_json::json!({"channel": chat, "data": {"text": text}})),
                    _ => http.post(url.replace("{chat}", chat)).body(text),
                };
                let response = request.send().await.map_err(Failure::from)?;
                if !response.status().is_success() {
                    return Err(format!("answered {}", response.status()).into());
                }
                // Centrifugo answers 200 with an `error` member on failure.
                if *kind == Publish::Centrifugo {
                    let body: serde_json::Value = response.json().await.map_err(Failure::from)?;
                    if !body["error"].is_null() {
                        return Err(format!("answered {}", body["error"]).into());
                    }
                }
                Ok(())
            }
            Sender::Kafka { producer, topic } => {
                let event = chat_core::event::ChatEvent::Message(chat_core::event::MessagePosted {
                    chat_id: chat.parse().map_err(|e| format!("chat id {chat}: {e}"))?,
                    user_id: "bench".parse().map_err(|e| format!("user id: {e}"))?,
                    text,
                    client_message_id: None,
                    created_at: chrono::Utc::now(),
                });
                let payload = event.to_json();
                producer
                    .send(
                        rdkafka::producer::FutureRecord::to(topic)
                            .key(chat)
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e.into())
            }
        }
    }
}
