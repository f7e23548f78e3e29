//! Scenario 1: Apache Kafka fails under load. A 3-node cluster (every node
//! broker and controller; the topic replicated 3 times, a write needing 2
//! in-sync replicas, unclean leader election off; the producer idempotent
//! with `acks=all`) under the suite's load: 8 posters over 20 chats, a post
//! each every 100 ms (80/s), 4 members adding 👍 every 100 ms (40/s), 2
//! subscribers per chat (40 streams) and 4 clients fetching every 100 ms
//! (40/s). Every scenario ends with the usual check: every acknowledged
//! message fetchable exactly once and delivered to every subscriber exactly
//! once, no reaction counted twice (and none acknowledged lost); and prints
//! its row of the Reliability table in docs/reliability.md.
//!
//! - the leader of the busiest partition killed (SIGKILL), later restarted;
//! - that leader frozen (SIGSTOP) past the broker session timeout (9 s, the
//!   controller then fences it), then thawed;
//! - a rolling restart of all three nodes (SIGTERM), one at a time;
//! - the coordinator of the projector's consumer group killed while a
//!   second chat-server joins the group;
//! - two of three nodes down: posts answer 503 with `Retry-After` within the
//!   delivery timeout (3 s) plus a margin, never a 201; posting resumes once
//!   a second node is back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use faults::{Cluster, Load, Options, Report};
use tokio_util::sync::CancellationToken;

/// Posts acknowledged before a fault: the load is under way.
const UNDER_WAY: usize = 100;
/// The producer's delivery timeout in the suite (`KAFKA_DELIVERY_TIMEOUT_MS`).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a broker that stops heartbeating stays a leader: Kafka's
/// `broker.session.timeout.ms` default.
const BROKER_SESSION: Duration = Duration::from_secs(9);

/// A scenario's cluster, load and fetchers.
struct Run {
    cluster: Cluster,
    load: Load,
    stop_fetching: CancellationToken,
    fetched: Vec<faults::Seen>,
}

impl Run {
    async fn start() -> Self {
        let cluster = Cluster::start(Options {
            kafka_nodes: 3,
            ..Options::default()
        })
        .await;
        let mut load = Load::start(&cluster, 20, 2, 8, Duration::from_millis(100)).await;
        load.react(4, Duration::from_millis(100));
        let stop_fetching = CancellationToken::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let fetched = (0..4)
            .map(|i| {
                let chats = load.chats.clone();
                let bases = cluster.chat_bases();
                faults::fetcher(
                    http.clone(),
                    move |n| {
                        let chat = &chats[(n as usize + i) % chats.len()];
                        format!(
                            "{}/api/chats/{chat}/messages?limit=20",
                            bases[i % bases.len()]
                        )
                    },
                    Duration::from_millis(100),
                    stop_fetching.clone(),
                )
                .0
            })
            .collect();
        faults::eventually(
            Duration::from_secs(60),
            "the posting load under way",
            || {
                let acked = load.acked_count();
                async move { (acked > UNDER_WAY).then_some(()) }
            },
        )
        .await;
        Self {
            cluster,
            load,
            stop_fetching,
            fetched,
        }
    }

