//! Hot chats on the stream: reactions coalesced into at most one
//! `reactions` event per message per second with absolute counts, messages
//! at once; a cold chat's reactions one by one, at once.

mod common;

use std::time::{Duration, Instant};

use common::{Event, Subscriber, World};

/// Flags `chat` hot the way the scheduler does.
async fn flag_hot(world: &World, chat: &str) {
    let keys = chat_core::names::Keys::new(world.prefix.clone());
    test_support::flag_hot(&keys, chat).await;
}

/// Flags `chat` hot, waits for publish-server to know it (it resyncs the
/// flags every second), and subscribes to it.
async fn hot_subscriber(world: &World, publish: &test_support::Running, chat: &str) -> Subscriber {
    flag_hot(world, chat).await;
    publish.until_knows_hot(chat).await;
    let url = publish.url(&format!("/api/chats/{chat}/events"));
    Subscriber::open(&world.http, &url, None).await
}

/// Users `u0`, `u1`... add `emoji` on `message` of `hot-room`.
async fn react_as_many(
    world: &World,
    chat: std::net::SocketAddr,
    message: &str,
    users: usize,
    emoji: &str,
) {
    for user in 0..users {
        react(
            world,
            chat,
            "hot-room",
            message,
            &format!("u{user}"),
            emoji,
            true,
        )
        .await;
    }
}

/// Adds or removes a reaction through chat-server; answers its event id
/// (none when it changed nothing, and so was not written).
async fn react(
    world: &World,
    chat: std::net::SocketAddr,
    room: &str,
    message: &str,
    user: &str,
    emoji: &str,
    add: bool,
) -> Option<String> {
    let base = format!("http://{chat}/api/chats/{room}/messages/{message}/reactions");
    let response = if add {
        world
            .http
            .post(&base)
            .json(&serde_json::json!({"userId": user, "emoji": emoji}))
            .send()
            .await
    } else {
        let emoji: String = emoji.bytes().map(|b| format!("%{b:02X}")).collect();
        world
            .http
            .delete(format!("{base}/{emoji}?userId={user}"))
            .send()
            .await
    }
    .expect("reaction request");
    assert!(response.status().is_success(), "{}", response.status());
    let body: serde_json::Value = response.json().await.expect("JSON");
    // No id: the change changed nothing, and was not written.
    body["id"].as_str().map(str::to_owned)
}

/// Events that arrive within `window`, each with when it arrived.
async fn collect(subscriber: &mut Subscriber, window: Duration) -> Vec<(Instant, Event)> {
    let deadline = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, subscriber.events.recv()).await {
        got.push((Instant::now(), event));
    }
    got
}

#[tokio::test]
async fn a_hot_chat_gets_coalesced_reactions_and_immediate_messages() {
    let (world, chat, publish) = World::start().await;
    let mut hot = hot_subscriber(&world, &publish, "hot-room").await;
    let mut cold = Subscriber::open(
        &world.http,
        &publish.url("/api/chats/cold-room/events"),
        None,
    )
    .await;

    let first = world.post(chat.addr, "hot-room", "first").await;
    let posted = Instant::now();
    let got = hot.take(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].event, "message");
    assert!(
        posted.elapsed() < Duration::from_millis(900),
        "a message is not held back"
    );

    react_as_many(&world, chat.addr, &first, 10, "👍").await;
    react_as_many(&world, chat.addr, &first, 4, "🎉").await;
    // Counted once per user (a second add is not even written), and a
    // removal counts down.
    let again = react(&world, chat.addr, "hot-room", &first, "u0", "👍", true).await;
    assert_eq!(again, None, "a repeated add changes nothing");
    let last_reaction = react(&world, chat.addr, "hot-room", &first, "u1", "👍", false)
        .await
        .expect("a remove of a held reaction is written");
    let second = world.post(chat.addr, "hot-room", "second").await;
    let posted = Instant::now();
    let events = collect(&mut hot, Duration::from_millis(3500)).await;
    let message_at = events
        .iter()
        .find(|(_, e)| e.event == "message" && e.data["id"] == second.as_str())
        .map(|(at, _)| *at)
        .expect("the second message arrives");
    assert!(
        message_at - posted < Duration::from_millis(900),
        "a message is not held back"
    );
    assert!(
        events.iter().all(|(_, e)| e.event != "reaction"),
        "no reaction one by one in a hot chat: {events:?}"
    );
    let coalesced: Vec<&(Instant, Event)> = events
        .iter()
        .filter(|(_, e)| e.event == "reactions" && e.data["messageId"] == first.as_str())
        .collect();
    assert!(!coalesced.is_empty(), "counts arrive: {events:?}");
    for pair in coalesced.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(900),
            "at most one reactions event per message per second"
        );
    }
    let (_, newest) = coalesced.last().expect("one");
    assert!(
        newest.id.is_none(),
        "a reactions event moves no Last-Event-ID"
    );
    assert_eq!(
        newest.data["reactions"],
        serde_json::json!({"👍": 9, "🎉": 4})
    );
    let as_of = newest.data["asOf"].as_str().expect("asOf");
    assert!(
        as_of >= last_reaction.as_str(),
        "the counts include the last reaction ({as_of} < {last_reaction})"
    );
    let page: serde_json::Value =
        test_support::get_json(&world.http, &chat.url("/api/chats/hot-room/messages")).await;
    assert_eq!(
        page["messages"][0]["reactions"], newest.data["reactions"],
        "the same counts as the fetch API"
    );

    // A cold chat's reaction goes out by itself, at once.
    let message = world.post(chat.addr, "cold-room", "hello").await;
    react(&world, chat.addr, "cold-room", &message, "u9", "👍", true).await;
    let reacted = Instant::now();
    let got = cold.take(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].event, "reaction");
    assert!(reacted.elapsed() < Duration::from_millis(900));

    common::stop([publish, chat]).await;
}

