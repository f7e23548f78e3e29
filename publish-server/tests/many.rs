//! Many chats on one stream (`/api/events?chat=a&chat=b`), against a real
//! Kafka-compatible broker and a real Redis: each chat's events in order,
//! one resume position for all of them, per-chat resets, and positions
//! that cannot be of the log refused at once without Redis reads.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{Event, Running, Subscriber, World};

fn stream_url(publish: &Running, chats: &[String]) -> String {
    let query: Vec<String> = chats.iter().map(|c| format!("chat={c}")).collect();
    publish.url(&format!("/api/events?{}", query.join("&")))
}

/// Opens a stream of `chats`, from after `position` where one is given.
async fn open(
    world: &World,
    publish: &Running,
    chats: &[String],
    position: Option<&str>,
) -> Subscriber {
    Subscriber::open(&world.http, &stream_url(publish, chats), position).await
}

/// Opens a stream of `chats` and takes its first event (`subscribed`);
/// answers the stream and what was taken.
async fn subscribe(world: &World, publish: &Running, chats: &[String]) -> (Subscriber, Vec<Event>) {
    let mut subscriber = open(world, publish, chats, None).await;
    let first = subscriber.take(1, Duration::from_secs(5)).await;
    (subscriber, first)
}

fn chats(world: &World, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{}-m{i}", world.prefix)).collect()
}

/// Message events by chat: (event id, text), in arrival order.
fn by_chat(events: &[Event]) -> BTreeMap<String, Vec<(String, String)>> {
    let mut chats: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.event == "message") {
        chats
            .entry(event.data["chatId"].as_str().expect("chat").to_owned())
            .or_default()
            .push((
                event.data["id"].as_str().expect("id").to_owned(),
                event.data["text"].as_str().expect("text").to_owned(),
            ));
    }
    chats
}

/// Asserts that each of `chats` got in `events` exactly the messages
/// `posted` into it, in order.
fn assert_each_got_its_own(
    events: &[Event],
    chats: &[String],
    posted: &HashMap<String, Vec<String>>,
    what: &str,
) {
    let got = by_chat(events);
    for name in chats {
        let ids: Vec<&String> = got
            .get(name)
            .map(|m| m.iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        assert_eq!(
            ids,
            posted[name].iter().collect::<Vec<_>>(),
            "{name}: {what}"
        );
    }
}

/// Posts `n` messages into each of `chats`, the chats in parallel, each
/// chat's in order; answers each chat's message ids.
async fn post_all(
    world: &World,
    chat_server: std::net::SocketAddr,
    chats: &[String],
    n: usize,
    from: usize,
    pause: Duration,
) -> HashMap<String, Vec<String>> {
    let posts = chats.iter().map(|chat| async move {
        let mut ids = Vec::new();
        for i in from..from + n {
            ids.push(world.post(chat_server, chat, &format!("{chat} {i}")).await);
            tokio::time::sleep(pause).await;
        }
        (chat.clone(), ids)
    });
    futures::future::join_all(posts).await.into_iter().collect()
}

/// Posts `n` messages into `chat` alone, in order, numbered from `from`.
async fn post_into(
    world: &World,
    chat_server: std::net::SocketAddr,
    chat: &str,
    n: usize,
    from: usize,
) {
    post_all(
        world,
        chat_server,
        &[chat.to_owned()],
        n,
        from,
        Duration::ZERO,
    )
    .await;
}

/// Opens a stream of `chats`, posts `n` messages into each, takes them
/// and closes the stream; answers the stream's position after them.
async fn position_after(
    world: &World,
    chat_server: std::net::SocketAddr,
    publish: &Running,
    chats: &[String],
    n: usize,
) -> String {
    let (mut subscriber, _) = subscribe(world, publish, chats).await;
    post_all(world, chat_server, chats, n, 0, Duration::ZERO).await;
    let before = take_messages(&mut subscriber, n * chats.len()).await;
    before
        .last()
        .and_then(|e| e.id.clone())
        .expect("a position")
}

/// Whatever arrives within `window`.
async fn drain(subscriber: &mut Subscriber, window: Duration) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, subscriber.events.recv()).await {
        got.push(event);
    }
    got
}

async fn take_messages(subscriber: &mut Subscriber, n: usize) -> Vec<Event> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.iter().filter(|e: &&Event| e.event == "message").count() < n {
        match tokio::time::timeout_at(deadline, subscriber.events.recv()).await {
            Ok(Some(event)) => got.push(event),
            _ => break,
        }
    }
    got
}

