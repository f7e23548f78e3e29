//! Token authentication in publish-server: the token from the header, a
//! cookie or `?token=`, refusals as problem+json, streams closed when their
//! token expires, stream limits per user and per address, tokens kept out
//! of the logs, and the happy path end to end with authentication on.

mod common;

use std::time::{Duration, Instant};

use chat_core::auth::{Auth, AuthConfig};
use common::{Subscriber, World};

const KEY: &str = "a-test-secret-of-enough-length-32b";

fn token(key: &str, user: &str, chats: Option<&[&str]>, ttl: Duration) -> String {
    let auth = Auth::from_config(&AuthConfig {
        auth_hmac_key: Some(key.into()),
        ..AuthConfig::default()
    })
    .expect("config")
    .expect("on");
    let chats = chats.map(|c| c.iter().map(|s| (*s).to_owned()).collect());
    auth.issue(&user.parse().expect("user"), chats, ttl)
        .expect("token")
        .0
}

/// Makes a publish-server take tokens signed with `KEY`.
fn authenticated(config: &mut publish_server::Config) {
    config.auth.auth_hmac_key = Some(KEY.into());
}

#[tokio::test]
async fn streams_need_a_valid_token_for_their_chat_and_end_when_it_expires() {
    let (world, chat, publish) = World::start_with(|c| {
        authenticated(c);
        c.max_streams_per_user = 2;
        c.max_streams_per_address = 4;
    })
    .await;
    let url = |chat: &str| publish.url(&format!("/api/chats/{chat}/events"));
    let alice = token(KEY, "alice", Some(&["room"]), Duration::from_secs(600));

    let status = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let kind = response.headers()["content-type"]
            .to_str()
            .expect("type")
            .to_owned();
        (status, kind)
    };
    let problem = "application/problem+json".to_owned();
    assert_eq!(
        status(world.http.get(url("room"))).await,
        (401, problem.clone())
    );
    let forged = token(
        "another-secret-of-enough-length-32b",
        "alice",
        None,
        Duration::from_secs(600),
    );
    assert_eq!(
        status(world.http.get(format!("{}?token={forged}", url("room")))).await,
        (401, problem.clone())
    );
    assert_eq!(
        status(
            world
                .http
                .get(format!("{}?token={alice}", url("elsewhere")))
        )
        .await,
        (403, problem.clone()),
        "a chat the token does not list"
    );

    // The token by query, header or cookie.
    let by_query =
        Subscriber::open(&world.http, &format!("{}?token={alice}", url("room")), None).await;
    let by_header = Subscriber::open_with(
        &world.http,
        &url("room"),
        &[("authorization", format!("Bearer {alice}"))],
    )
    .await;
    assert_eq!(
        status(
            world
                .http
                .get(url("room"))
                .header("cookie", format!("chat_token={alice}"))
        )
        .await,
        (429, problem.clone()),
        "a third stream of one user is over the per-user limit"
    );
    drop(by_header);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let by_cookie = Subscriber::open_with(
        &world.http,
        &url("room"),
        &[("cookie", format!("chat_token={alice}"))],
    )
    .await;
    drop((by_query, by_cookie));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Per address: four streams of different users, then 429.
    let mut held = Vec::new();
    for user in ["u1", "u2", "u3", "u4"] {
        let t = token(KEY, user, None, Duration::from_secs(600));
        held.push(Subscriber::open(&world.http, &format!("{}?token={t}", url("room")), None).await);
    }
    let fifth = token(KEY, "u5", None, Duration::from_secs(600));
    assert_eq!(
        status(world.http.get(format!("{}?token={fifth}", url("room")))).await,
        (429, problem)
    );
    drop(held);

    // A token that expires in 2 s ends its stream then.
    let brief = token(KEY, "brief", None, Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let opened = Instant::now();
    let stream =
        Subscriber::open(&world.http, &format!("{}?token={brief}", url("room")), None).await;
    while !stream.ended() {
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "the stream outlived its token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "ended early: {:?}",
        opened.elapsed()
    );
    common::stop([publish, chat]).await;
}

