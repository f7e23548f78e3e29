//! Clients that fetch a chat over and over during a scenario, recording
//! every answer, and counts over what they saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// One answer a fetching client got.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// When it asked.
    pub at: Instant,
    /// The status; 0 when no answer came.
    pub status: u16,
    /// It came from a hot chat's snapshot (`Snapshot-Age-Ms`).
    pub snapshot: bool,
    /// How long the answer took.
    pub took: Duration,
}

/// Every answer a fetching client got, in order.
pub type Seen = Arc<Mutex<Vec<Answer>>>;

/// Fetches `url(n)` for its `n`th fetch, every `every`, until `stop`.
pub fn fetcher(
    http: reqwest::Client,
    url: impl Fn(u64) -> String + Send + 'static,
    every: Duration,
    stop: CancellationToken,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut n = 0;
        while !stop.is_cancelled() {
            let at = Instant::now();
            let (status, snapshot) = match http.get(url(n)).send().await {
                Ok(r) => (
                    r.status().as_u16(),
                    r.headers().contains_key("snapshot-age-ms"),
                ),
                Err(_) => (0, false),
            };
            n += 1;
            record.lock().expect("seen").push(Answer {
                at,
                status,
                snapshot,
                took: at.elapsed(),
            });
            tokio::time::sleep(every).await;
        }
    });
    (seen, task)
}

/// Stops the fetchers `stop` was given to and waits until each of their
/// `tasks` has ended.
pub async fn stop_fetchers(
    stop: &CancellationToken,
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<()>>,
) {
    stop.cancel();
    for task in tasks {
        task.await.expect("fetcher");
    }
}

/// The answers asked for in `from..to` that pass `keep`.
pub fn answers(
    seen: &Seen,
    from: Instant,
    to: Instant,
    keep: impl Fn(&Answer) -> bool,
) -> Vec<Answer> {
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|a| a.at >= from && a.at < to && keep(a))
        .copied()
        .collect()
}

/// How many answers asked for in `from..to` had `status`.
pub fn count(seen: &Seen, from: Instant, to: Instant, status: u16) -> usize {
    answers(seen, from, to, |a| a.status == status).len()
}

/// Waits (30 s at most) until a fetch asked at or after `from` is answered
/// `status`; answers when that was seen.
pub async fn until_answered(seen: &Seen, from: Instant, status: u16, what: &str) -> Instant {
    crate::eventually(Duration::from_secs(30), what, || {
        let ok = count(seen, from, Instant::now(), status) > 0;
        async move { ok.then(Instant::now) }
    })
    .await
}

/// A crowd that makes a chat hot, and its abuser: 8 members fetching it
/// every 20 ms over both chat-servers, each fetch as a new `userId` (so the
/// chat counts many clients), and one client fetching it 50 times a second
/// as one user.
#[derive(Debug)]
pub struct Crowd {
    pub members: Vec<Seen>,
    pub abuser: Seen,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Crowd {
    /// Starts the crowd on `chat` of `cluster`, until `stop`; returns once
    /// the abuser has met its first 429 (the chat is hot).
    pub async fn start(
        cluster: &crate::Cluster,
        http: &reqwest::Client,
        chat: &str,
        stop: &CancellationToken,
    ) -> Self {
        let every = Duration::from_millis(20);
        let mut members = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let url = format!(
                "{}/api/chats/{chat}/messages?limit=5",
                cluster.chat[i % 2].base()
            );
            let (seen, task) = fetcher(
                http.clone(),
                move |n| format!("{url}&userId=member-{i}-{n}"),
                every,
                stop.clone(),
            );
            members.push(seen);
            tasks.push(task);
        }
        let url = format!(
            "{}/api/chats/{chat}/messages?limit=5&userId=abuser",
            cluster.chat[0].base()
        );
        let (abuser, task) = fetcher(http.clone(), move |_| url.clone(), every, stop.clone());
        tasks.push(task);
        let started = Instant::now();
        crate::eventually(Duration::from_secs(20), "the hot chat throttled", || {
            let throttled = count(&abuser, started, Instant::now(), 429) > 0;
            async move { throttled.then_some(()) }
        })
        .await;
        Self {
            members,
            abuser,
            tasks,
        }
    }

    /// The members' answers asked for in `from..to` that pass `keep`.
    pub fn members(
        &self,
        from: Instant,
        to: Instant,
        keep: impl Fn(&Answer) -> bool + Copy,
    ) -> usize {
        self.members
            .iter()
            .map(|seen| answers(seen, from, to, keep).len())
            .sum()
    }
}
