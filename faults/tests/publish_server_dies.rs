//! Scenario 3: one publish-server is killed (SIGKILL) and, later, the other
//! is restarted (SIGTERM). Subscribers reconnect to the survivor or the
//! restarted one with their Last-Event-ID and end with the full sequence.

use std::time::Duration;

use faults::{Cluster, Load, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_end_with_every_message_when_publish_servers_die() {
    let mut cluster = Cluster::start(Options::default()).await;
    let load = Load::start(&cluster, 4, 4, 4, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.publish[0].crash_for(Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.publish[1].restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let report = load.finish(Duration::from_secs(30)).await;
    let summary = report.check(&cluster).await;
    assert!(report.acked_total() > 200, "{summary}");
    assert!(
        report.reconnects() >= 16,
        "every subscriber lost its stream at least once: {summary}"
    );
    assert_eq!(report.resets(), 0, "{summary}");
    eprintln!("publish-server SIGKILL + SIGTERM: {summary}");
}
