//! Scenario 1: the Kafka broker fails mid-load.
//! Posts during the outage answer 503, never a 201 that is then lost;
//! everything acknowledged before and after reaches every subscriber and is
//! fetchable.
//!
//! - The broker is killed (SIGKILL) and restarted with its log kept: Tansu
//!   on an S3 bucket (moto's S3 server) that outlives it.
//! - The broker is frozen (SIGSTOP) for 6 s and then let go (SIGCONT): a
//!   hung or cut-off broker.
//! - The broker is killed for good, its log in memory: posts in flight and
//!   after answer 503.

use std::time::{Duration, Instant};

use faults::{BrokerStorage, Cluster, Load, Options};

/// Posts acknowledged before the broker's outage: the load is under way.
const UNDER_WAY: usize = 50;

/// Waits `at_least`, and then until more than [`UNDER_WAY`] posts are
/// acknowledged (a machine under load posts slower; 30 s at most).
async fn under_way(load: &Load, at_least: Duration) {
    tokio::time::sleep(at_least).await;
    faults::eventually(
        Duration::from_secs(30),
        "the posting load under way",
        || {
            let acked = load.acked_count();
            async move { (acked > UNDER_WAY).then_some(()) }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_broker_is_killed_and_restarted() {
    let mut cluster = Cluster::start(Options {
        broker_storage: BrokerStorage::S3,
        ..Options::default()
    })
    .await;
    // A produce on S3 storage takes a few object writes: give the posts
    // longer to build up before the kill.
    let load = Load::start(&cluster, 4, 3, 8, Duration::from_millis(50)).await;
    under_way(&load, Duration::from_secs(6)).await;

    cluster.kafka.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = load.acked_count();
    cluster.kafka.start().await;
    let back = Instant::now();
    let recovered = first_ack_after(&load, during).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let report = load.finish(Duration::from_secs(60)).await;
    let late: Vec<_> = report
        .acked
        .values()
        .flatten()
        // An answer for a write the broker took just before it died may
        // still be on its way at the kill; after half a second none can be.
        .filter(|m| m.at > killed + Duration::from_millis(500) && m.at < back)
        .map(|m| m.text.clone())
        .collect();
    let acked_at = |keep: &dyn Fn(Instant) -> bool| {
        report
            .acked
            .values()
            .flatten()
            .filter(|m| keep(m.at))
            .count()
    };
    let (before_kill, after_restart) = (acked_at(&|at| at < killed), acked_at(&|at| at > back));
    let summary = report.check(&cluster).await;
    let unavailable = faults::Outcomes::get(&report.outcomes.unavailable);
    assert!(late.is_empty(), "201s while the broker was down: {late:?}");
    assert!(
        after_restart > 0,
        "posts acknowledged after the restart: {summary}"
    );
    assert!(
        unavailable > 0,
        "posts during the outage answered 503: {summary}"
    );
    eprintln!(
        "broker killed and restarted after 5 s, log kept: {summary}; {before_kill} acknowledged before the kill, {after_restart} after the restart; first 201 {} ms after the broker was back",
        (recovered - back).as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_broker_stops_answering() {
    let cluster = Cluster::start(Options::default()).await;
    let load = Load::start(&cluster, 4, 3, 4, Duration::from_millis(50)).await;
    under_way(&load, Duration::from_secs(3)).await;

    cluster.kafka.pause();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = load.acked_count();
    let back = Instant::now();
    cluster.kafka.resume();
    let recovered = first_ack_after(&load, during).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let report = load.finish(Duration::from_secs(60)).await;
    let summary = report.check(&cluster).await;
    let unavailable = faults::Outcomes::get(&report.outcomes.unavailable);
    assert!(
        unavailable > 0,
        "posts during the outage answered 503: {summary}"
    );
    eprintln!(
        "broker frozen for 6 s: {summary}; first 201 {} ms after the broker was back",
        (recovered - back).as_millis()
    );
}

/// The broker is killed (SIGKILL, memory storage, so it does not come
/// back): posts in flight and after it answer 503, never a 201. What it
/// acknowledged in its last moments dies with its memory: the check covers
/// the posts acknowledged more than a second before the kill, which must
/// have reached every subscriber exactly once. (A broker that keeps its
/// log keeps the rest: see the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_in_flight_when_the_broker_dies_are_refused() {
    let mut cluster = Cluster::start(Options::default()).await;
    // No clientMessageId, no retry: each post's one answer is what counts.
    let load = Load::start_with(&cluster, 4, 3, 8, Duration::from_millis(20), false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.kafka.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut report = load.finish(Duration::from_secs(10)).await;
    let outcomes = report.outcomes.summary();
    let late: Vec<_> = report
        .acked
        .values()
        .flatten()
        // An answer for a write the broker took just before it died may
        // still be on its way at the kill; after half a second none can be.
        .filter(|m| m.at > killed + Duration::from_millis(500))
        .map(|m| m.text.clone())
        .collect();
    let total = report.acked_total();
    let settled = killed - Duration::from_secs(1);
    for acked in report.acked.values_mut() {
        acked.retain(|m| m.at < settled);
    }
    let summary = report.check_streams().await;
    let refused = faults::Outcomes::get(&report.outcomes.unavailable);
    assert!(report.acked_total() > 100, "{summary}");
    assert!(late.is_empty(), "201s after the broker died: {late:?}");
    assert!(refused > 0, "posts after the kill answered 503: {outcomes}");
    eprintln!(
        "broker killed for good: of {total} acknowledged, the {} acknowledged over 1 s before the kill: {summary}",
        report.acked_total()
    );
}

/// When a post was acknowledged again after `during` had been (60 s at most).
async fn first_ack_after(load: &Load, during: usize) -> Instant {
    faults::eventually(Duration::from_secs(60), "a post acknowledged again", || {
        let n = load.acked_count();
        async move { (n > during).then(Instant::now) }
    })
    .await
}
