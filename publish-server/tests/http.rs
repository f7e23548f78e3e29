//! What a client of the SSE API sees besides events: refusals as
//! problem+json, limits, CORS, heartbeats, and the other routes.

mod common;

use std::time::Duration;

use common::{Subscriber, World};
use futures::StreamExt as _;

#[tokio::test]
async fn refusals_limits_cors_and_heartbeats() {
    let world = World::new();
    let _chat = world.chat_server().await; // creates the topic
    let mut config = world.publish_config();
    config.max_connections = 2;
    config.max_chats = 1;
    config.heartbeat_secs = 1;
    let publish = world.publish_server(config).await;

    // An invalid chat id: 400 problem+json, CORS headers for the UI.
    let bad = world
        .http
        .get(publish.url("/api/chats/no%20spaces/events"))
        .header("origin", "http://127.0.0.1:8080")
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    assert_eq!(
        bad.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    let problem: serde_json::Value = bad.json().await.expect("JSON");
    assert_eq!(problem["status"], 400);
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("chatId")
    );

    // A stream from an allowed origin, with its headers and heartbeats.
    let stream = world
        .http
        .get(publish.url("/api/chats/lobby/events"))
        .header("origin", "http://localhost:8080")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert_eq!(stream.headers()["cache-control"], "no-cache");
    assert_eq!(stream.headers()["x-accel-buffering"], "no");
    assert_eq!(
        stream.headers()["access-control-allow-origin"],
        "http://localhost:8080"
    );
    let mut body = stream.bytes_stream();
    let mut seen = String::new();
    let mut decoder = test_support::SseDecoder::default();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.contains(": heartbeat\n\n") {
            let bytes = body.next().await.expect("more").expect("bytes");
            seen.extend(decoder.push(&bytes));
        }
    })
    .await
    .expect("a heartbeat within 5 s");
    assert!(seen.starts_with("retry: 2000\n\n"), "{seen:?}");

    // An origin not on the list gets no CORS grant.
    let other = world
        .http
        .get(publish.url("/api/chats/lobby/events"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("answer");
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Two streams open: the third is refused; a second chat is over --max-chats.
    let third = test_support::get(&world.http, &publish.url("/api/chats/lobby/events")).await;
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    drop(other);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second_chat =
        test_support::get(&world.http, &publish.url("/api/chats/elsewhere/events")).await;
    assert_eq!(second_chat.status(), 503);
    let problem: serde_json::Value = second_chat.json().await.expect("JSON");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("chats")
    );

    // A malformed Last-Event-ID: reset, then the live stream.
    drop(body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut reset = Subscriber::open(
        &world.http,
        &publish.url("/api/chats/lobby/events"),
        Some("not-an-id"),
    )
    .await;
    let first = reset.take(1, Duration::from_secs(5)).await;
    assert_eq!(first[0].event, "reset");

    // The other routes.
    let post = world
        .http
        .post(publish.url("/api/chats/lobby/events"))
        .send()
        .await
        .expect("answer");
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");
    let missing = test_support::get(&world.http, &publish.url("/nowhere")).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let metrics = world.metrics(&publish).await;
    assert!(metrics.contains("publish_connections"), "{metrics}");
    assert!(metrics.contains("publish_resets_total"), "{metrics}");
    test_support::assert_described(&metrics);
    publish.stop().await;
}
