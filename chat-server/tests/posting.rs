//! Posting messages and reactions: what lands in Kafka, and what the client
//! is told. Runs against a real Kafka-protocol broker and Redis.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{TestServer, eventually};
use serde_json::{Value, json};

#[tokio::test]
async fn a_posted_message_lands_keyed_by_chat_with_the_documented_envelope() {
    let server = TestServer::start().await;
    let response = server.post_text("lobby", "alice", "hi").await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "application/json");
    let message: Value = response.json().await.expect("JSON body");
    assert_eq!(message["chatId"], "lobby");
    assert_eq!(message["userId"], "alice");
    assert_eq!(message["text"], "hi");
    let created_at = message["createdAt"].as_str().expect("createdAt");
    assert!(
        created_at.ends_with('Z'),
        "createdAt {created_at} is RFC 3339 UTC"
    );
    chrono::DateTime::parse_from_rfc3339(created_at).expect("createdAt is RFC 3339");

    let records = server.records().await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.key, "lobby");
    assert_eq!(
        record.id(),
        message["id"],
        "the id is the record's position"
    );
    assert_eq!(
        record.value,
        json!({"type": "message", "chatId": "lobby", "userId": "alice", "text": "hi",
               "createdAt": created_at})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_posts_from_fifty_clients_land_once_each_in_each_clients_order() {
    const CLIENTS: usize = 50;
    const EACH: usize = 20;
    let server = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for seq in 0..EACH {
                let response = server
                    .post_json(
                        "/api/chats/busy/messages",
                        json!({"userId": format!("user{client}"), "text": format!("{client}:{seq}")}),
                    )
                    .await;
                assert_eq!(response.status(), 201);
                let body: Value = response.json().await.expect("JSON body");
                ids.push(body["id"].as_str().expect("id").to_owned());
            }
            ids
        }));
    }
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    for (client, task) in tasks.into_iter().enumerate() {
        for (seq, id) in task.await.expect("client task").into_iter().enumerate() {
            acknowledged.insert(format!("{client}:{seq}"), id);
        }
    }
    assert_eq!(acknowledged.len(), CLIENTS * EACH);

    let records = server.records().await;
    assert_eq!(
        records.len(),
        CLIENTS * EACH,
        "every post lands exactly once"
    );
    let partitions: HashSet<i32> = records.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 1, "one chat is one partition");
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<String, usize> = HashMap::new();
    for record in &records {
        let text = record.value["text"].as_str().expect("text").to_owned();
        assert!(seen.insert(text.clone()), "{text} landed twice");
        assert_eq!(acknowledged[&text], record.id(), "201 id of {text}");
        let (client, seq) = text.split_once(':').expect("client:seq");
        let seq: usize = seq.parse().expect("seq");
        if let Some(previous) = last_seq.insert(client.to_owned(), seq) {
            assert!(
                previous < seq,
                "client {client} sent {previous} before {seq}"
            );
        }
    }
    match std::sync::Arc::try_unwrap(server) {
        Ok(server) => server.stop().await,
        Err(_) => panic!("server still shared"),
    }
}

#[tokio::test]
async fn a_retried_client_message_id_answers_the_original_and_writes_nothing_new() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let body = json!({"userId": "alice", "text": "once", "clientMessageId": "c-1"});
    let first = server
        .post_json("/api/chats/lobby/messages", body.clone())
        .await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let original: Value = first.json().await.expect("JSON");
    assert_eq!(original["clientMessageId"], "c-1");

    // Sequential and concurrent retries.
    let retry = server
        .post_json("/api/chats/lobby/messages", body.clone())
        .await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.expect("JSON"), original);
    let concurrent = futures::future::join_all((0..8).map(|_| {
        let server = server.clone();
        let body = body.clone();
        async move {
            let r = server.post_json("/api/chats/lobby/messages", body).await;
            (r.status().as_u16(), r.json::<Value>().await.expect("JSON"))
        }
    }))
    .await;
    for (status, message) in concurrent {
        assert_eq!(status, 201);
        assert_eq!(message, original);
    }

    // The same id with another text is a client bug, not a retry.
    let reused = server
        .post_with_client_id("lobby", "alice", "other", "c-1")
        .await;
    assert_eq!(reused.status(), 409);
    assert_eq!(reused.headers()["content-type"], "application/problem+json");

    // Another user, or another chat, may use the same client id.
    let other_user = server
        .post_with_client_id("lobby", "bob", "once", "c-1")
        .await;
    assert_eq!(other_user.status(), 201);
    assert_ne!(
        other_user.json::<Value>().await.expect("JSON")["id"],
        original["id"]
    );

    let records = server.records().await;
    assert_eq!(
        records.len(),
        2,
        "one record per distinct message: {records:?}"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.value["userId"] == "alice")
            .count(),
        1
    );
    assert_eq!(records[0].value["clientMessageId"], "c-1");
}

