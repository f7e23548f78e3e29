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
    let (world, chat, publish) = World::start().await;
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

    // publish-server's own share of each delivery's delay is in /metrics.
    // (Other tests of this binary share the process: at least ours.)
    let metrics = world.metrics(&publish).await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let delivered = value("publish_fanout_delay_seconds_count");
    assert!(delivered >= 2.0 * posted.len() as f64, "{metrics}");
    assert_eq!(
        value("publish_fanout_delay_seconds_bucket{le=\"+Inf\"}"),
        delivered
    );
    assert!(value("publish_fanout_delay_seconds_bucket{le=\"10\"}") > 0.0);
    // Every live delivery is counted among the frames delivered (which
    // also count replays).
    assert!(
        value("publish_frames_delivered_total") >= delivered,
        "{metrics}"
    );
    common::stop([publish, chat]).await;
}

/// A resume is replayed from Redis within `--replay-max-bytes`: a client
/// that missed more gets `reset` (and refetches), not megabytes of frames.
#[tokio::test]
async fn a_resume_that_missed_more_bytes_than_the_replay_allows_gets_reset() {
    let world = World::new();
    let chat = world.chat_server().await;
    let mut config = world.publish_config();
    config.replay_max_bytes = 4096;
    let publish = world.publish_server(config.clone()).await;
    let url = publish.url("/api/chats/heavy/events");
    let mut first = Subscriber::open(&world.http, &url, None).await;
    world.post(chat.addr, "heavy", "small").await;
    let seen = first.take(1, PATIENCE).await;
    let last = seen[0].id.clone().expect("an id");
    drop(first);
    // A little more than 4 KiB missed: replayed.
    let page = "x".repeat(1000);
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(world.post(chat.addr, "heavy", &page).await);
    }
    let mut again = Subscriber::open(&world.http, &url, Some(&last)).await;
    let replayed = again.take(3, PATIENCE).await;
    assert_eq!(
        ids(&replayed),
        missed,
        "three frames, about 3.3 KiB, replayed"
    );
    let last = replayed[2].id.clone().expect("an id");
    drop(again);
    // The client comes back to another instance, with no memory of the
    // chat: its replay comes from Redis.
    publish.stop().await;
    for _ in 0..5 {
        world.post(chat.addr, "heavy", &page).await;
    }
    let other = world.publish_server(config).await;
    let url = other.url("/api/chats/heavy/events");
    let mut late = Subscriber::open(&world.http, &url, Some(&last)).await;
    let got = late.take(1, PATIENCE).await;
    assert_eq!(got[0].event, "reset", "{got:?}");
    assert_eq!(got[0].data["reason"], "too many bytes missed");
    common::stop([other, chat]).await;
}

#[tokio::test]
async fn after_a_restart_subscribers_resume_with_last_event_id_without_gap_or_duplicate() {
    let (world, chat, publish) = World::start().await;
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
    common::stop([restarted, chat]).await;
}

