//! The projector and the fetch API, against a real Kafka-protocol broker and
//! real Redis: paging, replay, crash and restart, Redis outages, reactions.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{OwnRedis, ServerProcess, TestServer, eventually};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Waits until every id in `expected` is fetchable, and answers all messages.
async fn until_fetchable(server: &TestServer, chat: &str, expected: &[String]) -> Vec<Value> {
    eventually(PATIENCE, "messages to be fetchable", || async {
        let messages = server.all_messages(chat, 100).await;
        let have: HashSet<String> = ids(&messages).into_iter().collect();
        expected
            .iter()
            .all(|id| have.contains(id))
            .then_some(messages)
    })
    .await
}

#[tokio::test]
async fn paging_with_any_limit_visits_every_message_once_in_order_while_posts_continue() {
    let server = Arc::new(TestServer::start().await);
    let mut posted = server.post_messages("paging", "alice", "early", 60).await;
    until_fetchable(&server, "paging", &posted).await;
    let poster = {
        let server = server.clone();
        tokio::spawn(async move { server.post_messages("paging", "bob", "late", 60).await })
    };
    // Page forward from the first message while bob posts.
    for limit in [1, 7, 50, 100] {
        let base = format!("/api/chats/paging/messages?limit={limit}");
        let mut seen = vec![posted[0].clone()];
        let mut cursor = posted[0].clone();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, page) = server.get_json(&format!("{base}&after={cursor}")).await;
            assert_eq!(status, 200, "{page}");
            let page_ids = ids(page["messages"].as_array().expect("messages"));
            assert!(
                page_ids.len() <= limit,
                "limit {limit} gave {}",
                page_ids.len()
            );
            seen.extend(page_ids);
            cursor = page["cursor"].as_str().expect("cursor").to_owned();
            if page["hasMore"] == false && (poster.is_finished() || limit != 100) {
                break;
            }
            assert!(Instant::now() < deadline, "paging did not end");
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "limit {limit}: a message came twice"
        );
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, seen, "limit {limit}: out of order");
        assert!(
            posted.iter().all(|id| unique.contains(id)),
            "limit {limit}: an early message was skipped"
        );
    }
    let late = poster.await.expect("poster");
    posted.extend(late);
    let everything = until_fetchable(&server, "paging", &posted).await;
    assert_eq!(
        ids(&everything),
        posted,
        "every message once, in posting order"
    );
}