#[tokio::test]
async fn with_authentication_on_a_post_reaches_the_subscribers_and_no_token_is_logged() {
    let world = World::new();
    let mut chat_config = world.chat_config();
    chat_config.auth.auth_hmac_key = Some(KEY.into());
    let chat = world.chat_server_with(chat_config).await;
    let mut settings = world.publish_config();
    authenticated(&mut settings);
    let publish = world.publish_server(settings).await;
    let bob = token(KEY, "bob", Some(&["secure"]), Duration::from_secs(600));
    let mut subscriber = Subscriber::open(
        &world.http,
        &publish.url(&format!("/api/chats/secure/events?token={bob}")),
        None,
    )
    .await;
    let alice = token(KEY, "alice", None, Duration::from_secs(600));
    let posted = world
        .http
        .post(chat.url("/api/chats/secure/messages"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"text": "for bob"}))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 201);
    let got = subscriber.take(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].data["text"], "for bob");
    assert_eq!(got[0].data["userId"], "alice");
    common::stop([publish, chat]).await;

    // The binary, logging at debug, never writes a token it was given.
    let server = test_support::LoggedProcess::start(
        env!("CARGO_BIN_EXE_publish-server"),
        "PUBLISH_SERVER_LISTEN",
        &[
            ("KAFKA_BROKERS", test_support::kafka_brokers()),
            ("KAFKA_TOPIC", world.topic.clone()),
            ("REDIS_URL", test_support::redis_url()),
            ("REDIS_KEY_PREFIX", world.prefix.clone()),
            ("AUTH_HMAC_KEY", KEY.to_owned()),
            ("RUST_LOG", "debug".to_owned()),
        ],
    )
    .await;
    let base = server.base.clone();
    let forged = token(
        "another-secret-of-enough-length-32b",
        "bob",
        None,
        Duration::from_secs(600),
    );
    for t in [&bob, &forged] {
        let _ = world
            .http
            .get(format!("{base}/api/chats/secure/events?token={t}"))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        let _ = world
            .http
            .get(format!("{base}/api/chats/secure/events"))
            .bearer_auth(t)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
    }
    let logs = server.stop();
    assert!(
        logs.contains("publish-server listening"),
        "the logs were captured: {logs}"
    );
    for t in [&bob, &forged] {
        assert!(
            !logs.contains(t.rsplit('.').next().expect("signature")),
            "a token is in the logs"
        );
    }
}

/// A stream of many chats needs a token that allows every one of them, and
/// counts as one stream toward the per-user limit, whatever its chats.
#[tokio::test]
async fn a_many_chat_stream_needs_every_chat_allowed_and_counts_once() {
    let (world, chat, publish) = World::start_with(|c| {
        authenticated(c);
        c.max_streams_per_user = 1;
    })
    .await;
    let token = token(
        KEY,
        "carla",
        Some(&["one", "two"]),
        Duration::from_secs(600),
    );
    let url = |chats: &str| publish.url(&format!("/api/events?{chats}&token={token}"));

    let refused = test_support::get(&world.http, &url("chat=one&chat=three")).await;
    assert_eq!(refused.status(), 403, "one chat the token does not list");
    let mut stream = Subscriber::open(&world.http, &url("chat=one&chat=two"), None).await;
    let first = stream.take(1, Duration::from_secs(5)).await;
    assert_eq!(first[0].event, "subscribed");
    let second = test_support::get(&world.http, &url("chat=one")).await;
    assert_eq!(
        second.status(),
        429,
        "one stream of two chats is one stream"
    );
    drop(stream);
    common::stop([publish, chat]).await;
}

/// With authentication off, streams are capped per client address: an
/// IPv6 client by its /64, and a client behind a listed proxy by the
/// address the proxy forwarded for (from anyone else the header counts for
/// nothing).
#[tokio::test]
async fn the_per_address_limit_groups_ipv6_by_64_and_believes_only_listed_proxies() {
    let (world, _chat, publish) = World::start_with(|c| {
        c.max_streams_per_address = 2;
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("network")];
    })
    .await;
    let url = publish.url("/api/chats/room/events");
    let open = |client: &'static str| {
        let (http, url) = (&world.http, &url);
        async move {
            http.get(url)
                .header("x-forwarded-for", client)
                .send()
                .await
                .expect("request")
        }
    };
    let mut held = Vec::new();
    for client in ["2001:db8:0:7::1", "2001:db8:0:7:ffff::2"] {
        let response = open(client).await;
        assert_eq!(response.status(), 200, "{client}");
        held.push(response);
    }
    let third = open("2001:db8:0:7::3").await;
    assert_eq!(third.status(), 429, "a third address of the same /64");
    for other in ["2001:db8:0:8::1", "203.0.113.5"] {
        let response = open(other).await;
        assert_eq!(response.status(), 200, "{other}: another client");
        held.push(response);
    }
    // A spoofed chain: only the hop the proxy wrote counts.
    let spoofed = open("198.51.100.1, 2001:db8:0:7::9").await;
    assert_eq!(spoofed.status(), 429);
    drop(held);

    // Not behind a listed proxy: the header is ignored and every stream is
    // the peer's own.
    let mut settings = world.publish_config();
    settings.max_streams_per_address = 2;
    let direct = world.publish_server(settings).await;
    let url = direct.url("/api/chats/room/events");
    let mut held = Vec::new();
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let response = world
            .http
            .get(&url)
            .header("x-forwarded-for", client)
            .send()
            .await
            .expect("request");
        held.push(response);
    }
    let statuses: Vec<u16> = held.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 429]);
}
