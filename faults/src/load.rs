//! The load that runs throughout a scenario: posting clients and SSE
//! subscribers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clients::{post, subscribe};
use crate::*;

/// Posts `body` to `chat` through `base` until it answers 201 (60 s at
/// most), as a client retrying with its `clientMessageId` would.
pub async fn post_until_created(http: &reqwest::Client, base: &str, chat: &str, body: &Value) {
    eventually(Duration::from_secs(60), "a post acknowledged", || async {
        let r = http
            .post(format!("{base}/api/chats/{chat}/messages"))
            .json(body)
            .send()
            .await
            .ok()?;
        (r.status() == 201).then_some(())
    })
    .await
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
    /// How many posts ended as `counter` says.
    pub fn get(counter: &AtomicU64) -> u64 {
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

/// One POST of a message, whatever it answered: for the latency during a
/// fault.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub at: Instant,
    pub took: Duration,
    /// The status; 0 when no answer came.
    pub status: u16,
    /// The answer said when to retry (`Retry-After`).
    pub retry_after: bool,
}

/// The reactions members tried on one message, and those acknowledged.
#[derive(Debug, Clone, Default)]
pub struct Reacted {
    pub chat: String,
    /// Users who tried to add 👍, each once (retries included).
    pub tried: HashSet<String>,
    /// Users whose add answered 2xx.
    pub acked: HashSet<String>,
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
    /// Every POST of a message, in the order answered.
    pub attempts: Arc<Mutex<Vec<Attempt>>>,
    /// Per message id, the reactions tried on it (see [`Load::react`]).
    pub reactions: Arc<Mutex<HashMap<String, Reacted>>>,
    /// Per chat, one entry per subscriber.
    pub received: HashMap<String, Vec<Arc<Mutex<Received>>>>,
    http: reqwest::Client,
    bases: Vec<String>,
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
        let attempts = Arc::new(Mutex::new(Vec::new()));
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
                    attempts.clone(),
                    stop_posting.clone(),
                ))
            })
            .collect();
        Self {
            chats,
            acked,
            outcomes,
            attempts,
            reactions: Arc::default(),
            received,
            http,
            bases,
            stop_posting,
            stop_streaming,
            posters,
            subscribers,
        }
    }

    /// Adds `reactors` members who each, every `every`, add 👍 as a new
    /// user to a message acknowledged so far (the newest of a chat taken in
    /// turn), retrying a refused add as a client would for up to 30 s. They
    /// stop with the posters.
    pub fn react(&mut self, reactors: usize, every: Duration) {
        for r in 0..reactors {
            let (http, bases, acked, reactions, stop) = (
                self.http.clone(),
                self.bases.clone(),
                self.acked.clone(),
                self.reactions.clone(),
                self.stop_posting.clone(),
            );
            let chats = self.chats.clone();
            self.posters.push(tokio::spawn(async move {
                let mut beat = chat_core::shutdown::Ticks::every(every, &stop);
                for n in 0usize.. {
                    if !beat.next().await {
                        return;
                    }
                    let chat = &chats[(n + r) % chats.len()];
                    let Some(message) = acked
                        .lock()
                        .expect("acked")
                        .get(chat)
                        .and_then(|m| m.last().map(|m| m.id.clone()))
                    else {
                        continue;
                    };
                    let user = format!("reactor-{r}-{n}");
                    reactions
                        .lock()
                        .expect("reactions")
                        .entry(message.clone())
                        .or_insert_with(|| Reacted {
                            chat: chat.clone(),
                            ..Reacted::default()
                        })
                        .tried
                        .insert(user.clone());
                    let body = json!({"userId": user, "emoji": "👍"});
                    let give_up = Instant::now() + Duration::from_secs(30);
                    for attempt in 0usize.. {
                        let base = &bases[(n + attempt) % bases.len()];
                        let url = format!("{base}/api/chats/{chat}/messages/{message}/reactions");
                        let status = match http.post(url).json(&body).send().await {
                            Ok(r) => r.status().as_u16(),
                            Err(_) => 0,
                        };
                        if (200..300).contains(&status) {
                            if let Some(m) = reactions.lock().expect("reactions").get_mut(&message)
                            {
                                m.acked.insert(user.clone());
                            }
                            break;
                        }
                        // 503 (a broker or Redis away), 404 (the message not
                        // projected yet) and no answer are retried.
                        if !matches!(status, 0 | 404 | 503) || Instant::now() >= give_up {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }));
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
        let attempts = self.attempts.lock().expect("attempts").clone();
        let reactions = self.reactions.lock().expect("reactions").clone();
        Report {
            chats: self.chats.clone(),
            acked,
            attempts,
            reactions,
            received,
            outcomes: self.outcomes.clone(),
            drained_at,
        }
    }
}