#[tokio::test]
async fn fetch_then_subscribe_from_the_cursor_gives_every_event_once() {
    let (world, chat, publish) = World::start().await;
    let mut messages = Vec::new();
    let mut last = String::new();
    for i in 0..15 {
        let id = world.post(chat.addr, "union", &format!("m{i}")).await;
        last = world.react(chat.addr, "union", &id, "fan").await;
        messages.push(id);
    }
    // Fetch once the read model has everything so far.
    let page = loop {
        let page: serde_json::Value = test_support::get_json(
            &world.http,
            &chat.url("/api/chats/union/messages?limit=100"),
        )
        .await;
        if page["cursor"] == last.as_str() {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let fetched: Vec<String> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .all(|m| m["reactions"]["👍"] == 1)
    );
    let cursor = page["cursor"].as_str().expect("cursor").to_owned();
    // More events after the fetch, before and after the subscription.
    let mut later = Vec::new();
    let mut later_messages = Vec::new();
    for i in 0..5 {
        let id = world.post(chat.addr, "union", &format!("later {i}")).await;
        later.push(id.clone());
        later_messages.push(id.clone());
        later.push(world.react(chat.addr, "union", &id, "fan").await);
    }
    let mut subscriber = Subscriber::open(
        &world.http,
        &publish.url("/api/chats/union/events"),
        Some(&cursor),
    )
    .await;
    for i in 5..8 {
        let id = world.post(chat.addr, "union", &format!("later {i}")).await;
        later.push(id.clone());
        later_messages.push(id);
    }
    let streamed = subscriber.take(later.len(), PATIENCE).await;
    assert_eq!(ids(&streamed), later, "exactly the events after the cursor");
    assert_eq!(fetched, messages);
    let mut all = fetched;
    all.extend(
        streamed
            .iter()
            .filter(|e| e.event == "message")
            .filter_map(|e| e.id.clone()),
    );
    messages.extend(later_messages);
    assert_eq!(
        all, messages,
        "fetched then streamed: every message once, in order"
    );
    common::stop([publish, chat]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_costs_bounded_memory_and_does_not_slow_the_others() {
    use futures::StreamExt as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use std::io::Write as _;

    let world = World::new();
    let chat = world.chat_server().await; // creates the topic
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = world.publish_config();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_publish-server"))
        .env("PUBLISH_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("KAFKA_BROKERS", &config.kafka.brokers)
        .env("KAFKA_TOPIC", &config.kafka.topic)
        .env("REDIS_URL", &config.redis.url)
        .env("REDIS_KEY_PREFIX", &config.redis.key_prefix)
        .env("HUB_BUFFER", "256")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("publish-server starts");
    let child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !world
        .http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "publish-server not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = || -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    };
    // A client that asks for the stream and never reads a byte.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stalled
        .write_all(b"GET /api/chats/slow/events HTTP/1.1\r\nhost: test\r\n\r\n")
        .expect("request");
    let mut normal =
        Subscriber::open(&world.http, &format!("{base}/api/chats/slow/events"), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss();

    // 6,000 events of 3.5 KB (21 MB) straight into Kafka, 1,000 a second.
    const EVENTS: usize = 6000;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let text = "x".repeat(3500);
    let sends = (0..EVENTS).map(|i| {
        let payload = serde_json::json!({"type": "message", "chatId": "slow", "userId": "load",
            "text": format!("{i} {text}"), "createdAt": "2026-11-22T00:00:00.000Z"})
        .to_string();
        let producer = producer.clone();
        let topic = config.kafka.topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key("slow").payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .expect("produced")
        }
    });
    let reader = tokio::spawn(async move {
        let got = normal.take(EVENTS, Duration::from_secs(120)).await;
        (normal, got)
    });
    let mut produced = futures::stream::iter(sends).buffered(100);
    let started = tokio::time::Instant::now();
    let mut n: u64 = 0;
    while produced.next().await.is_some() {
        n += 1;
        tokio::time::sleep_until(started + Duration::from_millis(n)).await;
    }
    let (_normal, got) = reader.await.expect("reader");
    assert!(
        got.iter().all(|e| e.event == "message"),
        "the reading subscriber got no reset: {:?}",
        got.iter().find(|e| e.event != "message")
    );
    let texts: Vec<usize> = got
        .iter()
        .map(|e| {
            e.data["text"]
                .as_str()
                .expect("text")
                .split(' ')
                .next()
                .expect("n")
                .parse()
                .expect("n")
        })
        .collect();
    assert_eq!(
        texts,
        (0..EVENTS).collect::<Vec<_>>(),
        "the reading subscriber got every event in order"
    );
    let after = rss();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 10 * 1024,
        "RSS grew {grown} kB while 21 MB went past a stalled client (before {before} kB, after {after} kB)"
    );
    drop(stalled);
    drop(child);
    chat.stop().await;
}

/// A server process that goes when the test does, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
