//! Scenario 2: Redis is killed and restarted mid-load. Posting goes on,
//! the fetch API answers 503 and then recovers, the projector catches up,
//! a hot chat stays throttled (each server's local limiter) and a cold
//! chat is never throttled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults::{Cluster, Load, Options};
use tokio_util::sync::CancellationToken;

/// Statuses a fetching client saw, with when.
type Seen = Arc<Mutex<Vec<(Instant, u16)>>>;

fn fetcher(
    http: reqwest::Client,
    url: String,
    every: Duration,
    stop: CancellationToken,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            let status = match http.get(&url).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            record.lock().expect("seen").push((Instant::now(), status));
            tokio::time::sleep(every).await;
        }
    });
    (seen, task)
}

fn count(seen: &Seen, from: Instant, to: Instant, status: u16) -> usize {
    seen.lock()
        .expect("seen")
        .iter()
        .filter(|(at, s)| *at >= from && *at < to && *s == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_goes_on_and_throttling_holds_while_redis_restarts() {
    let hot_env: Vec<(String, String)> = [
        ("HOT_THRESHOLD", "20"),
        ("HOT_FETCH_BUDGET", "10"),
        ("HOT_FETCH_BURST", "5"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let mut cluster = Cluster::start(Options {
        chat_env: hot_env.clone(),
        ..Options::default()
    })
    .await;
    // The scheduler reads the same threshold.
    cluster.scheduler.terminate().await;
    let mut scheduler_env = hot_env;
    scheduler_env.retain(|(k, _)| k == "HOT_THRESHOLD");
    cluster.scheduler.add_env(&scheduler_env);
    cluster.scheduler.start().await;

    // Posts without clientMessageId: they need Kafka only.
    let load = Load::start_with(&cluster, 3, 2, 3, Duration::from_millis(50), false).await;
    let stop = CancellationToken::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut tasks = Vec::new();
    let mut hot = Vec::new();
    for i in 0..8 {
        let base = &cluster.chat[i % 2].base();
        let (seen, task) = fetcher(
            http.clone(),
            format!("{base}/api/chats/{}/messages?limit=5", load.chats[0]),
            Duration::from_millis(20),
            stop.clone(),
        );
        hot.push(seen);
        tasks.push(task);
    }
    let (cold, task) = fetcher(
        http.clone(),
        format!(
            "{}/api/chats/{}/messages?limit=5",
            cluster.chat[1].base(),
            load.chats[1]
        ),
        Duration::from_millis(100),
        stop.clone(),
    );
    tasks.push(task);
    let hot_429 = |from, to| hot.iter().map(|s| count(s, from, to, 429)).sum::<usize>();
    let hot_200 = |from, to| hot.iter().map(|s| count(s, from, to, 200)).sum::<usize>();
    let started = Instant::now();
    faults::eventually(Duration::from_secs(20), "the hot chat throttled", || {
        let throttled = hot_429(started, Instant::now()) > 0;
        async move { throttled.then_some(()) }
    })
    .await;

    let acked_before = load.acked_count();
    let down = Instant::now();
    cluster.redis.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acked_during = load.acked_count() - acked_before;
    let up = Instant::now();
    cluster.redis.start().await;
    let recovered = faults::eventually(
        Duration::from_secs(30),
        "the cold chat fetched again",
        || {
            let ok = count(&cold, up, Instant::now(), 200) > 0;
            async move { ok.then(Instant::now) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    for task in tasks {
        task.await.expect("fetcher");
    }
    let report = load.finish(Duration::from_secs(60)).await;
    let summary = report.check(&cluster).await;

    // Once the servers have seen Redis go (their next call fails), a hot
    // chat's fetches meet the local limiter: some are refused with 429.
    let settle = down + Duration::from_secs(1);
    assert!(
        acked_during > 20,
        "posting went on: {acked_during} acknowledged in the outage"
    );
    assert!(
        hot_429(settle, up) > 0,
        "the hot chat stayed throttled in the outage: {} 429s",
        hot_429(settle, up)
    );
    assert_eq!(
        hot_200(settle, up),
        0,
        "nothing fetched from a Redis that is down"
    );
    let cold_all = cold.lock().expect("seen").clone();
    assert!(
        cold_all.iter().all(|(_, s)| *s != 429),
        "the cold chat was never throttled"
    );
    assert!(
        count(&cold, settle, up, 503) > 0,
        "fetch answered 503 in the outage"
    );
    assert!(
        cold_all.iter().all(|(_, s)| [200, 503].contains(s)),
        "the cold chat saw only 200 and 503: {:?}",
        cold_all
            .iter()
            .map(|(_, s)| *s)
            .collect::<std::collections::BTreeSet<_>>()
    );
    eprintln!(
        "Redis killed for 5 s: {summary}; {acked_during} posts acknowledged in the outage; hot chat {} 429s in the outage; fetch answered again {} ms after Redis was back",
        hot_429(settle, up),
        (recovered - up).as_millis()
    );
}