#[tokio::test]
async fn eight_chats_on_one_stream_each_get_their_events_in_order() {
    // A server that holds one stream: eight chats on one stream take one
    // place.
    let (world, chat, publish) = World::start_with(|c| c.max_connections = 1).await;
    let names = chats(&world, 8);
    let (mut subscriber, first) = subscribe(&world, &publish, &names).await;
    assert_eq!(first[0].event, "subscribed");
    assert_eq!(first[0].data["chats"], serde_json::json!(names));
    assert!(
        first[0].id.is_some(),
        "the stream's position from the start"
    );

    let posted = post_all(&world, chat.addr, &names, 5, 0, Duration::ZERO).await;
    let events = take_messages(&mut subscriber, 40).await;
    let got = by_chat(&events);
    for name in &names {
        let ids: Vec<&String> = got[name].iter().map(|(id, _)| id).collect();
        let texts: Vec<String> = got[name].iter().map(|(_, text)| text.clone()).collect();
        assert_eq!(ids, posted[name].iter().collect::<Vec<_>>(), "{name}");
        assert_eq!(
            texts,
            (0..5).map(|i| format!("{name} {i}")).collect::<Vec<_>>()
        );
    }
    let position = events.last().and_then(|e| e.id.clone()).expect("an id");
    assert!(
        position.contains(':') && position.contains('~'),
        "a stream position, not one chat's id: {position}"
    );
    // The place is taken: a second stream, of one of the same chats, is
    // refused.
    let second = world
        .http
        .get(publish.url(&format!("/api/chats/{}/events", names[0])))
        .send()
        .await
        .expect("answered");
    assert_eq!(
        second.status(),
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "one stream held"
    );
    drop(subscriber);
    common::stop([publish, chat]).await;
}

#[tokio::test]
async fn a_cut_stream_resumes_every_chat_with_each_event_once() {
    let (world, chat, publish) = World::start().await;
    let names = chats(&world, 8);
    let (mut subscriber, _) = subscribe(&world, &publish, &names).await;

    let writers = {
        let (world, names, addr) = (world.clone(), names.clone(), chat.addr);
        tokio::spawn(async move {
            post_all(&world, addr, &names, 12, 0, Duration::from_millis(60)).await
        })
    };
    // Cut the stream while every chat is receiving.
    let before = take_messages(&mut subscriber, 30).await;
    drop(subscriber);
    let last = before
        .iter()
        .rev()
        .find_map(|e| e.id.clone())
        .expect("a position");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = open(&world, &publish, &names, Some(&last)).await;
    let posted = writers.await.expect("posts");
    let total: usize = posted.values().map(Vec::len).sum();
    let after = take_messages(
        &mut resumed,
        total - by_chat(&before).values().map(Vec::len).sum::<usize>(),
    )
    .await;
    // Nothing more comes.
    let extra = drain(&mut resumed, Duration::from_millis(1500)).await;
    assert!(
        extra.iter().all(|e| e.event != "message"),
        "a message twice: {extra:?}"
    );
    assert!(after.iter().all(|e| e.event != "reset"), "{after:?}");
    let mut all = before.clone();
    all.extend(after);
    assert_each_got_its_own(&all, &names, &posted, "every event once, in order");
    common::stop([publish, chat]).await;
}

