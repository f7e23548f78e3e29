//! The projector's rebalance under each consumer-group protocol that
//! Kafka 4 serves: `classic` (join/sync, client-side assignment) and
//! `consumer` (KIP-848, the broker assigns). Two chat-servers project a
//! one-node Kafka under a light load (4 posters over 6 chats, 40 posts/s,
//! one subscriber per chat); a probe per partition is posted through the
//! chat-server that stays and fetched until it shows, one after another,
//! so a partition nobody projects shows as one long probe. The second
//! chat-server then leaves cleanly (SIGTERM), joins again, and is killed
//! (SIGKILL); for each, the longest probe in the window after it is the
//! time until every partition was projected again. Every probe must show
//! and the usual check must pass; the figures are printed for docs/kafka.md.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults::{Cluster, Load, Options};
use tokio_util::sync::CancellationToken;

/// One probe: when it was posted and how long until the fetch API showed it.
#[derive(Debug, Clone, Copy)]
struct Probe {
    at: Instant,
    took: Duration,
}

/// Chats whose events land on partitions 0, 1 and 2.
fn chat_per_partition(tag: &str) -> Vec<String> {
    (0..3)
        .map(|p| {
            (0..)
                .map(|i| format!("{tag}-probe-{i}"))
                .find(|c| chat_core::names::partition_of(c, 3) == p)
                .expect("a chat for every partition")
        })
        .collect()
}

/// Posts a probe to `chat` and fetches until it shows, over and over,
/// until `stop`; a probe that never shows in 180 s fails the test.
async fn probe(
    http: reqwest::Client,
    base: String,
    chat: String,
    seen: Arc<Mutex<Vec<Probe>>>,
    stop: CancellationToken,
) {
    for n in 0u64.. {
        if stop.is_cancelled() {
            return;
        }
        let text = format!("{chat}-{n}");
        let at = Instant::now();
        let body = serde_json::json!({"userId": "probe", "text": text, "clientMessageId": text});
        faults::post_until_created(&http, &base, &chat, &body).await;
        faults::eventually(Duration::from_secs(180), "a probe projected", || async {
            let page: serde_json::Value = http
                .get(format!("{base}/api/chats/{chat}/messages?limit=1"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (page["messages"][0]["text"] == text.as_str()).then_some(())
        })
        .await;
        seen.lock().expect("probes").push(Probe {
            at,
            took: at.elapsed(),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The longest probe posted in `from..to`.
fn longest(seen: &Mutex<Vec<Probe>>, from: Instant, to: Instant) -> Duration {
    seen.lock()
        .expect("probes")
        .iter()
        .filter(|p| (from..to).contains(&p.at))
        .map(|p| p.took)
        .max()
        .unwrap_or_default()
}

async fn rebalances(protocol: &str) -> String {
    let mut cluster = Cluster::start(Options {
        chat_env: vec![("KAFKA_GROUP_PROTOCOL".into(), protocol.into())],
        ..Options::default()
    })
    .await;
    let load = Load::start(&cluster, 6, 1, 4, Duration::from_millis(100)).await;
    let stop = CancellationToken::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let probers: Vec<_> = chat_per_partition(&faults::unique(protocol))
        .into_iter()
        .map(|chat| {
            tokio::spawn(probe(
                http.clone(),
                cluster.chat[0].base(),
                chat,
                seen.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Settled: both members project, probes are quick.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = longest(
        &seen,
        Instant::now() - Duration::from_secs(3),
        Instant::now(),
    );

    // Each window lasts past the protocol's session timeout for a killed
    // member (classic: the client's 10 s; consumer: the broker's 45 s).
    let window = |kill: bool| {
        Duration::from_secs(match (kill, protocol) {
            (true, "consumer") => 60,
            (true, _) => 25,
            (false, _) => 15,
        })
    };
    let mut figures = Vec::new();
    cluster.chat[1].terminate().await;
    let left = Instant::now();
    tokio::time::sleep(window(false)).await;
    figures.push(("leaves (SIGTERM)", longest(&seen, left, Instant::now())));
    cluster.chat[1].start().await;
    let joined = Instant::now();
    cluster.until_ready(&cluster.chat[1]).await;
    tokio::time::sleep(window(false)).await;
    figures.push(("joins", longest(&seen, joined, Instant::now())));
    cluster.chat[1].kill();
    let killed = Instant::now();
    tokio::time::sleep(window(true)).await;
    figures.push((
        "is killed (SIGKILL)",
        longest(&seen, killed, Instant::now()),
    ));

    stop.cancel();
    for p in probers {
        p.await.expect("prober");
    }
    let report = load.finish(Duration::from_secs(90)).await;
    let summary = report.check(&cluster).await;
    let line = figures
        .iter()
        .map(|(what, took)| format!("a member {what}: {} ms", took.as_millis()))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "REBALANCE | {protocol} | {line} | (a probe when settled: {} ms) | {} probes\n  {summary}",
        quiet.as_millis(),
        seen.lock().expect("probes").len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_rebalances_under_both_group_protocols() {
    // One after the other, so that the two share the machine alike.
    let classic = rebalances("classic").await;
    eprintln!("{classic}");
    let consumer = rebalances("consumer").await;
    eprintln!("{consumer}");
}