#[tokio::test]
async fn fetch_answers_latest_first_pages_unknown_chats_and_refuses_bad_cursors() {
    let server = TestServer::start().await;
    let (status, empty) = server.get_json("/api/chats/never-used/messages").await;
    assert_eq!(status, 200);
    assert_eq!(
        empty,
        json!({"chatId": "never-used", "messages": [], "cursor": null, "hasMore": false, "hasOlder": false})
    );
    let mut posted = Vec::new();
    for i in 0..5 {
        posted.push(
            server
                .post_message("latest", "alice", &format!("m{i}"))
                .await,
        );
    }
    until_fetchable(&server, "latest", &posted).await;
    let (_, page) = server.get_json("/api/chats/latest/messages?limit=2").await;
    assert_eq!(
        ids(page["messages"].as_array().expect("messages")),
        posted[3..]
    );
    assert_eq!(page["hasOlder"], true);
    assert_eq!(page["hasMore"], false);
    assert_eq!(page["cursor"], posted[4].as_str());
    let message = &page["messages"][1];
    assert_eq!(message["text"], "m4");
    assert_eq!(message["userId"], "alice");
    assert_eq!(message["reactions"], json!({}));
    let (_, default_limit) = server.get_json("/api/chats/latest/messages").await;
    assert_eq!(
        default_limit["messages"]
            .as_array()
            .expect("messages")
            .len(),
        5
    );

    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "limit=-1",
        "after=42",
        "after=0-2a",
        "before=zzz",
        &format!("after={}&before={}", posted[0], posted[1]),
    ] {
        let response = server
            .get(&format!("/api/chats/latest/messages?{bad}"))
            .await
            .expect("request completes");
        common::assert_problem(&response, 400, bad);
    }
    let (status, _) = server.get_json("/api/chats/bad.chat/messages").await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn the_same_emoji_twice_counts_once_and_removing_it_decrements_once() {
    let server = TestServer::start().await;
    let id = server.post_message("emoji", "alice", "react").await;
    // Bob's second 👍 changes nothing: 200, and nothing is written.
    for (user, emoji, status) in [
        ("bob", "👍", 201),
        ("bob", "👍", 200),
        ("carol", "👍", 201),
        ("carol", "🎉", 201),
    ] {
        let response = server.react("emoji", &id, user, emoji).await;
        assert_eq!(response.status(), status, "{user} {emoji}");
    }
    let counts = |want: Value| {
        let server = &server;
        async move {
            eventually(PATIENCE, "reaction counts", || async {
                let (_, page) = server.get_json("/api/chats/emoji/messages").await;
                (page["messages"][0]["reactions"] == want).then_some(())
            })
            .await
        }
    };
    counts(json!({"👍": 2, "🎉": 1})).await;
    for _ in 0..2 {
        let response = server.unreact("emoji", &id, "bob", "👍").await;
        assert_eq!(response.status(), 200);
    }
    counts(json!({"👍": 1, "🎉": 1})).await;
    let response = server.unreact("emoji", &id, "carol", "🎉").await;
    assert_eq!(response.status(), 200);
    counts(json!({"👍": 1})).await;
    // A fetch naming a user tells which emojis that user holds.
    let mine = |user: &str| {
        let server = &server;
        let path = format!("/api/chats/emoji/messages?userId={user}");
        async move { server.get_json(&path).await.1["messages"][0]["mine"].clone() }
    };
    assert_eq!(mine("carol").await, json!(["👍"]));
    assert_eq!(mine("bob").await, json!([]));
    let (_, anonymous) = server.get_json("/api/chats/emoji/messages").await;
    assert!(anonymous["messages"][0].get("mine").is_none());
    let (status, _) = server
        .get_json("/api/chats/emoji/messages?userId=not%20a%20user")
        .await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn a_reaction_on_a_message_that_does_not_exist_is_404_and_writes_nothing() {
    let server = TestServer::start().await;
    let id = server.post_message("missing", "alice", "real").await;
    let reaction: Value = server
        .react("missing", &id, "bob", "👍")
        .await
        .json()
        .await
        .expect("JSON");
    let reaction_id = reaction["id"].as_str().expect("id");
    let partition: i32 = id
        .split('-')
        .next()
        .expect("partition")
        .parse()
        .expect("number");
    let other_partition = format!("{}-0000000000000000", (partition + 1) % 3);
    let before = server.records().await.len();
    for missing in [reaction_id, other_partition.as_str()] {
        let response = server.react("missing", missing, "bob", "👍").await;
        common::assert_problem(&response, 404, missing);
        let response = server.unreact("missing", missing, "bob", "👍").await;
        assert_eq!(response.status(), 404, "{missing}");
    }
    assert_eq!(server.records().await.len(), before, "404s wrote nothing");
    server.stop().await;
}

#[tokio::test]
async fn an_id_the_chats_log_cannot_hold_is_404_at_once_not_after_the_wait() {
    // Long enough that a 404 within it cannot come from the wait.
    let server = TestServer::start_configured(|c| c.writes.reaction_wait_ms = 10_000).await;
    let empty = common::unique("empty");
    let own = chat_core::names::partition_of(&empty, 3);
    let mut made_up: Vec<(String, String)> = (0..3)
        .filter(|p| *p != own)
        .map(|p| (empty.clone(), format!("{p}-0000000000000000")))
        .collect();
    made_up.push((empty.clone(), "7-0000000000000000".to_owned()));
    made_up.push((empty.clone(), format!("{own}-0000ffffffffffff")));
    // A chat with messages: its own partition, past the log's end.
    let id = server.post_message("busy", "alice", "real").await;
    let partition = id.split('-').next().expect("partition");
    made_up.push(("busy".to_owned(), format!("{partition}-0000ffffffffffff")));
    let before = server.records().await.len();
    for (chat, message) in &made_up {
        let started = Instant::now();
        let response = server.react(chat, message, "bob", "👍").await;
        common::assert_problem(&response, 404, &format!("{chat} {message}"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{chat} {message}: answered after {:?}, not at once",
            started.elapsed()
        );
    }
    assert_eq!(server.records().await.len(), before, "404s wrote nothing");
    server.stop().await;
}

/// An id just past the end of the chat's partition: the first look cannot
/// tell it from a record in a batch the broker reports short, so it waits;
/// then, with the projector at the end, it is 404, not 503.
#[tokio::test]
async fn a_made_up_id_just_past_the_end_is_404_after_the_wait() {
    let server = TestServer::start_configured(|c| c.writes.reaction_wait_ms = 500).await;
    let id = server.post_message("edge", "alice", "last").await;
    let (partition, offset) = id.split_once('-').expect("id");
    let offset = i64::from_str_radix(offset, 16).expect("hex");
    server.until_newest("edge", &id, PATIENCE).await;
    let past = format!("{partition}-{:016x}", offset + 3);
    let response = server.react("edge", &past, "bob", "👍").await;
    assert_eq!(response.status(), 404, "{past}");
    server.stop().await;
}

#[tokio::test]
async fn a_message_holds_at_most_the_distinct_emojis_allowed() {
    let server = TestServer::start_configured(|c| c.writes.max_emojis_per_message = 3).await;
    let chat = common::unique("emojis");
    let id = server.post_message(&chat, "alice", "react").await;
    let react = |user: &'static str, emoji: &'static str| {
        let (server, chat, id) = (&server, &chat, &id);
        async move { server.react(chat, id, user, emoji).await }
    };
    let counts = || {
        let (server, chat) = (&server, &chat);
        async move {
            let (_, page) = server
                .get_json(&format!("/api/chats/{chat}/messages"))
                .await;
            page["messages"][0]["reactions"].clone()
        }
    };
    for emoji in ["👍", "🎉", "😂"] {
        assert_eq!(react("alice", emoji).await.status(), 201, "{emoji}");
    }
    eventually(PATIENCE, "three emojis applied", || async {
        (counts().await.as_object().map(|c| c.len()) == Some(3)).then_some(())
    })
    .await;
    let refused = react("bob", "🚀").await;
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.expect("problem JSON");
    assert_eq!(problem["type"], "urn:chat:problem:too-many-emojis");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains('3')),
        "{problem}"
    );
    // An emoji the message holds is still welcome.
    assert_eq!(react("bob", "👍").await.status(), 201);
    let response = server.unreact(&chat, &id, "alice", "🎉").await;
    assert_eq!(response.status(), 200);
    eventually(PATIENCE, "a freed place takes a new emoji", || async {
        (react("bob", "🚀").await.status() == 201).then_some(())
    })
    .await;
    eventually(PATIENCE, "counts", || async {
        (counts().await == json!({"👍": 2, "😂": 1, "🚀": 1})).then_some(())
    })
    .await;

    // Adds that race past the handler's check are dropped by the projector.
    let raced = server.post_message(&chat, "alice", "race").await;
    let emojis = ["👍", "🎉", "😂", "🚀", "🔥", "👀", "🙏", "💯", "✅", "🤔"];
    let answers = futures::future::join_all(emojis.iter().enumerate().map(|(n, emoji)| {
        let (server, chat, raced) = (&server, &chat, &raced);
        async move {
            server
                .react(chat, raced, &format!("u{n}"), emoji)
                .await
                .status()
                .as_u16()
        }
    }))
    .await;
    assert!(
        answers.iter().all(|s| *s == 201 || *s == 409),
        "{answers:?}"
    );
    assert!(
        answers.iter().filter(|s| **s == 201).count() >= 3,
        "{answers:?}"
    );
    // The projector applies a partition in order: once a later message is
    // fetchable, every raced reaction has been applied (or dropped).
    let after = server.post_message(&chat, "alice", "after").await;
    let held = eventually(PATIENCE, "the raced reactions applied", || async {
        let (_, page) = server
            .get_json(&format!("/api/chats/{chat}/messages"))
            .await;
        let messages = page["messages"].as_array()?;
        messages.iter().find(|m| m["id"] == after.as_str())?;
        let raced = messages.iter().find(|m| m["id"] == raced.as_str())?;
        Some(raced["reactions"].as_object()?.len())
    })
    .await;
    assert_eq!(held, 3);
    server.stop().await;
}

