//! A hot chat's fetch budget: shared by every chat-server instance through
//! the hot-chat Redis, and kept locally, at this instance's share, while
//! that Redis is down. (A test binary of its own: it reads the process's
//! metrics.) The chat is flagged hot in Redis as the scheduler does.

mod common;

use std::time::{Duration, Instant};

use common::{OwnRedis, TestServer};
use test_support::load::{Answer, Load};
use test_support::metric;

/// Older pages, which the snapshot cannot answer, asked by ever new
/// members: only the chat's budget limits them.
fn older_pages(
    server: std::net::SocketAddr,
    chat: &'static str,
    tag: usize,
) -> impl Fn(usize, u64) -> String + Send + Sync + 'static {
    move |worker, n| {
        format!(
            "http://{server}/api/chats/{chat}/messages?limit=1&before=0-00000000000fffff&userId=m-{tag}-{worker}-{n}"
        )
    }
}

async fn metrics(server: &TestServer) -> String {
    test_support::get_text(&server.http, &server.url("/metrics")).await
}

#[tokio::test]
async fn three_chat_servers_admit_one_budget_together() {
    let budget = 40;
    let mut config = common::config();
    config.hot.throttle.fetch_budget = budget;
    config.hot.throttle.fetch_burst = 10;
    let mut servers = Vec::new();
    for n in 0..3 {
        let mut config = config.clone();
        config.projector.run = n == 0;
        servers.push(TestServer::start_with(config).await);
    }
    test_support::flag_hot_in(&config.redis, &config.redis.keys(), "crowd").await;
    let loads: Vec<Load> = servers
        .iter()
        .enumerate()
        .map(|(s, server)| {
            Load::start_with(
                &server.http,
                older_pages(server.addr, "crowd", s),
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
    for server in servers {
        server.stop().await;
    }
}

/// The hot-chat Redis (counters, flags, throttle state) goes away while a
/// chat is hot: that chat stays throttled by the local limiter, a cold chat
/// keeps getting 200s, nothing answers 5xx; when it returns, cluster-wide
/// throttling resumes by itself.
#[tokio::test]
async fn a_hot_chat_stays_throttled_locally_while_its_store_is_down() {
    let mut store = OwnRedis::start();
    let mut config = common::config();
    config.hot.store.hot_redis_url = Some(store.url());
    config.hot.throttle.fetch_budget = 20;
    config.hot.throttle.fetch_burst = 5;
    config.hot.throttle.expected_instances = 2;
    let hot_store = config.hot.store.redis(&config.redis);
    let keys = config.redis.keys();
    let chat = TestServer::start_with(config).await;
    test_support::flag_hot_in(&hot_store, &keys, "rush").await;

    let hot = Load::start_with(
        &chat.http,
        older_pages(chat.addr, "rush", 0),
        3,
        Duration::ZERO,
    );
    let cold = Load::start(
        &chat.http,
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
    let text = metrics(&chat).await;
    assert_eq!(
        metric(&text, "hot_store_up", &[]),
        0.0,
        "metrics say local mode"
    );
    let during = |a: &&Answer| a.at >= down + Duration::from_millis(500) && a.at < outage_end;
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

    // The store returns (empty) and the scheduler flags the chat again:
    // the server reconnects and throttles in Redis once more by itself.
    let throttled_in_redis = metric(
        &text,
        "hot_fetches_total",
        &["mode=\"redis\"", "outcome=\"throttled\""],
    );
    let _store = OwnRedis::start_on(port);
    test_support::flag_hot_in(&hot_store, &keys, "rush").await;
    test_support::eventually(
        Duration::from_secs(15),
        "cluster-wide throttling to resume",
        || async {
            let text = metrics(&chat).await;
            let resumed = metric(&text, "hot_store_up", &[]) == 1.0
                && metric(
                    &text,
                    "hot_fetches_total",
                    &["mode=\"redis\"", "outcome=\"throttled\""],
                ) > throttled_in_redis;
            resumed.then_some(())
        },
    )
    .await;
    let hot_answers = hot.stop().await;
    let cold_answers = cold.stop().await;
    assert!(
        hot_answers
            .iter()
            .all(|a| a.status == 200 || a.status == 429)
    );
    assert!(cold_answers.iter().all(|a| a.status == 200));
    chat.stop().await;
}
