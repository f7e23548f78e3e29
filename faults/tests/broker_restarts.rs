//! Scenario 1: the Kafka broker (Tansu, keeping its log in a SQLite file)
//! is killed and restarted mid-load. Posts during the outage answer 503,
//! never a 201 that is then lost; everything acknowledged before and after
//! reaches every subscriber and is fetchable.

use std::time::{Duration, Instant};

use faults::{Cluster, Load, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_broker_restarts() {
    let mut cluster = Cluster::start(Options::default()).await;
    let load = Load::start(&cluster, 4, 3, 4, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = load.acked_count();

    cluster.kafka.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = load.acked_count();
    let restarted = Instant::now();
    cluster.kafka.start().await;
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
        "broker killed for 6 s: {summary}; first 201 {} ms after the broker was back",
        (recovered - restarted).as_millis()
    );
}