/// Polls `/readyz` until it answers 200; how long that took.
async fn until_ready(server: &TestServer, started: Instant) -> Duration {
    eventually(Duration::from_secs(60), "/readyz 200", || async {
        let response = server.get("/readyz").await.ok()?;
        (response.status() == 200).then(|| started.elapsed())
    })
    .await
}

#[tokio::test]
async fn once_ready_a_post_is_fetchable_at_once_and_takes_reactions() {
    let started = Instant::now();
    let config = common::config();
    let server = TestServer::start_with(config.clone()).await;
    let took = until_ready(&server, started).await;
    let chat = common::unique("ready");
    let id = server.post_message(&chat, "alice", "first words").await;
    let posted = Instant::now();
    server.until_newest(&chat, &id, PATIENCE).await;
    let fetchable = posted.elapsed();
    assert!(
        fetchable < Duration::from_millis(1500),
        "fetchable {fetchable:?} after its 201, though the server was ready"
    );
    let reaction = server.react(&chat, &id, "bob", "👍").await;
    assert_eq!(reaction.status(), 201);

    // A second member joining the running group.
    let joined = Instant::now();
    let second = TestServer::start_with(config).await;
    let second_took = until_ready(&second, joined).await;
    eprintln!("ready after {took:?}; a member joining the running group after {second_took:?}");
    second.stop().await;
    server.stop().await;
}