    /// The node leading the partition with the most acknowledged posts.
    async fn busiest_leader(&self) -> usize {
        let mut per_partition: HashMap<i32, usize> = HashMap::new();
        for m in self.load.acked.lock().expect("acked").values().flatten() {
            let partition = m.id.split('-').next().and_then(|p| p.parse().ok());
            *per_partition
                .entry(partition.expect("partition"))
                .or_default() += 1;
        }
        let busiest = per_partition
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(p, _)| *p)
            .expect("posts acknowledged");
        let leaders = self.cluster.kafka_leaders().await;
        leaders
            .iter()
            .find(|(p, ..)| *p == busiest)
            .map(|(_, leader, _)| *leader)
            .expect("the busiest partition has a leader")
    }

    /// Waits until every node is back as a live broker and every partition
    /// of the topic has all three replicas in sync.
    async fn until_healed(&self) {
        self.cluster.until_kafka_brokers(3).await;
        faults::eventually(
            Duration::from_secs(120),
            "every partition fully in sync",
            || async {
                let leaders = self.cluster.kafka_leaders().await;
                leaders.iter().all(|(_, _, isr)| *isr == 3).then_some(())
            },
        )
        .await;
    }

    /// Waits until the cluster has healed (`until_healed`), then `finish`es
    /// with the fault lasting from `from` until then.
    async fn heal_and_finish(self, name: &str, from: Instant) -> (Report, String) {
        self.until_healed().await;
        let to = Instant::now();
        self.finish(name, from, to).await
    }

    /// Stops the load, checks, and prints the scenario's Reliability row
    /// for the fault from `from` to `to`.
    async fn finish(self, name: &str, from: Instant, to: Instant) -> (Report, String) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.stop_fetching.cancel();
        let report = self.load.finish(Duration::from_secs(90)).await;
        let summary = report.check(&self.cluster).await;
        let fetches: usize = self
            .fetched
            .iter()
            .map(|s| s.lock().expect("seen").len())
            .sum();
        let fetched_ok: usize = self
            .fetched
            .iter()
            .map(|s| faults::count(s, from - Duration::from_secs(3600), Instant::now(), 200))
            .sum();
        let gap = report.longest_ack_gap(from, to);
        let p99 = report.post_p99(from, to);
        eprintln!(
            "RELIABILITY | {name} | acknowledged {} | lost 0 | longest gap in acknowledgements {} ms | POST p99 during the fault {} ms | fault lasted {} ms | fetches {fetched_ok} of {fetches} answered 200\n  {summary}",
            report.acked_total(),
            gap.as_millis(),
            p99.as_millis(),
            (to - from).as_millis(),
        );
        (report, summary)
    }
}

