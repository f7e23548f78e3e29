//! The hot-chat Redis (counters, flags, throttle state) goes away while a
//! chat is hot: that chat stays throttled by the local limiter, a cold chat
//! keeps getting 200s, nothing answers 5xx; when it returns, cluster-wide
//! throttling resumes by itself. (A test binary of its own: it reads the
//! process's metrics.)

mod common;

use std::time::{Duration, Instant};

use common::{Load, OwnRedis, World, metric};

async fn metrics(world: &World, server: &common::Running) -> String {
    test_support::get_text(&world.http, &server.url("/metrics")).await
}

#[tokio::test]
async fn a_hot_chat_stays_throttled_locally_while_its_store_is_down() {
    let world = World::new();
    let mut store = OwnRedis::start();
    let mut config = world.chat_config();
    config.hot.store.hot_redis_url = Some(store.url());
    config.hot.throttle.fetch_budget = 20;
    config.hot.throttle.fetch_burst = 5;
    config.hot.throttle.expected_instances = 2;
    let chat = world.chat_server(config).await;
    let mut scheduler_config = world.scheduler_config(30, 30);
    scheduler_config.hot_store.hot_redis_url = Some(store.url());
    scheduler_config.leader_lock_ttl_ms = 1000;
    let (scheduler, _) = world.scheduler(scheduler_config).await;

    // Older pages, which the snapshot cannot answer, by ever new members:
    // only the chat's budget limits them.
    let server = chat.addr;
    let hot = Load::start_with(
        &world.http,
        move |worker, n| {
            format!(
                "http://{server}/api/chats/rush/messages?limit=1&before=0-00000000000fffff&userId=m-{worker}-{n}"
            )
        },
        3,
        Duration::ZERO,
    );
    let cold = Load::start(
        &world.http,
        chat.url("/api/chats/calm/messages"),
        1,
        Duration::from_millis(100),
    );
    hot.first(Duration::from_secs(15), |a| a.status == 429)
        .await
        .expect("the chat turns hot");

    let port = store.port;
    store.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let outage_end = Instant::now();
    let text = metrics(&world, &chat).await;
    assert_eq!(
        metric(&text, "hot_store_up", &[]),
        0.0,
        "metrics say local mode"
    );
    let during =
        |a: &&common::Answer| a.at >= down + Duration::from_millis(500) && a.at < outage_end;
    let hot_during: Vec<_> = hot.answers().into_iter().filter(|a| during(&a)).collect();
    let admitted = hot_during.iter().filter(|a| a.status == 200).count();
    let refused = hot_during.iter().filter(|a| a.status == 429).count();
    assert!(refused > 0, "the hot chat stays throttled");
    // The local share: 20 / 2 instances = 10 per second, burst 2, over 3.5 s.
    assert!(
        admitted <= 10 * 4 + 2,
        "admitted {admitted} in 3.5 s at 10/s locally"
    );
    assert!(admitted > 0, "throttled, not shut");
    assert!(
        hot_during
            .iter()
            .all(|a| a.status == 200 || a.status == 429),
        "no 5xx because the store is down"
    );
    assert!(
        metric(
            &text,
            "hot_fetches_total",
            &["mode=\"local\"", "outcome=\"throttled\""]
        ) > 0.0
    );
    let cold_during: Vec<_> = cold.answers().into_iter().filter(|a| during(&a)).collect();
    assert!(cold_during.len() > 10);
    assert!(
        cold_during
            .iter()
            .all(|a| a.status == 200 && !a.throttled_path()),
        "a cold chat is never throttled, never fails"
    );

    // The store returns (empty): counting, flags and cluster-wide
    // throttling come back by themselves.
    let throttled_in_redis = metric(
        &text,
        "hot_fetches_total",
        &["mode=\"redis\"", "outcome=\"throttled\""],
    );
    let _store = OwnRedis::start_on(port);
    let back = Instant::now();
    loop {
        let text = metrics(&world, &chat).await;
        if metric(&text, "hot_store_up", &[]) == 1.0
            && metric(
                &text,
                "hot_fetches_total",
                &["mode=\"redis\"", "outcome=\"throttled\""],
            ) > throttled_in_redis
        {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "normal mode did not resume: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hot_answers = hot.stop().await;
    let cold_answers = cold.stop().await;
    assert!(
        hot_answers
            .iter()
            .all(|a| a.status == 200 || a.status == 429)
    );
    assert!(cold_answers.iter().all(|a| a.status == 200));
    scheduler.stop().await;
    chat.stop().await;
}