/// Everything a user can see of a chat: messages, counts and the cursor,
/// as one walk through its pages saw them.
async fn snapshot(server: &TestServer, chat: &str) -> (Vec<Value>, Value) {
    server.walk(chat, 100).await
}

#[tokio::test]
async fn replaying_the_topic_into_an_empty_redis_reproduces_the_read_model() {
    let original = TestServer::start().await;
    let mut posted = Vec::new();
    for i in 0..30 {
        posted.push(
            original
                .post_message("replay", &format!("u{}", i % 4), &format!("text {i}"))
                .await,
        );
    }
    for (i, id) in posted.iter().enumerate() {
        for user in ["a", "b", "c"].iter().take(i % 4) {
            let r = original.react("replay", id, user, "👍").await;
            assert_eq!(r.status(), 201);
        }
        if i % 3 == 0 {
            let r = original.unreact("replay", id, "a", "👍").await;
            assert_eq!(r.status(), 200);
        }
    }
    // The last event written is the head every replay must reach.
    let last = original.last_event_id().await;
    let wanted = eventually(PATIENCE, "the original read model", || async {
        let snap = snapshot(&original, "replay").await;
        (snap.1 == last.as_str()).then_some(snap)
    })
    .await;
    assert_eq!(ids(&wanted.0), posted);

    // A second server with an empty key prefix and a new consumer group
    // reads the log from the beginning.
    let mut config = common::config();
    config.kafka.topic = original.config.kafka.topic.clone();
    let rebuilt = TestServer::start_with(config).await;
    let got = eventually(PATIENCE, "the rebuilt read model", || async {
        let snap = snapshot(&rebuilt, "replay").await;
        (snap.1 == last.as_str()).then_some(snap)
    })
    .await;
    assert_eq!(got, wanted);

    // Replaying again over the existing state changes nothing.
    let mut config = common::config();
    config.kafka.topic = original.config.kafka.topic.clone();
    config.redis.key_prefix = original.config.redis.key_prefix.clone();
    let replayer = TestServer::start_with(config).await;
    replayer.until_projector_caught_up().await;
    let seen = snapshot(&replayer, "replay").await;
    let mut context = String::new();
    if seen != wanted {
        // What Redis holds, node by node, and what a second look shows.
        let keys = replayer
            .config
            .redis
            .keys()
            .chat(&"replay".parse().expect("chat"));
        let held = test_support::describe_keys(
            &replayer.config.redis,
            &[keys.messages, keys.bodies, keys.head],
        )
        .await;
        let again = snapshot(&replayer, "replay").await;
        context = format!(
            "a second look: {} messages, cursor {}; Redis holds:\n{held}",
            again.0.len(),
            again.1
        );
    }
    assert_eq!(seen, wanted, "{context}");
    for server in [original, rebuilt, replayer] {
        server.stop().await;
    }
}

/// Four writers each post 15 messages to chat `crash`, and on each: 👍 by x
/// twice (the second changes nothing: 200) and by y, then y removes it, so
/// every message ends with 👍 = 1.
fn spawn_writers(api: &Arc<TestServer>, round: u32) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..4)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..15 {
                    let id = api
                        .post_message("crash", &format!("w{w}"), &format!("r{round} w{w} {i}"))
                        .await;
                    for (user, status) in [("x", 201), ("x", 200), ("y", 201)] {
                        let r = api.react("crash", &id, user, "👍").await;
                        assert_eq!(r.status(), status, "{user}");
                    }
                    let r = api.unreact("crash", &id, "y", "👍").await;
                    assert_eq!(r.status(), 200);
                    mine.push(id);
                }
                mine
            })
        })
        .collect()
}

