//! Hot chat end to end: fetch counters, the scheduler, the flags reaching
//! chat-server, the cluster-wide budget and the cool-down, against a real
//! Redis and a real Kafka-compatible broker.

mod common;

use std::time::{Duration, Instant};

use common::{Answer, Load, World, metric};

/// The `n`th fetch of a hot chat by a crowd: each by a member of its own,
/// so the crowd fetches often and no member does.
fn member_url(server: std::net::SocketAddr, chat: &str, n: u64) -> String {
    format!("http://{server}/api/chats/{chat}/messages?limit=5&userId=member-{n}")
}

#[tokio::test]
async fn a_crowd_turns_a_chat_hot_its_members_are_served_an_abuser_is_refused_and_it_cools_down() {
    let world = World::new();
    let mut config = world.chat_config();
    config.hot.throttle.client_rate = 5;
    config.hot.throttle.client_burst = 5;
    config.hot.throttle.retry_after_jitter_secs = 2;
    let (chat, scheduler) = world.chat_and_leader(config, 40, 2).await;

    let started = Instant::now();
    let crowd_server = chat.addr;
    let crowd = Load::start_with(
        &world.http,
        move |worker, n| member_url(crowd_server, "busy", n * 6 + worker as u64),
        6,
        Duration::ZERO,
    );
    let abuser = Load::start(
        &world.http,
        chat.url("/api/chats/busy/messages?limit=5&userId=abuser"),
        1,
        Duration::ZERO,
    );
    let cold = Load::start(
        &world.http,
        chat.url("/api/chats/quiet/messages"),
        1,
        Duration::from_millis(100),
    );
    let first_hot = crowd
        .first(Duration::from_secs(10), Answer::answered_from_snapshot)
        .await
        .expect("the chat turns hot");
    assert!(
        first_hot.at - started <= Duration::from_secs(2),
        "hot within 2 s, took {:?}",
        first_hot.at - started
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let crowd_answers = crowd.stop().await;
    let abuser_answers = abuser.stop().await;
    let cold_answers = cold.stop().await;

    // Fetches already in flight when the chat turned hot finish as cold
    // reads: look from half a second later.
    let hot_crowd: Vec<_> = crowd_answers
        .iter()
        .filter(|a| a.at > first_hot.at + Duration::from_millis(500))
        .collect();
    assert!(hot_crowd.len() > 100, "{} fetches", hot_crowd.len());
    assert!(
        hot_crowd.iter().all(|a| a.status == 200),
        "every member is served: {:?}",
        hot_crowd.iter().find(|a| a.status != 200)
    );
    // All from the snapshot: a tick or a resync that comes late under load
    // never lets the flag lapse while the crowd is there.
    let cold = hot_crowd
        .iter()
        .filter(|a| !a.answered_from_snapshot())
        .collect::<Vec<_>>();
    assert!(
        cold.is_empty(),
        "{} of {} answered cold, the first {:?} after the chat turned hot",
        cold.len(),
        hot_crowd.len(),
        cold.first().map(|a| a.at - first_hot.at)
    );
    for answer in &hot_crowd {
        assert_eq!(
            answer.headers["ratelimit-limit"], "5",
            "the member's own budget"
        );
        let age: u64 = answer.headers["snapshot-age-ms"].parse().expect("ms");
        assert!(age < 1000, "snapshot age {age} ms");
    }

    let refused: Vec<_> = abuser_answers.iter().filter(|a| a.status == 429).collect();
    assert!(
        refused.len() > abuser_answers.len() / 2,
        "the abuser is refused: {} of {}",
        refused.len(),
        abuser_answers.len()
    );
    for answer in &refused {
        let retry: u64 = answer.headers["retry-after"]
            .parse()
            .expect("whole seconds");
        assert!((1..=4).contains(&retry), "Retry-After {retry}");
        assert_eq!(answer.headers["ratelimit-limit"], "5");
        assert_eq!(answer.headers["ratelimit-remaining"], "0");
        let reset: u64 = answer.headers["ratelimit-reset"].parse().expect("seconds");
        assert!(reset <= 2, "RateLimit-Reset {reset}");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        assert_eq!(answer.body["status"], 429);
        assert_eq!(
            answer.body["type"],
            "urn:chat:problem:hot-chat-client-throttled"
        );
    }
    let retries: std::collections::HashSet<&str> = refused
        .iter()
        .map(|a| a.headers["retry-after"].as_str())
        .collect();
    assert!(retries.len() > 1, "Retry-After is jittered: {retries:?}");
    assert!(
        abuser_answers
            .iter()
            .all(|a| a.status == 200 || a.status == 429)
    );
    assert!(cold_answers.len() > 10);
    assert!(
        cold_answers
            .iter()
            .all(|a| a.status == 200 && !a.throttled_path() && !a.answered_from_snapshot()),
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
    while !world.flags().await.is_empty() {
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
            &[
                "budget=\"client\"",
                "mode=\"instance\"",
                "outcome=\"throttled\""
            ]
        ) > 0.0
    );
    assert!(metric(&text, "hot_snapshot_fetches_total", &["source=\"hit\""]) > 0.0);
    assert!(metric(&text, "hotchat_flag_delay_seconds_count", &[]) > 0.0);
    test_support::assert_described(&text);
    let own = test_support::get_text(&world.http, &scheduler.url("/metrics")).await;
    assert!(metric(&own, "scheduler_leader", &[]) >= 0.0);
    assert!(own.contains("scheduler_tick_duration_seconds"), "{own}");
    test_support::assert_described(&own);
    common::stop([scheduler, chat]).await;
}

#[tokio::test]
async fn one_client_alone_cannot_make_a_chat_hot() {
    let world = World::new();
    let (chat, scheduler) = world.chat_and_leader(world.chat_config(), 20, 2).await;
    let alone = Load::start(
        &world.http,
        chat.url("/api/chats/solo/messages?userId=hammer"),
        4,
        Duration::ZERO,
    );
    // The control, at the same time: a crowd of distinct members fetching
    // another chat at a fraction of that rate turns it hot.
    let server = chat.addr;
    let crowd = Load::start_with(
        &world.http,
        move |worker, n| member_url(server, "crowded", n * 2 + worker as u64),
        2,
        Duration::from_millis(20),
    );
    crowd
        .first(Duration::from_secs(10), Answer::answered_from_snapshot)
        .await
        .expect("the crowd's chat turns hot while the lone client's does not");
    let flags = world.flags().await;
    assert!(flags.contains_key("crowded"), "{flags:?}");
    crowd.stop().await;
    test_support::eventually(
        Duration::from_secs(30),
        "200 fetches by the lone client",
        || {
            let n = alone.answers().len();
            async move { (n >= 200).then_some(()) }
        },
    )
    .await;
    let answers = alone.stop().await;
    assert!(
        answers
            .iter()
            .all(|a| a.status == 200 && !a.throttled_path()),
        "hundreds of fetches a second by one client leave the chat cold"
    );
    let flags = world.flags().await;
    assert!(!flags.contains_key("solo"), "{flags:?}");
    common::stop([scheduler, chat]).await;
}

/// One client fetching 200 times a second beside 20 members fetching once
/// a second, for 10 s: the members are served, the abuser refused.
#[tokio::test]
async fn an_abuser_beside_twenty_members_gets_the_refusals() {
    let world = World::new();
    let (chat, scheduler) = world.chat_and_leader(world.chat_config(), 10, 5).await;
    let server = chat.addr;
    let members = Load::start_with(
        &world.http,
        move |worker, _| {
            format!("http://{server}/api/chats/stage/messages?limit=20&userId=member-{worker}")
        },
        20,
        Duration::from_secs(1),
    );
    let abuser = Load::start(
        &world.http,
        chat.url("/api/chats/stage/messages?limit=20&userId=abuser"),
        1,
        Duration::from_millis(5),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let member_answers = members.stop().await;
    let abuser_answers = abuser.stop().await;

    let served = member_answers.iter().filter(|a| a.status == 200).count();
    assert!(
        served * 100 >= member_answers.len() * 99,
        "members served {served} of {}: {:?}",
        member_answers.len(),
        member_answers.iter().find(|a| a.status != 200)
    );
    assert!(
        member_answers.len() >= 180,
        "{} fetches",
        member_answers.len()
    );
    assert!(
        member_answers.iter().any(Answer::answered_from_snapshot),
        "the chat turned hot"
    );
    let refused = abuser_answers.iter().filter(|a| a.status == 429).count();
    assert!(
        refused * 2 > abuser_answers.len(),
        "the abuser is refused: {refused} of {}",
        abuser_answers.len()
    );
    common::stop([scheduler, chat]).await;
}

/// Adds `n` fetches of `chat` to the current second's counter, as the
/// chat-servers' flushes do.
async fn count_fetches(conn: &mut chat_core::redis_conn::Conn, prefix: &str, chat: &str, n: u64) {
    let second = chat_core::hot::now_millis() / 1000;
    let keys = chat_core::names::Keys::new(prefix);
    redis::cmd("ZINCRBY")
        .arg(keys.fetch_counts(second, chat_core::names::fetch_count_shard(chat)))
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

    let mut conn = test_support::redis_conn(&world.redis()).await;
    let client = world.pubsub_client();
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
    while !world.flags().await.contains_key("stage") {
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
        let flags = world.flags().await;
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
    let client = world.pubsub_client();
    let mut pubsub = client.get_async_pubsub().await.expect("pub/sub");
    pubsub
        .subscribe(keys.hot_changes_channel())
        .await
        .expect("subscribe");
    let mut messages = pubsub.into_on_message();
    let (scheduler, _) = world.scheduler(config).await;
    let mut conn = test_support::redis_conn(&world.redis()).await;
    // Ten fetches of `announced` in each of the coming seconds.
    let now = chat_core::hot::now_millis() / 1000;
    for second in now..now + 6 {
        let key = keys.fetch_counts(second, chat_core::names::fetch_count_shard("announced"));
        let _: () = redis::pipe()
            .zincr(&key, "announced", 10)
            .expire(&key, 60)
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
        assert_eq!(change.chat.as_str(), "announced");
        changes.push(change);
    }
    assert!(changes[0].hot, "first: hot, then cooled down: {changes:?}");
    assert!(changes[0].until > changes[0].second * 1000);
    scheduler.stop().await;
}