/// For its idempotency window (a day), a `clientMessageId` keeps a small
/// record, not the message: a retry still gets the whole message back.
#[tokio::test]
async fn a_client_message_id_keeps_a_small_record_whatever_the_text() {
    let server = TestServer::start().await;
    let text = "y".repeat(4000);
    let body = json!({"userId": "alice", "text": text, "clientMessageId": "big-1"});
    let first = server
        .post_json("/api/chats/lobby/messages", body.clone())
        .await;
    assert_eq!(first.status(), 201);
    let original: Value = first.json().await.expect("JSON");
    let keys = chat_core::names::Keys::new(server.config.redis.key_prefix.clone());
    let key = keys.client_message(
        &"lobby".parse().expect("chat"),
        &"alice".parse().expect("user"),
        &"big-1".parse().expect("id"),
    );
    let mut conn = test_support::redis_conn(&server.config.redis).await;
    let (kept, ttl): (usize, i64) = redis::pipe()
        .strlen(&key)
        .pttl(&key)
        .query_async(&mut conn)
        .await
        .expect("read");
    assert!(
        kept < 200,
        "{kept} bytes kept for a 4,000-character message"
    );
    assert!(ttl > 23 * 3600 * 1000, "kept for the window: {ttl} ms left");
    let retry = server.post_json("/api/chats/lobby/messages", body).await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.expect("JSON"), original);
    server.stop().await;
}

