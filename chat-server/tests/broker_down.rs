//! With the Kafka broker gone, a POST answers 503 within the delivery
//! timeout: never a hang, never a 201 for an event that was not stored.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};
use test_support::OwnKafka;

#[tokio::test]
async fn with_the_broker_stopped_posts_answer_503_in_bounded_time() {
    let mut kafka = OwnKafka::start().await;
    let mut config = common::config();
    config.kafka.brokers = kafka.brokers.clone();
    config.kafka.delivery_timeout_ms = 2000;
    let server = TestServer::start_with(config).await;

    let before = server.post_message("lobby", "alice", "before").await;
    // A reaction needs its message in the read model.
    server
        .until_newest("lobby", &before, Duration::from_secs(30))
        .await;

    kafka.kill();

    // The delivery timeout is 2 s; librdkafka fails the write then, and the
    // server adds at most one second of guard. Five seconds of slack keeps a
    // loaded machine from failing this while still catching a hang.
    let bound = Duration::from_secs(2 + 1 + 5);
    let requests = [
        (
            "/api/chats/lobby/messages",
            json!({"userId": "alice", "text": "during"}),
        ),
        (
            "/api/chats/lobby/messages",
            json!({"userId": "alice", "text": "retry me", "clientMessageId": "c-down"}),
        ),
        (
            &*format!("/api/chats/lobby/messages/{before}/reactions"),
            json!({"userId": "bob", "emoji": "👍"}),
        ),
    ];
    for (path, body) in requests {
        let started = Instant::now();
        let response = server.post_json(path, body).await;
        let took = started.elapsed();
        common::assert_problem(&response, 503, path);
        assert!(took < bound, "{path} took {took:?}");
        assert!(response.headers().contains_key("retry-after"));
        let problem: Value = response.json().await.expect("problem JSON");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains("Kafka"), "detail says why: {detail}");
    }

    let ready = server.get("/readyz").await.expect("readyz");
    assert_eq!(ready.status(), 503);

    // A failed write gives its clientMessageId back: it is not stuck pending.
    let retry = server
        .post_with_client_id("lobby", "alice", "retry me", "c-down")
        .await;
    assert_eq!(retry.status(), 503, "still no broker, so still not stored");
    server.stop().await;
}

/// A configuration whose broker is a port nobody listens on, and whose
/// writes are given up after one second.
fn without_a_broker() -> chat_server::Config {
    let mut config = common::config();
    config.kafka.brokers = format!("127.0.0.1:{}", common::free_port());
    config.kafka.delivery_timeout_ms = 1000;
    config
}

#[tokio::test]
async fn a_server_whose_broker_never_answered_refuses_posts_in_bounded_time() {
    let server = TestServer::start_unready(without_a_broker()).await;
    let started = Instant::now();
    let response = server.post_text("lobby", "alice", "hello?").await;
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(1 + 1 + 5),
        "took {:?}",
        started.elapsed()
    );
    server.stop().await;
}

/// What a client library says about a failure (addresses, errno, the
/// library's own codes) is logged, not answered.
#[tokio::test]
async fn answers_say_what_is_down_in_words_not_in_library_errors() {
    let mut config = without_a_broker();
    config.redis.url = format!("redis://127.0.0.1:{}", common::free_port());
    config.redis.cluster_nodes.clear();
    let server = TestServer::start_unready(config).await;
    let leaks = [
        "os error",
        "refused (",
        "Local:",
        "BrokerTransport",
        "Meta data",
        "IoError",
        "127.0.0.1",
    ];
    let fetch = server.get("/api/chats/lobby/messages").await.expect("GET");
    let post = server.post_text("lobby", "alice", "hello?").await;
    let ready = server.get("/readyz").await.expect("readyz");
    for (what, response) in [("fetch", fetch), ("post", post), ("readyz", ready)] {
        assert_eq!(response.status(), 503, "{what}");
        let problem: Value = response.json().await.expect("problem JSON");
        let detail = problem["detail"].as_str().expect("detail");
        assert!(
            detail.contains("Redis") || detail.contains("Kafka"),
            "{what} names the service: {detail}"
        );
        for leak in leaks {
            assert!(!detail.contains(leak), "{what} answers {leak:?}: {detail}");
        }
    }
    server.stop().await;
}