/// When a post was acknowledged after `at` (90 s at most).
async fn first_ack_after(load: &Load, at: Instant) -> Instant {
    faults::eventually(Duration::from_secs(90), "a post acknowledged again", || {
        let last = load
            .acked
            .lock()
            .expect("acked")
            .values()
            .flatten()
            .map(|m| m.at)
            .max();
        async move { last.filter(|l| *l > at) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_busiest_leader_is_killed_and_restarted() {
    let mut run = Run::start().await;
    let leader = run.busiest_leader().await;
    run.cluster.kafka[leader].kill();
    let from = Instant::now();
    // The others elect a new leader once the controller has fenced it.
    let acked_again = first_ack_after(&run.load, from + BROKER_SESSION).await;
    run.cluster.kafka[leader].start().await;
    let (_, summary) = run
        .heal_and_finish(
            "leader of the busiest partition killed (SIGKILL), restarted",
            from,
        )
        .await;
    eprintln!(
        "node {} killed; posts acknowledged again {} ms after the kill: {summary}",
        leader + 1,
        (acked_again - from).as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_busiest_leader_freezes_past_its_session() {
    let run = Run::start().await;
    let leader = run.busiest_leader().await;
    run.cluster.kafka[leader].pause();
    let from = Instant::now();
    // Past the session timeout, the controller fences the frozen broker
    // and its partitions get new leaders.
    faults::eventually(
        BROKER_SESSION * 4,
        "the frozen node's partitions led by others",
        || async {
            let leaders = run.cluster.kafka_leaders().await;
            leaders.iter().all(|(_, l, _)| *l != leader).then_some(())
        },
    )
    .await;
    let moved = Instant::now();
    first_ack_after(&run.load, moved).await;
    run.cluster.kafka[leader].resume();
    let thawed = Instant::now();
    let (_, summary) = run
        .heal_and_finish(
            "leader of the busiest partition frozen (SIGSTOP) past its session, thawed",
            from,
        )
        .await;
    eprintln!(
        "node {} frozen for {} ms (its partitions moved after {} ms): {summary}",
        leader + 1,
        (thawed - from).as_millis(),
        (moved - from).as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_in_a_rolling_restart() {
    let mut run = Run::start().await;
    let from = Instant::now();
    for node in 0..3 {
        run.cluster.kafka[node].restart().await;
        run.until_healed().await;
    }
    let to = Instant::now();
    run.finish(
        "rolling restart of all three nodes (SIGTERM, one at a time)",
        from,
        to,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_group_recovers_when_its_coordinator_dies_as_a_member_joins() {
    let mut run = Run::start().await;
    // One chat-server projects alone; the second joins the group as the
    // group's coordinator dies.
    run.cluster.chat[1].terminate().await;
    let coordinator = run.cluster.kafka_coordinator("chat-projector").await;
    run.cluster.kafka[coordinator].kill();
    let from = Instant::now();
    run.cluster.chat[1].start().await;
    run.cluster.until_ready(&run.cluster.chat[1]).await;
    // Every partition projected again: a post to each server is fetchable.
    let probe = |i: usize| format!("coordinator-probe-{i}");
    let chat = run.load.chats[0].clone();
    for (i, base) in run.cluster.chat_bases().iter().enumerate() {
        let body =
            serde_json::json!({"userId": "probe", "text": probe(i), "clientMessageId": probe(i)});
        faults::post_until_created(&run.cluster.http, base, &chat, &body).await;
    }
    let projected = faults::eventually(
        Duration::from_secs(120),
        "every partition projected again",
        || async {
            let fetched = run.cluster.fetch_all(&chat).await;
            (0..2)
                .all(|i| fetched.iter().any(|(_, text, _)| *text == probe(i)))
                .then(Instant::now)
        },
    )
    .await;
    run.cluster.kafka[coordinator].start().await;
    let (_, summary) = run
        .heal_and_finish(
            "projector group's coordinator killed while a chat-server joins",
            from,
        )
        .await;
    eprintln!(
        "coordinator node {} killed: probes projected {} ms later: {summary}",
        coordinator + 1,
        (projected - from).as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_nodes_down_posts_answer_503_in_bounded_time() {
    let mut run = Run::start().await;
    // A post sent after the second node died answers within the delivery
    // timeout, the server's 1 s guard, and 4 s for a busy machine.
    let bound = DELIVERY_TIMEOUT + Duration::from_secs(1 + 4);
    let leaders = run.cluster.kafka_leaders().await;
    let survivor = leaders[0].1;
    let down: Vec<usize> = (0..3).filter(|n| *n != survivor).collect();
    for &node in &down {
        run.cluster.kafka[node].kill();
    }
    let from = Instant::now();
    // Answers to posts sent before the second node died may still be 201s
    // for writes the quorum took: settle past one delivery timeout.
    let settled = from + DELIVERY_TIMEOUT + Duration::from_secs(1);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let outage_end = Instant::now();
    run.cluster.kafka[down[0]].start().await;
    let back = Instant::now();
    let recovered = first_ack_after(&run.load, back).await;
    run.cluster.kafka[down[1]].start().await;
    run.until_healed().await;
    let to = Instant::now();
    let attempts: Vec<_> = run
        .load
        .attempts
        .lock()
        .expect("attempts")
        .iter()
        .filter(|a| a.at >= settled && a.at + a.took <= outage_end)
        .copied()
        .collect();
    let late_acks: Vec<_> = run
        .load
        .acked
        .lock()
        .expect("acked")
        .values()
        .flatten()
        .filter(|m| m.at > settled && m.at < back)
        .map(|m| m.text.clone())
        .collect();
    let (_, summary) = run
        .finish(
            "two of three nodes killed, one restarted 15 s later",
            from,
            to,
        )
        .await;
    assert!(
        late_acks.is_empty(),
        "201s while two of three were down: {late_acks:?}"
    );
    assert!(!attempts.is_empty(), "posts were made during the outage");
    for a in &attempts {
        assert_eq!(a.status, 503, "a post during the outage: {a:?}");
        assert!(a.retry_after, "a 503 says when to retry: {a:?}");
        assert!(
            a.took <= bound,
            "a post took {:?} (bound {bound:?})",
            a.took
        );
    }
    let slowest = attempts.iter().map(|a| a.took).max().unwrap_or_default();
    eprintln!(
        "two of three down: {} posts answered 503 with Retry-After, the slowest in {} ms (bound {} ms); posting resumed {} ms after a second node was started: {summary}",
        attempts.len(),
        slowest.as_millis(),
        bound.as_millis(),
        (recovered - back).as_millis()
    );
}