#[tokio::test]
async fn killing_and_restarting_the_projector_loses_nothing_and_double_counts_nothing() {
    // The API server here only writes; a chat-server process of its own
    // projects, and is killed with SIGKILL while events stream in.
    let mut config = common::config();
    config.projector.run = false;
    config.writes.reaction_wait_ms = 30_000;
    let api = Arc::new(TestServer::start_with(config.clone()).await);
    let mut projector_config = config;
    projector_config.projector.run = true;
    let projector = ServerProcess::start(&projector_config);

    let mut writers = spawn_writers(&api, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    projector.kill();
    // The replacement joins while the dead member is still in the group:
    // Kafka hands it the partitions once the dead member's session (10 s)
    // has lapsed. Writers go on meanwhile.
    let _restarted = ServerProcess::start(&projector_config);
    writers.extend(spawn_writers(&api, 1));
    let mut expected = Vec::new();
    for writer in writers {
        expected.extend(writer.await.expect("writer"));
    }

    let last = api.last_event_id().await;
    eventually(
        PATIENCE,
        "the projector to reach the end of the log",
        || async {
            let (_, page) = api.get_json("/api/chats/crash/messages?limit=1").await;
            (page["cursor"] == last.as_str()).then_some(())
        },
    )
    .await;
    let messages = api.all_messages("crash", 100).await;
    let mut got = ids(&messages);
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "every message once");
    for message in &messages {
        assert_eq!(
            message["reactions"],
            json!({"👍": 1}),
            "counts of {}",
            message["id"]
        );
    }
}

#[tokio::test]
async fn with_redis_stopped_fetch_answers_503_fast_posts_go_on_and_the_projector_catches_up() {
    let mut redis = OwnRedis::start();
    let mut config = common::config();
    config.redis.url = redis.url();
    config.redis.cluster_nodes.clear();
    config.redis.timeout_ms = 500;
    let server = TestServer::start_with(config).await;
    let mut posted = vec![server.post_message("outage", "alice", "before").await];
    until_fetchable(&server, "outage", &posted).await;

    redis.kill();
    let started = Instant::now();
    let response = server
        .get("/api/chats/outage/messages")
        .await
        .expect("request completes");
    let took = started.elapsed();
    common::assert_problem(&response, 503, "a fetch without Redis");
    // The Redis timeout is 0.5 s; three more seconds of slack for a loaded machine.
    assert!(took < Duration::from_millis(3500), "fetch took {took:?}");
    posted.extend(server.post_messages("outage", "alice", "during", 5).await);
    let ready = server.get("/readyz").await.expect("readyz");
    assert_eq!(ready.status(), 503);

    redis.restart();
    let messages = until_fetchable(&server, "outage", &posted).await;
    assert_eq!(ids(&messages), posted);
    server.stop().await;
}

/// The bytes Redis says it holds (`INFO memory`'s `used_memory`).
async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

/// Redis at its `maxmemory` with `noeviction` refuses writes: posts go on
/// (Kafka is the log), a post with a `clientMessageId` answers 503, fetches
/// answer what Redis holds, and once Redis has room the projector catches
/// up with nothing lost.
#[tokio::test]
async fn a_full_redis_refuses_writes_and_the_projector_catches_up_when_it_has_room() {
    let redis = OwnRedis::start();
    let mut config = common::config();
    config.redis.url = redis.url();
    config.redis.cluster_nodes.clear();
    let server = TestServer::start_with(config).await;
    let client = redis::Client::open(redis.url().as_str()).expect("redis");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let used = used_memory(&mut conn).await;
    let set = |name: &'static str, value: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async::<()>(&mut conn)
                .await
                .expect("CONFIG SET");
        }
    };
    set("maxmemory-policy", "noeviction".into()).await;
    set("maxmemory", (used + 200 * 1024).to_string()).await;

    // Something else fills it to the brim.
    let filler = "f".repeat(16 * 1024);
    let mut filling = conn.clone();
    for n in 0.. {
        let written: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{n}"))
            .arg(&filler)
            .query_async(&mut filling)
            .await;
        if written.is_err() {
            break;
        }
    }
    // Full to the brim is not full for good: a client's query buffer
    // freed afterwards leaves room for a small write. Pin the limit under
    // what Redis now holds, so it stays over it.
    let now_used = used_memory(&mut filling).await;
    set("maxmemory", (now_used - 64 * 1024).to_string()).await;
    let text = "z".repeat(4000);
    let mut posted = Vec::new();
    for _ in 0..20 {
        posted.push(server.post_message("full", "alice", &text).await);
    }
    let refused = server
        .post_with_client_id("full", "alice", "kept?", "oom-1")
        .await;
    assert_eq!(refused.status(), 503);
    let (status, page) = server.get_json("/api/chats/full/messages?limit=100").await;
    assert_eq!(status, 200, "reads go on");
    assert_eq!(
        page["messages"],
        json!([]),
        "Redis is full: nothing projected"
    );

    set("maxmemory", "0".into()).await;
    let messages = until_fetchable(&server, "full", &posted).await;
    assert_eq!(ids(&messages), posted, "every message once, in order");
    server.stop().await;
}
