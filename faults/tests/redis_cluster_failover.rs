//! Scenario: the servers speak to a Redis Cluster of 3 masters and 3
//! replicas, and one master is killed (SIGKILL) under load. While its
//! replica takes over, posting goes on (Kafka is the log of record),
//! fetches of the chats in the lost slots answer 503 promptly and never
//! hang, the projector retries and catches up with nothing applied twice,
//! a hot chat stays throttled (each server's local fallback while the
//! flags' slot is away), and the clients find the new master by themselves. Afterwards every
//! acknowledged message is fetchable exactly once and reached every
//! subscriber once.

use std::time::{Duration, Instant};

use faults::{
    Cluster, Crowd, Load, Options, answers, count, fetcher, stop_fetchers, until_answered,
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_nothing_and_fetches_never_hang() {
    let hot_env: Vec<(String, String)> = [("HOT_THRESHOLD", "20"), ("COOL_DOWN", "30")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec();
    let mut cluster = Cluster::start(Options {
        redis_cluster: true,
        chat_env: hot_env.clone(),
        ..Options::default()
    })
    .await;
    cluster.scheduler.terminate().await;
    cluster.scheduler.add_env(&hot_env);
    cluster.scheduler.start().await;
    // Posts with a clientMessageId: their claims live in the cluster too.
    let load = Load::start_with(&cluster, 6, 2, 4, Duration::from_millis(50), true).await;

    // The master of the hot-chat flags' slot goes (and with it the
    // scheduler's lock); a chat whose slot it also serves is fetched
    // throughout, and one whose slot lives elsewhere.
    let victim_port = cluster.master_of("{hot}").await;
    let mut lost_chat = None;
    let mut kept_chat = None;
    for n in 0..200 {
        let chat = format!("probe-{n}");
        let on_victim = cluster.master_of(&format!("{{c:{chat}}}")).await == victim_port;
        if on_victim && lost_chat.is_none() {
            lost_chat = Some(chat);
        } else if !on_victim && kept_chat.is_none() {
            kept_chat = Some(chat);
        }
        if lost_chat.is_some() && kept_chat.is_some() {
            break;
        }
    }
    let (lost_chat, kept_chat) = (
        lost_chat.expect("a lost chat"),
        kept_chat.expect("a kept chat"),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let stop = CancellationToken::new();
    let base = cluster.chat[0].base();
    let url = |chat: &str| format!("{base}/api/chats/{chat}/messages?limit=5");
    let every = Duration::from_millis(50);
    let lost_url = url(&lost_chat);
    let (lost, lost_task) = fetcher(http.clone(), move |_| lost_url.clone(), every, stop.clone());
    let kept_url = url(&kept_chat);
    let (kept, kept_task) = fetcher(http.clone(), move |_| kept_url.clone(), every, stop.clone());
    // A crowd makes the first chat hot, beside its abuser.
    let tasks = vec![lost_task, kept_task];
    let mut crowd = Crowd::start(&cluster, &http, &load.chats[0], &stop).await;
    let crowd_tasks = std::mem::take(&mut crowd.tasks);
    let abuser = &crowd.abuser;

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
        async move {
            let port = cluster.try_master_of("{hot}").await;
            port.is_some_and(|p| p != victim_port).then(Instant::now)
        }
    })
    .await;
    let recovered = until_answered(&lost, promoted, 200, "the lost chat fetched again").await;
    let acked_during = load.acked_count() - acked_before;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_fetchers(&stop, tasks.into_iter().chain(crowd_tasks)).await;
    let report = load.finish(Duration::from_secs(60)).await;
    let summary = report.check(&cluster).await;

    let lost_window = answers(&lost, killed, recovered, |_| true);
    let slowest = lost_window.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(
        lost_window.iter().all(|a| [200, 503].contains(&a.status)),
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
    let far_future = Instant::now() + Duration::from_secs(3600);
    assert!(
        answers(&kept, killed, far_future, |a| ![200, 503]
            .contains(&a.status))
        .is_empty(),
        "the other chat answered 200 or 503"
    );
    // The hot chat, in the outage of its flags' slot: its abuser still
    // meets its budget, and its members are answered.
    assert!(
        count(abuser, killed, recovered, 429) > 0,
        "the hot chat's abuser stayed throttled"
    );
    let members_ok = crowd.members(killed, recovered, |a| a.status == 200);
    assert!(members_ok > 0, "the hot chat's members were answered");
    let kept_window = answers(&kept, killed, recovered, |_| true);
    let kept_ok = count(&kept, killed, recovered, 200);
    // When, after the kill, the lost chat answered 503 first and last.
    let refused: Vec<u128> = answers(&lost, killed, far_future, |a| a.status == 503)
        .iter()
        .map(|a| (a.at - killed).as_millis())
        .collect();
    let sequence: Vec<String> = answers(&lost, killed, far_future, |_| true)
        .iter()
        .take_while(|a| a.at < recovered + Duration::from_secs(1))
        .map(|a| {
            format!(
                "{}@{}+{}",
                a.status,
                (a.at - killed).as_millis(),
                a.took.as_millis()
            )
        })
        .collect();
    eprintln!("the lost chat's answers (status@ms after the kill+ms taken): {sequence:?}");
    eprintln!(
        "Redis Cluster master killed: {summary}; {acked_during} posts acknowledged from the kill to the first fetch after failover; new master {} ms after the kill, the lost chat fetched again {} ms after the kill; in that window the lost chat's fetches answered {} x 503 (from {} to {} ms after the kill) and {} x 200, slowest {} ms; the chat on another master {kept_ok} x 200 of {}; the hot chat's abuser {} x 429 and its members {members_ok} x 200 meanwhile",
        (promoted - killed).as_millis(),
        (recovered - killed).as_millis(),
        count(&lost, killed, recovered, 503),
        refused.first().copied().unwrap_or_default(),
        refused.last().copied().unwrap_or_default(),
        count(&lost, killed, recovered, 200),
        slowest.as_millis(),
        kept_window.len(),
        count(abuser, killed, recovered, 429),
    );
}
