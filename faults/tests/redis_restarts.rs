//! Scenario 2: Redis is killed and restarted mid-load. Posting goes on,
//! the fetch API answers 503 and then recovers, the projector catches up,
//! a hot chat's members are answered from its last snapshot and its abuser
//! stays throttled (each server's per-client budget), and a cold chat is
//! never throttled.

use std::time::{Duration, Instant};

use faults::{
    Cluster, Crowd, Load, Options, Seen, answers, count, fetcher, stop_fetchers, until_answered,
};
use tokio_util::sync::CancellationToken;

/// Answers 200 in the window that did not come from a snapshot.
fn read_from_redis(seen: &Seen, from: Instant, to: Instant) -> usize {
    answers(seen, from, to, |a| a.status == 200 && !a.snapshot).len()
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
    let url = format!(
        "{}/api/chats/{}/messages?limit=5",
        cluster.chat[1].base(),
        load.chats[1]
    );
    let (cold, task) = fetcher(
        http.clone(),
        move |_| url.clone(),
        Duration::from_millis(100),
        stop.clone(),
    );
    tasks.push(task);
    // A crowd makes the first chat hot, beside its abuser.
    let mut crowd = Crowd::start(&cluster, &http, &load.chats[0], &stop).await;
    let crowd_tasks = std::mem::take(&mut crowd.tasks);
    let hot_200 = |from, to| crowd.members(from, to, |a| a.status == 200);
    let hot_other = |from, to| crowd.members(from, to, |a| a.status != 200);
    let abuser = &crowd.abuser;

    let acked_before = load.acked_count();
    let down = Instant::now();
    cluster.redis.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acked_during = load.acked_count() - acked_before;
    let up = Instant::now();
    cluster.redis.start().await;
    let recovered = until_answered(&cold, up, 200, "the cold chat fetched again").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_fetchers(&stop, tasks.into_iter().chain(crowd_tasks)).await;
    let report = load.finish(Duration::from_secs(60)).await;
    let summary = report.check(&cluster).await;

    // Once the servers have seen Redis go (their next call fails), the hot
    // chat's members are answered from its last snapshot, and its abuser
    // still meets its budget.
    let settle = down + Duration::from_secs(1);
    assert!(
        acked_during > 20,
        "posting went on: {acked_during} acknowledged in the outage"
    );
    assert!(
        count(abuser, settle, up, 429) > 0,
        "the hot chat's abuser stayed throttled in the outage"
    );
    assert!(
        hot_200(settle, up) > 100,
        "members were answered in the outage: {} 200s",
        hot_200(settle, up)
    );
    assert_eq!(
        hot_other(settle, up),
        0,
        "every member was answered in the outage"
    );
    let fresh: usize = crowd
        .members
        .iter()
        .map(|s| read_from_redis(s, settle, up))
        .sum();
    assert_eq!(fresh, 0, "nothing read from a Redis that is down");
    let cold_all: Vec<u16> = cold
        .lock()
        .expect("seen")
        .iter()
        .map(|a| a.status)
        .collect();
    assert!(
        cold_all.iter().all(|s| *s != 429),
        "the cold chat was never throttled"
    );
    assert!(
        count(&cold, settle, up, 503) > 0,
        "fetch answered 503 in the outage"
    );
    assert!(
        cold_all.iter().all(|s| [200, 503].contains(s)),
        "the cold chat saw only 200 and 503: {:?}",
        cold_all.iter().collect::<std::collections::BTreeSet<_>>()
    );
    eprintln!(
        "Redis killed for 5 s: {summary}; {acked_during} posts acknowledged in the outage; hot chat members {} 200s from the snapshot, abuser {} 429s in the outage; fetch answered again {} ms after Redis was back",
        hot_200(settle, up),
        count(abuser, settle, up, 429),
        (recovered - up).as_millis()
    );
}
