//! Scenario: the servers speak to a Redis Cluster of 3 masters and 3
//! replicas, and one master is killed (SIGKILL) under load. While its
//! replica takes over, posting goes on (Kafka is the log of record),
//! fetches of the chats in the lost slots answer 503 promptly and never
//! hang, the projector retries and catches up with nothing applied twice,
//! and the clients find the new master by themselves. Afterwards every
//! acknowledged message is fetchable exactly once and reached every
//! subscriber once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults::{Cluster, Load, Options};
use tokio_util::sync::CancellationToken;

/// What a fetching client saw: when it asked, the status, how long the
/// answer took.
type Seen = Arc<Mutex<Vec<(Instant, u16, Duration)>>>;

fn fetcher(
    http: reqwest::Client,
    url: String,
    stop: CancellationToken,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while !stop.is_cancelled() {
            let asked = Instant::now();
            let status = match http.get(&url).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            record
                .lock()
                .expect("seen")
                .push((asked, status, asked.elapsed()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_nothing_and_fetches_never_hang() {
    let mut cluster = Cluster::start(Options {
        redis_cluster: true,
        ..Options::default()
    })
    .await;
    // Posts with a clientMessageId: their claims live in the cluster too.
    let load = Load::start_with(&cluster, 6, 2, 4, Duration::from_millis(50), true).await;

    // The master of the first chat's slot goes; fetch that chat, and one
    // whose slot lives elsewhere, throughout.
    let victim_port = cluster.master_of(&format!("{{c:{}}}", load.chats[0])).await;
    let mut elsewhere = None;
    for chat in &load.chats[1..] {
        if cluster.master_of(&format!("{{c:{chat}}}")).await != victim_port {
            elsewhere = Some(chat.clone());
            break;
        }
    }
    let elsewhere = elsewhere.expect("a chat on another master");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let stop = CancellationToken::new();
    let url = |chat: &str| {
        format!(
            "{}/api/chats/{chat}/messages?limit=5",
            cluster.chat[0].base()
        )
    };
    let (lost, lost_task) = fetcher(http.clone(), url(&load.chats[0]), stop.clone());
    let (kept, kept_task) = fetcher(http.clone(), url(&elsewhere), stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let acked_before = load.acked_count();
    let killed = Instant::now();
    let victim = cluster
        .redis_nodes
        .iter_mut()
        .find(|n| n.port == victim_port)
        .expect("the victim");
    victim.kill();
    // The replica is promoted once the others have timed the master out
    // (2 s) and elected it.
    let promoted = faults::eventually(Duration::from_secs(30), "a new master", || {
        let cluster = &cluster;
        let chat = &load.chats[0];
        async move {
            let port = cluster.try_master_of(&format!("{{c:{chat}}}")).await;
            port.is_some_and(|p| p != victim_port).then(Instant::now)
        }
    })
    .await;
    let recovered = faults::eventually(
        Duration::from_secs(30),
        "the lost chat fetched again",
        || {
            let ok = lost
                .lock()
                .expect("seen")
                .iter()
                .any(|(at, status, _)| *at >= promoted && *status == 200);
            async move { ok.then(Instant::now) }
        },
    )
    .await;
    let acked_during = load.acked_count() - acked_before;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    lost_task.await.expect("fetcher");
    kept_task.await.expect("fetcher");
    let report = load.finish(Duration::from_secs(60)).await;
    let summary = report.check(&cluster).await;

    let lost = lost.lock().expect("seen").clone();
    let kept = kept.lock().expect("seen").clone();
    let window = |seen: &[(Instant, u16, Duration)]| -> Vec<(u16, Duration)> {
        seen.iter()
            .filter(|(at, _, _)| *at >= killed && *at < recovered)
            .map(|(_, s, took)| (*s, *took))
            .collect()
    };
    let lost_window = window(&lost);
    let slowest = lost_window
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    assert!(
        lost_window.iter().all(|(s, _)| [200, 503].contains(s)),
        "the lost chat's fetches answered 200 or 503: {lost_window:?}"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "no fetch hung: the slowest took {slowest:?}"
    );
    assert!(
        acked_during > 0,
        "posting went on while the replica took over"
    );
    assert!(
        kept.iter().all(|(_, s, _)| *s == 200 || *s == 503),
        "the other chat answered 200 or 503"
    );
    let kept_window = window(&kept);
    let kept_ok = kept_window.iter().filter(|(s, _)| *s == 200).count();
    eprintln!(
        "Redis Cluster master killed: {summary}; {acked_during} posts acknowledged from the kill to the first fetch after failover; new master {} ms after the kill, the lost chat fetched again {} ms after the kill; in that window the lost chat's fetches answered {} x 503 and {} x 200, slowest {} ms; the chat on another master {kept_ok} x 200 of {}",
        (promoted - killed).as_millis(),
        (recovered - killed).as_millis(),
        lost_window.iter().filter(|(s, _)| *s == 503).count(),
        lost_window.iter().filter(|(s, _)| *s == 200).count(),
        slowest.as_millis(),
        kept_window.len(),
    );
}