/// More messages than the live channel holds frames change in one second:
/// their counts still reach a subscriber, every one of them.
#[tokio::test]
async fn coalescing_above_the_live_channel_loses_no_counts() {
    const MESSAGES: usize = 300;
    let (world, chat, publish) = World::start().await;
    let mut subscriber = hot_subscriber(&world, &publish, "busy-room").await;
    let mut ids = Vec::with_capacity(MESSAGES);
    for chunk in 0..MESSAGES / 50 {
        let texts: Vec<String> = (0..50).map(|i| format!("m{chunk}-{i}")).collect();
        let posts = texts
            .iter()
            .map(|text| world.post(chat.addr, "busy-room", text));
        ids.extend(futures::future::join_all(posts).await);
    }
    // Every message gets one 👍, all at once: well over a hundred messages
    // owe counts in the same second.
    let reactions = ids
        .iter()
        .map(|id| react(&world, chat.addr, "busy-room", id, "fan", "👍", true));
    futures::future::join_all(reactions).await;
    let events = collect(&mut subscriber, Duration::from_secs(6)).await;
    let kinds = events
        .iter()
        .fold(std::collections::BTreeMap::new(), |mut kinds, (_, e)| {
            *kinds.entry(e.event.clone()).or_insert(0) += 1;
            kinds
        });
    let counted: std::collections::HashMap<String, serde_json::Value> = events
        .into_iter()
        .filter(|(_, e)| e.event == "reactions")
        .map(|(_, e)| {
            (
                e.data["messageId"].as_str().expect("id").to_owned(),
                e.data["reactions"].clone(),
            )
        })
        .collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !counted.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {MESSAGES} messages got no counts; events by kind: {kinds:?}",
        missing.len()
    );
    for id in &ids {
        assert_eq!(counted[id], serde_json::json!({"👍": 1}), "{id}");
    }
    common::stop([publish, chat]).await;
}

/// What one member of a hot chat holds: the messages of its page, then of
/// its stream, each with counts and the event they are as of.
#[derive(Default)]
struct Member {
    /// Message id to (counts, as of).
    messages: std::collections::HashMap<String, (serde_json::Value, String)>,
}

/// Compares two event ids of one chat (`<partition>-<16 hex digits>`).
fn later(a: &str, b: &str) -> bool {
    a > b
}

impl Member {
    fn from_page(page: &serde_json::Value) -> Self {
        let cursor = page["cursor"].as_str().expect("cursor").to_owned();
        let messages = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                let id = m["id"].as_str().expect("id").to_owned();
                (id, (m["reactions"].clone(), cursor.clone()))
            })
            .collect();
        Self { messages }
    }

    /// Applies one stream event as the web UI does.
    fn apply(&mut self, event: &Event) {
        match event.event.as_str() {
            "message" => {
                let id = event.data["id"].as_str().expect("id").to_owned();
                let again = self
                    .messages
                    .insert(id.clone(), (serde_json::json!({}), id.clone()));
                assert!(again.is_none(), "message {id} arrived twice");
            }
            "reaction" => {
                let id = event.id.clone().expect("a reaction has an id");
                let message = event.data["messageId"].as_str().expect("message");
                let Some((counts, as_of)) = self.messages.get_mut(message) else {
                    return;
                };
                if !later(&id, as_of) {
                    return;
                }
                let emoji = event.data["emoji"].as_str().expect("emoji");
                let n = counts[emoji].as_i64().unwrap_or(0)
                    + if event.data["action"] == "add" { 1 } else { -1 };
                let map = counts.as_object_mut().expect("counts");
                if n > 0 {
                    map.insert(emoji.to_owned(), n.into());
                } else {
                    map.remove(emoji);
                }
                *as_of = id;
            }
            "reactions" => {
                let message = event.data["messageId"].as_str().expect("message");
                let event_as_of = event.data["asOf"].as_str().expect("asOf");
                if let Some((counts, as_of)) = self.messages.get_mut(message)
                    && !later(as_of, event_as_of)
                {
                    *counts = event.data["reactions"].clone();
                    *as_of = event_as_of.to_owned();
                }
            }
            _ => {}
        }
    }
}

