//! Scenario 1: the Kafka broker stops answering mid-load and comes back;
//! then, the broker killed for good.
//! Posts during the outage answer 503, never a 201 that is then lost;
//! everything acknowledged before and after reaches every subscriber and is
//! fetchable.
//!
//! The broker is frozen (SIGSTOP) for 6 s and then let go (SIGCONT): a hung
//! or cut-off broker that keeps its log. Killing and restarting it needs a
//! broker that keeps its log on disk: Tansu 0.6.0's SQLite engine panics on
//! the first idempotent produce after a restart ("more or less than one
//! row", tansu-storage lite.rs), and its memory engine forgets the log.

use std::time::{Duration, Instant};

use faults::{Cluster, Load, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_broker_stops_answering() {
    let cluster = Cluster::start(Options::default()).await;
    let load = Load::start(&cluster, 4, 3, 4, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = load.acked_count();

    cluster.kafka.pause();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = load.acked_count();
    let back = Instant::now();
    cluster.kafka.resume();
    let recovered =
        faults::eventually(Duration::from_secs(60), "a post acknowledged again", || {
            let n = load.acked_count();
            async move { (n > during).then(Instant::now) }
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let report = load.finish(Duration::from_secs(60)).await;
    let summary = report.check(&cluster).await;
    let unavailable = report
        .outcomes
        .unavailable
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(before > 50, "{summary}");
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
/// log would keep the rest; see the README's Reliability section.)
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
    let refused = report
        .outcomes
        .unavailable
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(report.acked_total() > 100, "{summary}");
    assert!(late.is_empty(), "201s after the broker died: {late:?}");
    assert!(refused > 0, "posts after the kill answered 503: {outcomes}");
    eprintln!(
        "broker killed for good: of {total} acknowledged, the {} acknowledged over 1 s before the kill: {summary}",
        report.acked_total()
    );
}
