//! A crowd of fetch-API callers: workers that fetch in loops, keeping
//! every answer with its time, status, headers and body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// What one fetch answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub at: Instant,
    /// The worker that asked.
    pub worker: usize,
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

impl Answer {
    /// The answer carries the hot-chat throttle's headers.
    pub fn throttled_path(&self) -> bool {
        self.headers.contains_key("ratelimit-limit")
    }

    /// The answer came from a hot chat's shared snapshot.
    pub fn answered_from_snapshot(&self) -> bool {
        self.headers.contains_key("snapshot-age-ms")
    }
}

/// Fetches of one URL by some workers, every answer kept.
#[derive(Debug)]
pub struct Load {
    pub answers: Arc<Mutex<Vec<Answer>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` loops fetching `url`, each pausing `pause` between fetches.
    pub fn start(http: &reqwest::Client, url: String, workers: usize, pause: Duration) -> Self {
        Self::start_with(http, move |_, _| url.clone(), workers, pause)
    }

    /// `workers` loops, each pausing `pause` between fetches; the `n`th
    /// fetch of worker `w` asks `url(w, n)`.
    pub fn start_with(
        http: &reqwest::Client,
        url: impl Fn(usize, u64) -> String + Send + Sync + 'static,
        workers: usize,
        pause: Duration,
    ) -> Self {
        let url = Arc::new(url);
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let tasks = (0..workers)
            .map(|worker| {
                let (http, url, answers, stop) =
                    (http.clone(), url.clone(), answers.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.is_cancelled() {
                        let asked = http.get(url(worker, n)).send();
                        n += 1;
                        if let Ok(response) = asked.await {
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
                                worker,
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
