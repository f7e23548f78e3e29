//! A reaction change that changes nothing is never written: every
//! reaction event in the log changes the read model, so the live counts
//! that streams derive from the log never move on a no-op. That holds for
//! repeated and concurrent requests and at the emoji cap.

mod common;

use std::time::Duration;

use common::{Record, TestServer, eventually};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

/// A server whose reaction requests may wait long for a change of the same
/// reaction in flight (a loaded machine acknowledges slowly).
async fn server(max_emojis: u32) -> TestServer {
    let mut config = common::config();
    config.writes.reaction_wait_ms = 20_000;
    config.writes.max_emojis_per_message = max_emojis;
    TestServer::start_with(config).await
}

/// The reaction records of `message` in the topic, in log order.
async fn reaction_records(server: &TestServer, message: &str) -> Vec<Record> {
    server
        .records()
        .await
        .into_iter()
        .filter(|r| r.value["type"] == "reaction" && r.value["messageId"] == message)
        .collect()
}

/// Folds reaction records as the projector does, asserting that each one
/// changes something: an add of a reaction not held, a remove of one held.
fn fold_each_changing(records: &[Record]) -> std::collections::BTreeMap<String, i64> {
    let mut held = std::collections::BTreeSet::new();
    for record in records {
        let key = (
            record.value["emoji"].as_str().expect("emoji").to_owned(),
            record.value["userId"].as_str().expect("user").to_owned(),
        );
        let changed = if record.value["action"] == "add" {
            held.insert(key)
        } else {
            held.remove(&key)
        };
        assert!(changed, "{} changes nothing: {records:?}", record.id());
    }
    let mut counts = std::collections::BTreeMap::new();
    for (emoji, _) in held {
        *counts.entry(emoji).or_insert(0) += 1;
    }
    counts
}

/// Sends `requests` at once and checks how many answered each status.
async fn assert_statuses(
    requests: impl IntoIterator<Item = impl std::future::Future<Output = reqwest::Response>>,
    want: &[(u16, usize)],
) {
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    for &(status, count) in want {
        assert_eq!(
            statuses.iter().filter(|s| **s == status).count(),
            count,
            "{count} answers {status}: {statuses:?}"
        );
    }
}

/// The fetch API's counts of `chat`'s latest message.
async fn counts(server: &TestServer, chat: &str) -> Value {
    let (_, page) = server
        .get_json(&format!("/api/chats/{chat}/messages?limit=1"))
        .await;
    page["messages"][0]["reactions"].clone()
}

#[tokio::test]
async fn a_repeated_add_and_a_remove_of_nothing_answer_unchanged_and_write_nothing() {
    let server = server(20).await;
    let chat = common::unique("noop");
    let id = server.post_message(&chat, "alice", "react to me").await;

    let first = server.react(&chat, &id, "bob", "👍").await;
    assert_eq!(first.status(), 201, "the first add is a change");
    let first: Value = first.json().await.expect("JSON");
    assert!(first["id"].is_string(), "{first}");

    let again = server.react(&chat, &id, "bob", "👍").await;
    assert_eq!(again.status(), 200, "a repeated add changes nothing");
    let again: Value = again.json().await.expect("JSON");
    assert_eq!(again["changed"], false, "{again}");
    assert!(again.get("id").is_none(), "nothing was written: {again}");
    assert_eq!(again["messageId"], id.as_str());

    let nothing = server.unreact(&chat, &id, "mallory", "👍").await;
    assert_eq!(
        nothing.status(),
        200,
        "a remove of a reaction not held changes nothing"
    );
    let nothing: Value = nothing.json().await.expect("JSON");
    assert_eq!(nothing["changed"], false, "{nothing}");

    // Positive control: bob's remove does change it, and is written.
    let removed = server.unreact(&chat, &id, "bob", "👍").await;
    assert_eq!(removed.status(), 200);
    let removed: Value = removed.json().await.expect("JSON");
    assert!(removed["id"].is_string(), "{removed}");

    let records = reaction_records(&server, &id).await;
    assert_eq!(
        records.len(),
        2,
        "the add and the remove, nothing else: {records:?}"
    );
    assert!(fold_each_changing(&records).is_empty());
    eventually(PATIENCE, "no counts left", || async {
        (counts(&server, &chat).await == json!({})).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn concurrent_changes_of_one_reaction_write_only_what_changes_something() {
    let server = server(20).await;
    let chat = common::unique("race");
    let id = server.post_message(&chat, "alice", "race on me").await;

    // Twenty identical adds at once: one is written.
    let adds = (0..20).map(|_| server.react(&chat, &id, "carol", "👍"));
    assert_statuses(adds, &[(201, 1), (200, 19)]).await;

    // Adds and removes of one reaction at once, by one user: whatever is
    // written alternates, as the log's order says.
    let changes = (0..20).map(|n| {
        let server = &server;
        let (chat, id) = (&chat, &id);
        async move {
            if n % 2 == 0 {
                server.react(chat, id, "dave", "🎉").await
            } else {
                server.unreact(chat, id, "dave", "🎉").await
            }
        }
    });
    for response in futures::future::join_all(changes).await {
        assert!(
            matches!(response.status().as_u16(), 200 | 201),
            "{}",
            response.status()
        );
    }

    let records = reaction_records(&server, &id).await;
    let folded = fold_each_changing(&records);
    eventually(PATIENCE, "the fetch API to show the log's fold", || async {
        let shown: std::collections::BTreeMap<String, i64> =
            serde_json::from_value(counts(&server, &chat).await).unwrap_or_default();
        (shown == folded).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn concurrent_new_emojis_cannot_pass_the_cap_together() {
    let server = server(3).await;
    let chat = common::unique("cap");
    let id = server.post_message(&chat, "alice", "cap me").await;
    for (user, emoji) in [("u1", "👍"), ("u2", "🎉")] {
        assert_eq!(server.react(&chat, &id, user, emoji).await.status(), 201);
    }
    let emojis = ["😂", "🚀", "❤️", "🔥", "👀", "💯", "🙏", "✅"];
    let adds = emojis.iter().enumerate().map(|(n, emoji)| {
        let server = &server;
        let (chat, id) = (&chat, &id);
        async move { server.react(chat, id, &format!("new{n}"), emoji).await }
    });
    // One place left.
    assert_statuses(adds, &[(201, 1), (409, 7)]).await;

    let records = reaction_records(&server, &id).await;
    assert_eq!(
        records.len(),
        3,
        "every add written is applied: {records:?}"
    );
    let folded = fold_each_changing(&records);
    assert_eq!(folded.len(), 3);
    eventually(PATIENCE, "three emojis shown", || async {
        let shown = counts(&server, &chat).await;
        (shown.as_object().map(|c| c.len()) == Some(3)).then_some(())
    })
    .await;
    server.stop().await;
}
