//! Scenario 4: a chat-server is killed (SIGKILL) with posts in flight. No
//! 201 is lost, and a client that retries with its `clientMessageId` (on
//! the other server) gets exactly one message.

use std::time::Duration;

use faults::{Cluster, Load, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_posts_become_one_message_when_a_chat_server_dies() {
    let mut cluster = Cluster::start(Options::default()).await;
    // Many posters, so that several posts are in flight at the kill.
    let load = Load::start(&cluster, 4, 3, 16, Duration::from_millis(40)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    cluster.chat[0].crash_for(Duration::from_secs(4)).await;
    cluster.until_ready(&cluster.chat[0]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let report = load.finish(Duration::from_secs(60)).await;
    let summary = report.check(&cluster).await;
    let retried = faults::Outcomes::get(&report.outcomes.retried_then_created);
    assert!(retried > 0, "some posts were retried: {summary}");
    eprintln!("chat-server SIGKILL: {summary}");
}