/// Members of a hot chat fetch its page, answered from the shared
/// snapshot, and stream from its cursor while others post and react: each
/// sees every message once, and ends with the chat's own counts.
#[tokio::test]
async fn a_snapshot_page_then_its_stream_gives_every_event_once_with_matching_counts() {
    const ROOM: &str = "snap-room";
    let (world, chat, publish) = World::start().await;
    let mut seeds = Vec::new();
    for n in 0..10 {
        seeds.push(world.post(chat.addr, ROOM, &format!("seed {n}")).await);
    }
    flag_hot(&world, ROOM).await;
    chat.until_knows_hot(ROOM).await;
    publish.until_knows_hot(ROOM).await;

    let writers = {
        let (world, addr, seeds) = (world.clone(), chat.addr, seeds.clone());
        tokio::spawn(async move {
            let posts = async {
                for n in 0..25 {
                    world.post(addr, ROOM, &format!("live {n}")).await;
                    tokio::time::sleep(Duration::from_millis(80)).await;
                }
            };
            let reactions = async {
                for n in 0..60 {
                    let message = &seeds[n % seeds.len()];
                    let user = format!("fan{}", n / seeds.len());
                    let emoji = if n % 3 == 0 { "🎉" } else { "👍" };
                    react(&world, addr, ROOM, message, &user, emoji, true).await;
                    if n % 7 == 6 {
                        react(&world, addr, ROOM, message, &user, emoji, false).await;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            };
            tokio::join!(posts, reactions);
        })
    };
    let mut members = Vec::new();
    for n in 0..4 {
        let response = test_support::get(
            &world.http,
            &chat.url(&format!(
                "/api/chats/{ROOM}/messages?limit=100&userId=member-{n}"
            )),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers().contains_key("snapshot-age-ms"),
            "answered from the snapshot"
        );
        let page: serde_json::Value = response.json().await.expect("JSON");
        let cursor = page["cursor"].as_str().expect("cursor").to_owned();
        let url = publish.url(&format!("/api/chats/{ROOM}/events"));
        let subscriber = Subscriber::open(&world.http, &url, Some(&cursor)).await;
        members.push((Member::from_page(&page), cursor, subscriber));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    writers.await.expect("the writers finish");
    // The last coalesced counts go out within the second after the
    // projector applied them: each member's view converges to the fetch
    // API's, or the test fails at the deadline with both.
    for (n, (mut member, cursor, mut subscriber)) in members.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let truth: serde_json::Value = test_support::get_json(
                &world.http,
                &chat.url(&format!("/api/chats/{ROOM}/messages?limit=100")),
            )
            .await;
            let truth: std::collections::HashMap<String, serde_json::Value> = truth["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| {
                    (
                        m["id"].as_str().expect("id").to_owned(),
                        m["reactions"].clone(),
                    )
                })
                .collect();
            let held: std::collections::HashMap<String, serde_json::Value> = member
                .messages
                .iter()
                .map(|(id, (counts, _))| (id.clone(), counts.clone()))
                .collect();
            if truth.len() == 35 && held == truth {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {n} holds {held:?}, the fetch API {truth:?}"
            );
            for (_, event) in collect(&mut subscriber, Duration::from_millis(200)).await {
                if let Some(id) = &event.id {
                    assert!(later(id, &cursor), "member {n}: {id} is not after {cursor}");
                }
                member.apply(&event);
            }
        }
    }
    common::stop([publish, chat]).await;
}

/// The coalescer reads the counts of every message a hot chat's reactions
/// touched in one call. After a projector lag that can be many thousands:
/// one call must still answer them all (Lua's `unpack` stops near 8,000).
#[tokio::test]
async fn the_counts_of_ten_thousand_messages_are_read_in_one_call() {
    let world = World::new();
    let config = world.publish_config();
    let redis = chat_core::redis_conn::RedisConn::new(&config.redis).expect("redis");
    let model = chat_core::read_model::ReadModel::reader(config.redis.keys(), &config.kafka.topic);
    let chat: chat_core::validate::ChatId = "many-counts".parse().expect("chat");
    let messages: Vec<chat_core::id::EventId> = (0..10_000)
        .map(|offset| chat_core::id::EventId::new(0, offset))
        .collect();
    let counts = model
        .counts(&redis, &chat, &messages)
        .await
        .expect("one call answers every message");
    assert_eq!(counts.counts.len(), 10_000);
}
