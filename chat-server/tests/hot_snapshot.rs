//! A hot chat's shared snapshot against a real Redis and a real
//! Kafka-compatible broker: one page read serves a crowd, and while Redis
//! is down the hot chat is still answered from it, and still throttled.
//! (A test binary of its own: it reads the process's metrics.)

mod common;

use std::time::{Duration, Instant};

use common::{OwnRedis, TestServer, eventually};

/// The tests read the process's metrics: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Flags `chat` hot in `server`'s Redis, as the scheduler does, and
/// waits for `server` to know it (it resyncs the flags every second).
async fn flag_hot(server: &TestServer, chat: &str) {
    test_support::flag_hot_in(&server.config.redis, &server.config.redis.keys(), chat).await;
    server.until_knows_hot(chat).await;
}

async fn page_reads(server: &TestServer) -> f64 {
    let text = test_support::get_text(&server.http, &server.url("/metrics")).await;
    test_support::metric(
        &text,
        "hot_page_reads_total",
        &["kind=\"snapshot\"", "result=\"ok\""],
    )
}

/// Waits until the newest message of `chat` is `id`, as a fetch shows it.
async fn until_fetchable(server: &TestServer, chat: &str, id: &str) {
    eventually(
        Duration::from_secs(10),
        "the message to be fetchable",
        || async {
            let (_, page) = server
                .get_json(&format!("/api/chats/{chat}/messages?limit=1"))
                .await;
            (page["messages"][0]["id"] == id).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_hundred_concurrent_fetches_of_a_hot_chat_cause_one_page_read() {
    let _serial = SERIAL.lock().await;
    let mut config = common::config();
    // Long enough that no second read can happen during the test.
    config.hot.snapshot_ms = 10_000;
    let server = TestServer::start_with(config).await;
    let ids = server.post_messages("crowd", "ann", "crowd", 5).await;
    until_fetchable(&server, "crowd", &ids[4]).await;
    flag_hot(&server, "crowd").await;

    let before = page_reads(&server).await;
    let text = test_support::get_text(&server.http, &server.url("/metrics")).await;
    let sources_before: Vec<f64> = ["miss", "hit", "wait", "stale"]
        .iter()
        .map(|s| {
            test_support::metric(
                &text,
                "hot_snapshot_fetches_total",
                &[&format!("source=\"{s}\"")],
            )
        })
        .collect();
    let fetches = (0..200).map(|n| {
        let url = server.url(&format!(
            "/api/chats/crowd/messages?limit={}&userId=member-{n}",
            1 + n % 100
        ));
        let http = server.http.clone();
        async move {
            let response = http.get(url).send().await.expect("an answer");
            let status = response.status().as_u16();
            let age = response
                .headers()
                .get("snapshot-age-ms")
                .map(|v| v.to_str().expect("text").parse::<u64>().expect("ms"));
            let page: serde_json::Value = response.json().await.expect("JSON");
            (status, age, page)
        }
    });
    let answers = futures::future::join_all(fetches).await;
    assert_eq!(page_reads(&server).await - before, 1.0, "one page read");
    let text = test_support::get_text(&server.http, &server.url("/metrics")).await;
    let sources: Vec<f64> = ["miss", "hit", "wait", "stale"]
        .iter()
        .zip(&sources_before)
        .map(|(s, before)| {
            test_support::metric(
                &text,
                "hot_snapshot_fetches_total",
                &[&format!("source=\"{s}\"")],
            ) - before
        })
        .collect();
    assert_eq!(sources[0], 1.0, "one miss");
    let served: f64 = sources[1..].iter().sum();
    assert_eq!(
        served, 199.0,
        "the others waited for it or found it: {text}"
    );
    let cursor = &answers[0].2["cursor"];
    for (n, (status, age, page)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{page}");
        assert!(age.is_some_and(|ms| ms < 10_000), "says its age");
        let limit = 1 + n % 100;
        let got: Vec<&str> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["id"].as_str().expect("id"))
            .collect();
        let want: Vec<&str> = ids[ids.len().saturating_sub(limit)..]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(got, want, "the latest {limit}");
        assert_eq!(&page["cursor"], cursor, "one snapshot, one cursor");
        assert_eq!(page["hasOlder"], limit < 5);
        assert!(
            page["messages"][0].get("mine").is_none(),
            "no mine when hot"
        );
    }
    test_support::assert_described(&text);
    server.stop().await;
}

#[tokio::test]
async fn while_redis_is_down_a_hot_chat_is_answered_from_its_snapshot_and_stays_throttled() {
    let _serial = SERIAL.lock().await;
    let mut redis = OwnRedis::start();
    let mut config = common::config();
    config.redis.url = redis.url();
    config.redis.cluster_nodes.clear();
    config.redis.timeout_ms = 300;
    config.hot.snapshot_ms = 200;
    config.hot.throttle.client_rate = 2;
    config.hot.throttle.client_burst = 3;
    let server = TestServer::start_with(config).await;
    let ids = server.post_messages("stage", "ann", "stage", 3).await;
    until_fetchable(&server, "stage", &ids[2]).await;
    server.post_message("aside", "ann", "cold").await;
    flag_hot(&server, "stage").await;
    let (status, taken) = server
        .get_json("/api/chats/stage/messages?userId=first")
        .await;
    assert_eq!(status, 200, "{taken}");

    redis.kill();
    let down = Instant::now();
    let mut ages = Vec::new();
    for n in 0..10 {
        let response = server
            .get(&format!("/api/chats/stage/messages?userId=member-{n}"))
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200, "answered from the snapshot");
        ages.push(
            response.headers()["snapshot-age-ms"]
                .to_str()
                .expect("text")
                .parse::<u64>()
                .expect("ms"),
        );
        let page: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(page["messages"], taken["messages"]);
        assert_eq!(page["cursor"], taken["cursor"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ages.windows(2).all(|w| w[0] <= w[1]) && ages[9] >= 900,
        "the age tells how old: {ages:?}"
    );
    let statuses: Vec<u16> = futures::future::join_all((0..10).map(|_| async {
        server
            .get("/api/chats/stage/messages?userId=abuser")
            .await
            .expect("an answer")
            .status()
            .as_u16()
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "the burst, then 429: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));

    // A cold chat answers as it always did without Redis: 503, promptly.
    let asked = Instant::now();
    let (status, problem) = server.get_json("/api/chats/aside/messages").await;
    assert_eq!(status, 503, "{problem}");
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert!(down.elapsed() < Duration::from_secs(10));
    server.stop().await;
}

/// A hot chat's per-client budget, for clients without a user: behind a
/// listed proxy each forwarded address has a budget of its own; from any
/// other peer `X-Forwarded-For` is ignored, so made-up addresses share the
/// peer's budget.
#[tokio::test]
async fn behind_a_listed_proxy_each_forwarded_client_has_its_own_budget() {
    // Its fetches would count in the others' metrics.
    let _serial = SERIAL.lock().await;
    let fetch = |server: &TestServer, forwarded_for: &'static str| {
        let request = server
            .http
            .get(server.url("/api/chats/proxied/messages?limit=5"))
            .header("x-forwarded-for", forwarded_for);
        async move { request.send().await.expect("fetch").status().as_u16() }
    };
    for trusted in [true, false] {
        let mut config = common::config();
        config.hot.throttle.client_rate = 1;
        config.hot.throttle.client_burst = 2;
        config.hot.throttle.retry_after_jitter_secs = 0;
        if trusted {
            config.requests.trusted_proxies = vec!["127.0.0.1".parse().expect("network")];
        }
        let server = TestServer::start_with(config).await;
        flag_hot(&server, "proxied").await;
        let mut first = Vec::new();
        for _ in 0..4 {
            first.push(fetch(&server, "203.0.113.1").await);
        }
        assert!(
            first.contains(&429),
            "one client over its budget: {first:?}"
        );
        let second = fetch(&server, "203.0.113.2").await;
        if trusted {
            assert_eq!(
                second, 200,
                "another client behind the proxy has its own budget"
            );
        } else {
            assert_eq!(
                second, 429,
                "a made-up address is the peer's, whose budget is spent"
            );
        }
        server.stop().await;
    }
}
