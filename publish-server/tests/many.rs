//! Many chats on one stream (`/api/events?chat=a&chat=b`), against a real
//! Kafka-compatible broker and a real Redis: each chat's events in order,
//! one resume position for all of them, per-chat resets, and positions
//! that cannot be of the log refused at once without Redis reads.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{Event, Subscriber, World};

fn stream_url(publish: &test_support::Running, chats: &[String]) -> String {
    let query: Vec<String> = chats.iter().map(|c| format!("chat={c}")).collect();
    publish.url(&format!("/api/events?{}", query.join("&")))
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
    let world = World::new();
    let chat = world.chat_server().await;
    // A server that holds one stream: eight chats on one stream take one
    // place.
    let mut config = world.publish_config();
    config.max_connections = 1;
    let publish = world.publish_server(config).await;
    let names = chats(&world, 8);
    let mut subscriber = Subscriber::open(&world.http, &stream_url(&publish, &names), None).await;
    let first = subscriber.take(1, Duration::from_secs(5)).await;
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
    publish.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn a_cut_stream_resumes_every_chat_with_each_event_once() {
    let world = World::new();
    let (chat, publish) = world.servers().await;
    let names = chats(&world, 8);
    let url = stream_url(&publish, &names);
    let mut subscriber = Subscriber::open(&world.http, &url, None).await;
    subscriber.take(1, Duration::from_secs(5)).await;

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
    let mut resumed = Subscriber::open(&world.http, &url, Some(&last)).await;
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
    let got = by_chat(&all);
    for name in &names {
        let ids: Vec<&String> = got[name].iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids,
            posted[name].iter().collect::<Vec<_>>(),
            "{name}: every event once, in order"
        );
    }
    publish.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn a_changed_chat_set_keeps_the_kept_chats_positions() {
    let world = World::new();
    let (chat, publish) = world.servers().await;
    let names = chats(&world, 3);
    let (kept, dropped, added) = (&names[0], &names[1], &names[2]);
    let old = [kept.clone(), dropped.clone()];
    let mut subscriber = Subscriber::open(&world.http, &stream_url(&publish, &old), None).await;
    subscriber.take(1, Duration::from_secs(5)).await;
    post_all(&world, chat.addr, &old, 2, 0, Duration::ZERO).await;
    let before = take_messages(&mut subscriber, 4).await;
    let position = before
        .last()
        .and_then(|e| e.id.clone())
        .expect("a position");
    drop(subscriber);

    // While away: more in every chat; the new chat's page is fetched first.
    post_all(&world, chat.addr, &names, 2, 2, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page: serde_json::Value = test_support::get_json(
        &world.http,
        &chat.url(&format!("/api/chats/{added}/messages")),
    )
    .await;
    let cursor = page["cursor"].as_str().expect("cursor").to_owned();
    post_all(
        &world,
        chat.addr,
        std::slice::from_ref(added),
        1,
        4,
        Duration::ZERO,
    )
    .await;

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
    publish.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn a_chat_that_cannot_be_resumed_is_reset_and_the_others_flow() {
    let world = World::new();
    let mut config = world.publish_config();
    // A resume from Redis holds at most 3 events.
    config.replay_max = 3;
    let chat = world.chat_server().await;
    let publish = world.publish_server(config).await;
    let names = chats(&world, 2);
    let (busy, calm) = (&names[0], &names[1]);
    let mut subscriber = Subscriber::open(&world.http, &stream_url(&publish, &names), None).await;
    subscriber.take(1, Duration::from_secs(5)).await;
    post_all(&world, chat.addr, &names, 1, 0, Duration::ZERO).await;
    let before = take_messages(&mut subscriber, 2).await;
    let position = before
        .last()
        .and_then(|e| e.id.clone())
        .expect("a position");
    drop(subscriber);
    // Wait until no subscriber holds the chats' hubs: the resume reads Redis.
    tokio::time::sleep(Duration::from_millis(500)).await;
    post_all(
        &world,
        chat.addr,
        std::slice::from_ref(busy),
        6,
        1,
        Duration::ZERO,
    )
    .await;
    post_all(
        &world,
        chat.addr,
        std::slice::from_ref(calm),
        1,
        1,
        Duration::ZERO,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut subscriber =
        Subscriber::open(&world.http, &stream_url(&publish, &names), Some(&position)).await;
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
    publish.stop().await;
    chat.stop().await;
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
    let world = World::new();
    let redis = test_support::OwnRedis::start();
    let mut config = world.publish_config();
    config.redis.url = redis.url();
    config.redis.cluster_nodes.clear();
    config.hot_store.hot_redis_url = Some(redis.url());
    let chat = world.chat_server().await;
    let publish = world.publish_server(config).await;
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
        drop(subscriber);
    }
    publish.stop().await;
    chat.stop().await;
}

/// The `subscribed` event's id is a position already: a stream cut before
/// any message, on a log that is still empty, resumes every chat from it.
#[tokio::test]
async fn a_stream_cut_before_any_event_resumes_from_its_first_id() {
    let world = World::new();
    let (chat, publish) = world.servers().await;
    let names = chats(&world, 4);
    let url = stream_url(&publish, &names);
    let mut subscriber = Subscriber::open(&world.http, &url, None).await;
    let first = subscriber.take(1, Duration::from_secs(5)).await;
    let position = first[0].id.clone().expect("a position");
    drop(subscriber);
    let posted = post_all(&world, chat.addr, &names, 2, 0, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resumed = Subscriber::open(&world.http, &url, Some(&position)).await;
    let events = take_messages(&mut resumed, 8).await;
    assert!(
        events.iter().all(|e| e.event != "reset"),
        "{position}: {events:?}"
    );
    let got = by_chat(&events);
    for name in &names {
        let ids: Vec<&String> = got
            .get(name)
            .map(|m| m.iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        assert_eq!(
            ids,
            posted[name].iter().collect::<Vec<_>>(),
            "{name} from {position}"
        );
    }
    publish.stop().await;
    chat.stop().await;
}
