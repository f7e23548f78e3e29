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