#[tokio::test]
async fn a_changed_chat_set_keeps_the_kept_chats_positions() {
    let (world, chat, publish) = World::start().await;
    let names = chats(&world, 3);
    let (kept, dropped, added) = (&names[0], &names[1], &names[2]);
    let old = [kept.clone(), dropped.clone()];
    let position = position_after(&world, chat.addr, &publish, &old, 2).await;

    // While away: more in every chat; the new chat's page is fetched first.
    post_all(&world, chat.addr, &names, 2, 2, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page: serde_json::Value = test_support::get_json(
        &world.http,
        &chat.url(&format!("/api/chats/{added}/messages")),
    )
    .await;
    let cursor = page["cursor"].as_str().expect("cursor").to_owned();
    post_into(&world, chat.addr, added, 1, 4).await;

    let url = publish.url(&format!(
        "/api/events?chat={kept}&chat={added}@{cursor}&lastEventId={position}"
    ));
    let mut subscriber = Subscriber::open(&world.http, &url, None).await;
    let events = take_messages(&mut subscriber, 3).await;
    let extra = drain(&mut subscriber, Duration::from_millis(1000)).await;
    assert!(extra.iter().all(|e| e.event != "message"), "{extra:?}");
    let got = by_chat(&events);
    let texts = |chat: &String| -> Vec<String> {
        got.get(chat)
            .map(|m| m.iter().map(|(_, t)| t.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        texts(kept),
        [format!("{kept} 2"), format!("{kept} 3")],
        "from the position"
    );
    assert_eq!(texts(added), [format!("{added} 4")], "from its cursor");
    assert!(texts(dropped).is_empty());
    common::stop([publish, chat]).await;
}

#[tokio::test]
async fn a_chat_that_cannot_be_resumed_is_reset_and_the_others_flow() {
    // A resume from Redis holds at most 3 events.
    let (world, chat, publish) = World::start_with(|c| c.replay_max = 3).await;
    let names = chats(&world, 2);
    let (busy, calm) = (&names[0], &names[1]);
    let position = position_after(&world, chat.addr, &publish, &names, 1).await;
    // Wait until no subscriber holds the chats' hubs: the resume reads Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;
    post_into(&world, chat.addr, busy, 6, 1).await;
    post_into(&world, chat.addr, calm, 1, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut subscriber = open(&world, &publish, &names, Some(&position)).await;
    let events = take_messages(&mut subscriber, 1).await;
    let reset: Vec<&Event> = events.iter().filter(|e| e.event == "reset").collect();
    assert_eq!(reset.len(), 1, "{events:?}");
    assert_eq!(
        reset[0].data["chatId"],
        busy.as_str(),
        "the reset names its chat"
    );
    let got = by_chat(&events);
    assert_eq!(got[calm].len(), 1, "the other chat resumes: {events:?}");
    post_all(&world, chat.addr, &names, 1, 10, Duration::ZERO).await;
    let live = take_messages(&mut subscriber, 2).await;
    assert_eq!(by_chat(&live).len(), 2, "both chats go on live: {live:?}");
    common::stop([publish, chat]).await;
}

/// Redis calls counted by `INFO commandstats`.
async fn redis_calls(url: &str) -> u64 {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_get:") || l.starts_with("cmdstat_evalsha:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test]
async fn a_position_that_cannot_be_of_the_log_resets_at_once_without_redis_reads() {
    let redis = test_support::OwnRedis::start();
    let (world, chat, publish) = World::start_with(|c| {
        c.redis.url = redis.url();
        c.redis.cluster_nodes.clear();
        c.hot_store.hot_redis_url = Some(redis.url());
    })
    .await;
    let names = chats(&world, 2);
    let one = publish.url(&format!("/api/chats/{}/events", names[0]));
    let many = stream_url(&publish, &names);
    let cases = [
        (one.as_str(), "999-0000000000000000"),
        (one.as_str(), "0-7fffffffffffffff"),
        (many.as_str(), "999:0~00000000"),
        (many.as_str(), "0:7fffffffffffffff"),
        (many.as_str(), "not-a-position"),
    ];
    for (url, position) in cases {
        let calls = redis_calls(&redis.url()).await;
        let started = std::time::Instant::now();
        let mut subscriber = Subscriber::open(&world.http, url, Some(position)).await;
        let events = subscriber
            .take(if url == many { 3 } else { 1 }, Duration::from_secs(5))
            .await;
        let resets = events.iter().filter(|e| e.event == "reset").count();
        let expected = if url == many { 2 } else { 1 };
        assert_eq!(resets, expected, "{position}: {events:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{position}: reset at once, took {:?}",
            started.elapsed()
        );
        assert_eq!(
            redis_calls(&redis.url()).await - calls,
            0,
            "{position}: no replay read"
        );
    }
    common::stop([publish, chat]).await;
}

/// The `subscribed` event's id is a position already: a stream cut before
/// any message, on a log that is still empty, resumes every chat from it.
#[tokio::test]
async fn a_stream_cut_before_any_event_resumes_from_its_first_id() {
    let (world, chat, publish) = World::start().await;
    let names = chats(&world, 4);
    let (subscriber, first) = subscribe(&world, &publish, &names).await;
    let position = first[0].id.clone().expect("a position");
    drop(subscriber);
    let posted = post_all(&world, chat.addr, &names, 2, 0, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resumed = open(&world, &publish, &names, Some(&position)).await;
    let events = take_messages(&mut resumed, 8).await;
    assert!(
        events.iter().all(|e| e.event != "reset"),
        "{position}: {events:?}"
    );
    assert_each_got_its_own(&events, &names, &posted, &format!("from {position}"));
    common::stop([publish, chat]).await;
}
