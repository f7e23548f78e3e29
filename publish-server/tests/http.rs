//! What a client of the SSE API sees besides events: refusals as
//! problem+json, limits, CORS, heartbeats, and the other routes. One
//! behaviour per test, each on servers of its own.

mod common;

use std::time::Duration;

use common::{Running, Subscriber, World};
use futures::StreamExt as _;

/// `GET path`'s answer to a page of `origin`, whatever its status.
async fn get_from(world: &World, publish: &Running, path: &str, origin: &str) -> reqwest::Response {
    world
        .http
        .get(publish.url(path))
        .header("origin", origin)
        .send()
        .await
        .expect("answer")
}

#[tokio::test]
async fn an_invalid_chat_id_is_a_400_problem_with_the_ui_s_cors_grant() {
    let (world, _chat, publish) = World::start().await;
    let bad = get_from(
        &world,
        &publish,
        "/api/chats/no%20spaces/events",
        "http://127.0.0.1:8080",
    )
    .await;
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
    publish.stop().await;
}

#[tokio::test]
async fn a_stream_has_its_headers_its_retry_and_heartbeats() {
    let (world, _chat, publish) = World::start_with(|c| c.heartbeat_secs = 1).await;
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
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(": heartbeat\n\n") {
            let bytes = body.next().await.expect("more").expect("bytes");
            seen.extend(decoder.push(&bytes));
        }
    })
    .await
    .expect("a heartbeat within 10 s");
    assert!(seen.starts_with("retry: 2000\n\n"), "{seen:?}");
    drop(body);
    publish.stop().await;
}

#[tokio::test]
async fn an_origin_not_listed_gets_no_cors_grant() {
    let (world, _chat, publish) = World::start().await;
    let answer = |origin| get_from(&world, &publish, "/api/chats/lobby/events", origin);
    let listed = answer("http://localhost:8080").await;
    assert_eq!(listed.status(), 200);
    assert!(listed.headers().contains_key("access-control-allow-origin"));
    let other = answer("http://evil.example").await;
    assert_eq!(other.status(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    drop((listed, other));
    publish.stop().await;
}

#[tokio::test]
async fn a_stream_past_the_server_s_limit_and_a_chat_past_max_chats_are_refused() {
    let (world, _chat, publish) = World::start_with(|c| {
        c.max_connections = 2;
        c.max_chats = 1;
    })
    .await;
    let url = publish.url("/api/chats/lobby/events");
    let first = test_support::get(&world.http, &url).await;
    let second = test_support::get(&world.http, &url).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = test_support::get(&world.http, &url).await;
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "1");
    let problem: serde_json::Value = third.json().await.expect("JSON");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("2 streams, its limit"),
        "{problem}"
    );
    // Once a dropped stream is gone, another chat is refused for being one
    // chat too many.
    drop(second);
    test_support::eventually(
        Duration::from_secs(10),
        "a refusal for the chat",
        || async {
            let answer =
                test_support::get(&world.http, &publish.url("/api/chats/elsewhere/events")).await;
            assert_eq!(answer.status(), 503);
            let problem: serde_json::Value = answer.json().await.expect("JSON");
            let detail = problem["detail"].as_str().expect("detail").to_owned();
            detail.contains("1 chats already").then_some(())
        },
    )
    .await;
    drop(first);
    publish.stop().await;
}

#[tokio::test]
async fn a_malformed_last_event_id_gets_a_reset_then_the_live_stream() {
    let (world, chat, publish) = World::start().await;
    let mut stream = Subscriber::open(
        &world.http,
        &publish.url("/api/chats/lobby/events"),
        Some("not-an-id"),
    )
    .await;
    let first = stream.take(1, Duration::from_secs(10)).await;
    assert_eq!(first[0].event, "reset");
    world.post(chat.addr, "lobby", "after the reset").await;
    let live = stream.take(1, Duration::from_secs(10)).await;
    assert_eq!(live[0].event, "message");
    publish.stop().await;
}

#[tokio::test]
async fn other_methods_and_paths_are_problems_and_every_metric_is_described() {
    let (world, _chat, publish) = World::start().await;
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
    test_support::assert_described(&metrics);
    publish.stop().await;
}

/// Any token is an HTTP method and any path can be asked: neither may
/// become a metric label.
#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series_of_their_own() {
    let (world, chat, publish) = World::start().await;
    test_support::labels::assert_made_up_requests_add_few_series(
        &world.http,
        &publish.url(""),
        200,
    )
    .await;
    common::stop([publish, chat]).await;
}
