//! publish-server against a real broker, Redis and chat-server, through a
//! real HTTP client.

mod common;

use std::time::Duration;

use common::{Subscriber, World};

const PATIENCE: Duration = Duration::from_secs(30);

fn ids(events: &[common::Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.id.clone()).collect()
}

#[tokio::test]
async fn subscribers_get_every_event_in_order_and_other_chats_get_none() {
    let world = World::new();
    let chat = world.chat_server().await;
    let publish = world.publish_server(world.publish_config()).await;
    let url = |c: &str| publish.url(&format!("/api/chats/{c}/events"));
    let mut first = Subscriber::open(&world.http, &url("room"), None).await;
    let mut second = Subscriber::open(&world.http, &url("room"), None).await;
    let mut elsewhere = Subscriber::open(&world.http, &url("elsewhere"), None).await;

    let mut posted = Vec::new();
    for i in 0..10 {
        let id = world.post(chat.addr, "room", &format!("m{i}")).await;
        posted.push(id.clone());
        posted.push(world.react(chat.addr, "room", &id, "fan").await);
    }
    let got = first.take(posted.len(), PATIENCE).await;
    assert_eq!(ids(&got), posted, "every event, in posting order");
    let mut sorted = ids(&got);
    sorted.sort();
    assert_eq!(sorted, posted, "ids increase");
    assert_eq!(got[0].event, "message");
    assert_eq!(got[0].data["text"], "m0");
    assert_eq!(got[1].event, "reaction");
    assert_eq!(got[1].data["messageId"], posted[0].as_str());
    assert_eq!(
        second.take(posted.len(), PATIENCE).await,
        got,
        "two subscribers, one stream"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        elsewhere.events.try_recv().is_err(),
        "another chat's subscriber got an event"
    );
    publish.stop().await;
    chat.stop().await;
}

#[tokio::test]
async fn after_a_restart_subscribers_resume_with_last_event_id_without_gap_or_duplicate() {
    let world = World::new();
    let chat = world.chat_server().await;
    let publish = world.publish_server(world.publish_config()).await;
    let url = publish.url("/api/chats/restart/events");
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(Subscriber::open(&world.http, &url, None).await);
    }
    let poster = {
        let world = world.clone();
        let chat = chat.addr;
        tokio::spawn(async move {
            let mut posted = Vec::new();
            for i in 0..40 {
                posted.push(world.post(chat, "restart", &format!("m{i}")).await);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            posted
        })
    };
    let mut received: Vec<Vec<common::Event>> = Vec::new();
    for subscriber in &mut subscribers {
        received.push(subscriber.take(5, PATIENCE).await);
    }
    // Graceful stop: every stream ends promptly, with what it had sent.
    publish.stop().await;
    for (subscriber, got) in subscribers.iter_mut().zip(&mut received) {
        let ended = tokio::time::timeout(PATIENCE, async {
            while let Some(event) = subscriber.events.recv().await {
                got.push(event);
            }
        })
        .await;
        assert!(ended.is_ok(), "a stream outlived the server");
    }
    // Posts went on meanwhile; a new instance takes the reconnects.
    let restarted = world.publish_server(world.publish_config()).await;
    let url = restarted.url("/api/chats/restart/events");
    let posted = poster.await.expect("poster");
    for got in &mut received {
        let last = got.last().and_then(|e| e.id.clone()).expect("an id");
        let mut again = Subscriber::open(&world.http, &url, Some(&last)).await;
        let rest = again.take(posted.len() - got.len(), PATIENCE).await;
        got.extend(rest);
        assert_eq!(ids(got), posted, "no gap, no duplicate");
    }
    restarted.stop().await;
    chat.stop().await;
}