#[tokio::test]
async fn reactions_are_added_and_removed_through_kafka() {
    let server = TestServer::start().await;
    let message: Value = server
        .post_text("lobby", "alice", "react to me")
        .await
        .json()
        .await
        .expect("JSON");
    let message_id = message["id"].as_str().expect("id");

    let added = server.react("lobby", message_id, "bob", "👍🏽").await;
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.expect("JSON");
    assert_eq!(added["action"], "add");
    assert_eq!(added["messageId"], message_id);
    assert_eq!(added["emoji"], "👍🏽");

    // The emoji travels percent-encoded in the path.
    let removed = server
        .delete(&format!(
            "/api/chats/lobby/messages/{message_id}/reactions/%F0%9F%91%8D%F0%9F%8F%BD?userId=bob"
        ))
        .await;
    assert_eq!(removed.status(), 200);
    let removed: Value = removed.json().await.expect("JSON");
    assert_eq!(removed["action"], "remove");

    let records = server.records().await;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.key == "lobby"));
    let reactions: Vec<&common::Record> = records
        .iter()
        .filter(|r| r.value["type"] == "reaction")
        .collect();
    assert_eq!(reactions.len(), 2);
    assert_eq!(reactions[0].id(), added["id"]);
    assert_eq!(
        reactions[0].value,
        json!({"type": "reaction", "chatId": "lobby", "messageId": message_id, "userId": "bob",
               "emoji": "👍🏽", "action": "add", "createdAt": added["createdAt"]})
    );
    assert_eq!(reactions[1].id(), removed["id"]);
    assert_eq!(reactions[1].value["action"], "remove");
    assert!(
        reactions[0].offset < reactions[1].offset,
        "add before remove"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = TestServer::start().await;
    let health = server.get("/healthz").await.expect("healthz");
    assert_eq!(health.status(), 200);
    // Ready once the projector owns its partitions, a moment after start.
    let ready = common::eventually(Duration::from_secs(60), "ready", || async {
        let response = server.get("/readyz").await.ok()?;
        (response.status() == 200).then_some(response)
    })
    .await;
    assert_eq!(
        ready.json::<Value>().await.expect("JSON"),
        json!({"status": "ready", "kafka": "ok", "redis": "ok", "projector": "ok"})
    );
    let posted = server.post_text("metrics", "a", "count me").await;
    assert_eq!(posted.status(), 201);
    let metrics = server
        .get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    test_support::assert_described(&metrics);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_requests_total{")
                && l.contains(r#"route="/api/chats/{chat_id}/messages""#)
                && l.contains(r#"status="201""#)),
        "requests by route and status:\n{metrics}"
    );
    assert!(
        metrics.contains("kafka_produce_duration_seconds_bucket"),
        "produce latency:\n{metrics}"
    );
    // Fetch metrics, and the projector's lag once it applied something.
    let (status, _) = server.get_json("/api/chats/metrics/messages?limit=5").await;
    assert_eq!(status, 200);
    let (status, _) = server.get_json("/api/chats/metrics/messages?limit=0").await;
    assert_eq!(status, 400);
    let metrics = common::eventually(
        std::time::Duration::from_secs(30),
        "projector metrics",
        || async {
            let text = server.get("/metrics").await.ok()?.text().await.ok()?;
            (text.contains("projector_lag_seconds") && text.contains("projector_lag_records"))
                .then_some(text)
        },
    )
    .await;
    for wanted in [
        r#"fetch_requests_total{status="200"}"#,
        r#"fetch_requests_total{status="400"}"#,
        "fetch_duration_seconds_bucket",
        "projector_events_applied_total",
    ] {
        assert!(metrics.contains(wanted), "{wanted} missing:\n{metrics}");
    }
    server.stop().await;
}

/// The client-id field is built in Rust (the claim) and in Lua (the
/// projector): a retry whose first request died before recording what it
/// became finds the message through the field the projector wrote, so the
/// two must agree.
#[tokio::test]
async fn a_retry_after_a_lost_record_finds_the_message_the_projector_saw() {
    let server = TestServer::start().await;
    let body = json!({"userId": "carol", "text": "kept", "clientMessageId": "lost-1"});
    let first = server
        .post_json("/api/chats/lobby/messages", body.clone())
        .await;
    assert_eq!(first.status(), 201);
    let original: Value = first.json().await.expect("JSON");
    let id = original["id"].as_str().expect("id").to_owned();
    eventually(
        Duration::from_secs(10),
        "the message is projected",
        || async {
            let (_, page) = server.get_json("/api/chats/lobby/messages").await;
            page["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == id.as_str()))
                .then_some(())
        },
    )
    .await;
    // As if the server died between Kafka's acknowledgement and recording
    // the message under its clientMessageId.
    let keys = server.config.redis.keys();
    let record = keys.client_message(
        &"lobby".parse().expect("chat"),
        &"carol".parse().expect("user"),
        &"lost-1".parse().expect("client message id"),
    );
    let mut conn = test_support::redis_conn(&server.config.redis).await;
    let removed: i64 = redis::cmd("DEL")
        .arg(&record)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(removed, 1, "the record was there");

    let retry = server.post_json("/api/chats/lobby/messages", body).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(
        retry.json::<Value>().await.expect("JSON")["id"],
        id.as_str()
    );
    assert_eq!(server.records().await.len(), 1, "nothing written twice");
    server.stop().await;
}

/// A chat-server that dies between its claim of a `clientMessageId` and
/// its write leaves a pending claim behind, which never lapses by itself:
/// a retry takes it over (and writes the message) only once the dead
/// server's write could no longer reach the log and the projector has
/// applied the chat's partition to its end. Until then, a retry is told to
/// retry and writes nothing.
#[tokio::test]
async fn a_claim_left_by_a_dead_server_is_taken_over_once_its_write_cannot_land() {
    let server = TestServer::start().await;
    let earlier = server.post_message("lobby", "dora", "before").await;
    server
        .until_newest("lobby", &earlier, Duration::from_secs(10))
        .await;
    let keys = server.config.redis.keys();
    let claim = |id: &str| {
        keys.client_message(
            &"lobby".parse().expect("chat"),
            &"dora".parse().expect("user"),
            &id.parse().expect("client message id"),
        )
    };
    let now = chrono::Utc::now().timestamp_millis();
    let gone_by = server.config.kafka.message_timeout().as_millis() as i64 + 2_000;
    let mut conn = test_support::redis_conn(&server.config.redis).await;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(claim("old-1"))
        .arg(format!("pending:{}:dead-1", now - gone_by))
        .arg("PX")
        .arg(600_000)
        .ignore()
        .cmd("SET")
        .arg(claim("new-1"))
        .arg(format!("pending:{now}:dead-2"))
        .arg("PX")
        .arg(600_000)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("SET");

    // Claimed longer ago than any write can take: taken over and written.
    let old = server
        .post_with_client_id("lobby", "dora", "old", "old-1")
        .await;
    assert_eq!(old.status(), 201);
    assert!(old.headers().get("idempotent-replayed").is_none());
    // Claimed just now: its server may still write it.
    let new = server
        .post_with_client_id("lobby", "dora", "new", "new-1")
        .await;
    assert_eq!(new.status(), 409);
    assert_eq!(new.headers()["retry-after"], "1");
    let records = server.records().await;
    let texts: Vec<&str> = records
        .iter()
        .filter_map(|r| r.value["text"].as_str())
        .collect();
    assert_eq!(texts, ["before", "old"], "nothing else written");
    server.stop().await;
}

/// publish-server finds a chat's partition without asking: the producer
/// places each chat where `names::partition_of` says.
#[tokio::test]
async fn each_chat_lands_in_the_partition_partition_of_names() {
    let server = TestServer::start().await;
    for n in 0..12 {
        let chat = format!("placed-{n}");
        let id: chat_core::id::EventId = server
            .post_message(&chat, "ann", "where am I")
            .await
            .parse()
            .expect("an event id");
        assert_eq!(
            id.partition,
            chat_core::names::partition_of(&chat, 3),
            "{chat}"
        );
    }
    server.stop().await;
}
