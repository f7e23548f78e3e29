//! Hot chat end to end: fetch counters, the scheduler, the flags reaching
//! chat-server, the cluster-wide budget and the cool-down, against a real
//! Redis and a real Kafka-compatible broker.

mod common;

use std::time::{Duration, Instant};

use common::{Load, World, metric};

#[tokio::test]
async fn a_chat_over_the_threshold_turns_hot_is_throttled_and_cools_down() {
    let world = World::new();
    let mut config = world.chat_config();
    config.hot_fetch_budget = 10;
    config.hot_fetch_burst = 5;
    config.retry_after_jitter_secs = 2;
    let chat = world.chat_server(config).await;
    let (scheduler, _) = world.scheduler(world.scheduler_config(40, 2)).await;
    // Leadership is taken within a tenth of the lock's TTL.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let hot = Load::start(
        &world.http,
        chat.url("/api/chats/busy/messages?limit=5"),
        6,
        Duration::ZERO,
    );
    let cold = Load::start(
        &world.http,
        chat.url("/api/chats/quiet/messages"),
        1,
        Duration::from_millis(100),
    );
    let first_hot = hot
        .first(Duration::from_secs(10), |a| a.throttled_path())
        .await
        .expect("the chat turns hot");
    assert!(
        first_hot.at - started <= Duration::from_secs(2),
        "hot within 2 s, took {:?}",
        first_hot.at - started
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hot_answers = hot.stop().await;
    let cold_answers = cold.stop().await;

    let refused: Vec<_> = hot_answers.iter().filter(|a| a.status == 429).collect();
    assert!(!refused.is_empty(), "fetches beyond the budget are refused");
    for answer in &refused {
        let retry: u64 = answer.headers["retry-after"]
            .parse()
            .expect("whole seconds");
        assert!((1..=4).contains(&retry), "Retry-After {retry}");
        assert_eq!(answer.headers["ratelimit-limit"], "10");
        assert_eq!(answer.headers["ratelimit-remaining"], "0");
        let reset: u64 = answer.headers["ratelimit-reset"].parse().expect("seconds");
        assert!(reset <= 2, "RateLimit-Reset {reset}");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        assert_eq!(answer.body["status"], 429);
        assert_eq!(answer.body["title"], "Too many requests");
    }
    let retries: std::collections::HashSet<&str> = refused
        .iter()
        .map(|a| a.headers["retry-after"].as_str())
        .collect();
    assert!(retries.len() > 1, "Retry-After is jittered: {retries:?}");
    let admitted_hot: Vec<_> = hot_answers
        .iter()
        .filter(|a| a.status == 200 && a.throttled_path())
        .collect();
    assert!(!admitted_hot.is_empty());
    for answer in admitted_hot {
        assert_eq!(answer.headers["ratelimit-limit"], "10");
        assert!(answer.headers["ratelimit-remaining"].parse::<u64>().is_ok());
    }
    assert!(
        hot_answers
            .iter()
            .all(|a| a.status == 200 || a.status == 429)
    );
    assert!(cold_answers.len() > 10);
    assert!(
        cold_answers
            .iter()
            .all(|a| a.status == 200 && !a.throttled_path()),
        "a cold chat is never throttled"
    );

    // Load gone: after the cool-down the chat answers like any other.
    let stopped = Instant::now();
    loop {
        let response = test_support::get(&world.http, &chat.url("/api/chats/busy/messages")).await;
        if response.status() == 200 && !response.headers().contains_key("ratelimit-limit") {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(6),
            "still hot 6 s after the load stopped (cool-down 2 s)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The scheduler removes the lapsed flag at its next tick.
    let cleared = Instant::now();
    while !world.flags(&common::redis_url()).await.is_empty() {
        assert!(
            cleared.elapsed() < Duration::from_secs(3),
            "the flag is never cleared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = test_support::get_text(&world.http, &chat.url("/metrics")).await;
    assert!(
        metric(
            &text,
            "hot_fetches_total",
            &["mode=\"redis\"", "outcome=\"throttled\""]
        ) > 0.0
    );
    assert!(metric(&text, "hotchat_flag_delay_seconds_count", &[]) > 0.0);
    test_support::assert_described(&text);
    let own = test_support::get_text(&world.http, &scheduler.url("/metrics")).await;
    assert!(metric(&own, "scheduler_leader", &[]) >= 0.0);
    assert!(own.contains("scheduler_tick_duration_seconds"), "{own}");
    test_support::assert_described(&own);
    scheduler.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn three_chat_servers_admit_one_budget_together() {
    let world = World::new();
    let budget = 40;
    let mut servers = Vec::new();
    for n in 0..3 {
        let mut config = world.chat_config();
        config.hot_fetch_budget = budget;
        config.hot_fetch_burst = 10;
        config.projector = n == 0;
        servers.push(world.chat_server(config).await);
    }
    let (scheduler, _) = world.scheduler(world.scheduler_config(30, 5)).await;
    let loads: Vec<Load> = servers
        .iter()
        .map(|s| {
            Load::start(
                &world.http,
                s.url("/api/chats/crowd/messages?limit=1"),
                4,
                Duration::ZERO,
            )
        })
        .collect();
    for load in &loads {
        load.first(Duration::from_secs(15), |a| a.status == 429)
            .await
            .expect("every instance throttles the hot chat");
    }
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let window_end = Instant::now();
    let mut admitted = 0;
    let mut refused = 0;
    for load in loads {
        for answer in load.stop().await {
            if answer.at < window_start || answer.at >= window_end {
                continue;
            }
            match answer.status {
                200 => admitted += 1,
                429 => refused += 1,
                other => panic!("unexpected status {other}: {:?}", answer.body),
            }
        }
    }
    let expected = f64::from(budget) * (window_end - window_start).as_secs_f64();
    let ratio = f64::from(admitted) / expected;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "admitted {admitted} in 10 s against a budget of {expected:.0} (ratio {ratio:.3}); refused {refused}"
    );
    assert!(refused > admitted, "the load was heavy: {refused} refused");
    scheduler.stop().await;
    for server in servers {
        server.stop().await;
    }
}

/// Adds `n` fetches of `chat` to the current second's counter, as the
/// chat-servers' flushes do.
async fn count_fetches(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    chat: &str,
    n: u64,
) {
    let second = chat_core::hot::now_millis() / 1000;
    redis::cmd("ZINCRBY")
        .arg(format!("{prefix}:fetches:{second}"))
        .arg(n)
        .arg(chat)
        .query_async::<()>(conn)
        .await
        .expect("ZINCRBY");
}

#[tokio::test]
async fn two_replicas_one_leads_and_the_other_takes_over_without_a_flap() {
    let world = World::new();
    let ttl_ms = 1000;
    let replica = || {
        let mut config = world.scheduler_config(50, 3);
        config.leader_lock_ttl_ms = ttl_ms;
        config
    };
    let (first, first_state) = world.scheduler(replica()).await;
    let (second, second_state) = world.scheduler(replica()).await;

    let client = redis::Client::open(common::redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut announcements = client.get_async_pubsub().await.expect("pubsub");
    announcements
        .subscribe(format!("{}:hotchat-changes", world.prefix))
        .await
        .expect("subscribe");
    let mut announcements = announcements.into_on_message();

    // Keep one chat well over the threshold, every second.
    let feeding = {
        let mut conn = conn.clone();
        let prefix = world.prefix.clone();
        tokio::spawn(async move {
            loop {
                count_fetches(&mut conn, &prefix, "stage", 500).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !world
        .flags(&common::redis_url())
        .await
        .contains_key("stage")
    {
        assert!(Instant::now() < deadline, "the chat was never flagged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        let leaders = [first_state.is_leader(), second_state.is_leader()];
        assert_eq!(
            leaders.iter().filter(|&&l| l).count(),
            1,
            "exactly one leads: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, standby_state, standby) = if first_state.is_leader() {
        (first, second_state, second)
    } else {
        (second, first_state, first)
    };
    leader.kill();
    let killed = Instant::now();
    let mut took_over = None;
    while killed.elapsed() < Duration::from_secs(5) {
        let flags = world.flags(&common::redis_url()).await;
        let now = chat_core::hot::now_millis();
        assert!(
            flags.get("stage").is_some_and(|&until| until > now),
            "the flag lapsed during the hand-over: {flags:?}"
        );
        if took_over.is_none() && standby_state.is_leader() {
            took_over = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took_over = took_over.expect("the standby took over");
    assert!(
        took_over <= Duration::from_millis(ttl_ms + ttl_ms / 2),
        "took over after {took_over:?}, lock TTL {ttl_ms} ms"
    );
    feeding.abort();
    // Nothing announced the chat cold at any point.
    use futures::StreamExt as _;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(100), announcements.next()).await
    {
        let change: serde_json::Value =
            serde_json::from_slice(message.get_payload_bytes()).expect("JSON");
        assert!(change["hot"] == true, "a flap: {change}");
    }
    let _ = &mut conn;
    standby.stop().await;
}

/// The announcement is written by the scheduler's Lua (`cjson.encode`) and
/// read by the servers as `HotChange`: the two must agree, or only the
/// once-a-second resync would tell the servers of a hot chat.
#[tokio::test]
async fn the_scheduler_announces_flags_in_the_form_the_servers_read() {
    use futures::StreamExt as _;
    let world = World::new();
    let config = world.scheduler_config(5, 2);
    let keys = config.redis.keys();
    let client = redis::Client::open(common::redis_url()).expect("url");
    let mut pubsub = client.get_async_pubsub().await.expect("pub/sub");
    pubsub
        .subscribe(keys.hot_changes_channel())
        .await
        .expect("subscribe");
    let mut messages = pubsub.into_on_message();
    let (scheduler, _) = world.scheduler(config).await;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    // Ten fetches of `announced` in each of the coming seconds.
    let now = chat_core::hot::now_millis() / 1000;
    for second in now..now + 6 {
        let _: () = redis::pipe()
            .zincr(keys.fetch_counts(second), "announced", 10)
            .expire(keys.fetch_counts(second), 60)
            .query_async(&mut conn)
            .await
            .expect("counts");
    }
    let mut changes: Vec<chat_core::hot::HotChange> = Vec::new();
    while changes.last().is_none_or(|change| change.hot) {
        let message = tokio::time::timeout(Duration::from_secs(15), messages.next())
            .await
            .expect("an announcement within 15 s")
            .expect("the channel stays open");
        let payload: String = message.get_payload().expect("text");
        let change: chat_core::hot::HotChange =
            serde_json::from_str(&payload).expect("the servers read the announcement");
        assert_eq!(change.chat, "announced");
        changes.push(change);
    }
    assert!(changes[0].hot, "first: hot, then cooled down: {changes:?}");
    assert!(changes[0].until > changes[0].second * 1000);
    scheduler.stop().await;
}
