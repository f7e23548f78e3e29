//! Token authentication in chat-server, through a real server: who may
//! post and read, every kind of bad token refused with 401 or 403 and
//! nothing written, per-user write limits, and tokens kept out of the logs.

mod common;

use std::time::Duration;

use chat_core::auth::{Auth, AuthConfig};
use common::TestServer;
use serde_json::{Value, json};

const KEY: &str = "a-test-secret-of-enough-length-32b";

fn signer(key: &str) -> Auth {
    Auth::from_config(&AuthConfig {
        auth_hmac_key: Some(key.into()),
        ..AuthConfig::default()
    })
    .expect("config")
    .expect("on")
}

/// A token for `user` signed with `key`.
fn signed_token(key: &str, user: &str, chats: Option<&[&str]>, ttl: Duration) -> String {
    let chats = chats.map(|c| c.iter().map(|s| (*s).to_owned()).collect());
    signer(key)
        .issue(&user.parse().expect("user"), chats, ttl)
        .expect("token")
        .0
}

/// A token for `user` signed with the servers' key.
fn token(user: &str, chats: Option<&[&str]>, ttl: Duration) -> String {
    signed_token(KEY, user, chats, ttl)
}

/// A token for alice, good for ten minutes but signed with a key the
/// servers do not have.
fn forged() -> String {
    signed_token(
        "another-secret-of-enough-length-32b",
        "alice",
        None,
        Duration::from_secs(600),
    )
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn start(configure: impl FnOnce(&mut chat_server::Config)) -> TestServer {
    TestServer::start_configured(|config| {
        config.auth.auth_hmac_key = Some(KEY.into());
        configure(config);
    })
    .await
}

/// `POST path` of `server` with `body`, as the bearer of `token` when
/// there is one.
async fn post_as(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = server.http.post(server.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST")
}

/// `GET path` of `server` as the bearer of `token`.
async fn get_as(
    server: &TestServer,
    path: &str,
    token: &str,
) -> reqwest::Result<reqwest::Response> {
    server
        .http
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
}

async fn post(server: &TestServer, chat: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let response = post_as(server, &format!("/api/chats/{chat}/messages"), token, &body).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn only_valid_tokens_write_and_read_and_refusals_write_nothing() {
    let server = start(|_| {}).await;
    let alice = token("alice", Some(&["lobby"]), Duration::from_secs(600));

    // Missing, forged, alg none, expired: 401, nothing written.
    let (status, problem) = post(&server, "lobby", None, json!({"text": "no token"})).await;
    assert_eq!(status, 401, "{problem}");
    let forged = forged();
    let (status, problem) = post(&server, "lobby", Some(&forged), json!({"text": "forged"})).await;
    assert_eq!(status, 401);
    common::assert_detail_contains(&problem, "signature");
    let exp = chrono::Utc::now().timestamp() + 600;
    let none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(format!(r#"{{"sub":"alice","exp":{exp}}}"#).as_bytes())
    );
    let (status, _) = post(&server, "lobby", Some(&none), json!({"text": "alg none"})).await;
    assert_eq!(status, 401, "alg none is refused");
    // A token whose expiry is this second: a fetch shows when it has
    // passed (fetches need a token too, and write nothing).
    let expired = token("alice", None, Duration::ZERO);
    common::eventually(Duration::from_secs(5), "the token to expire", || async {
        let response = get_as(&server, "/api/chats/lobby/messages", &expired)
            .await
            .ok()?;
        (response.status() == 401).then_some(())
    })
    .await;
    let (status, problem) = post(&server, "lobby", Some(&expired), json!({"text": "late"})).await;
    assert_eq!(status, 401);
    common::assert_detail_contains(&problem, "expired");
    let unauthorized =
        test_support::get(&server.http, &server.url("/api/chats/lobby/messages")).await;
    assert_eq!(unauthorized.status(), 401, "reading needs a token too");
    assert!(unauthorized.headers().contains_key("www-authenticate"));

    // A chat the token does not list, a userId that is not the token's: 403.
    for (chat, body) in [
        ("elsewhere", json!({"text": "hi"})),
        ("lobby", json!({"userId": "bob", "text": "as bob"})),
    ] {
        let (status, problem) = post(&server, chat, Some(&alice), body).await;
        assert_eq!(status, 403, "{problem}");
    }
    assert!(
        server.records().await.is_empty(),
        "no refused request wrote anything"
    );

    // The token's user posts, with or without naming itself, and reads.
    let (status, message) = post(&server, "lobby", Some(&alice), json!({"text": "hello"})).await;
    assert_eq!(status, 201, "{message}");
    assert_eq!(message["userId"], "alice");
    let (status, _) = post(
        &server,
        "lobby",
        Some(&alice),
        json!({"userId": "alice", "text": "again"}),
    )
    .await;
    assert_eq!(status, 201);
    let id = message["id"].as_str().expect("id");
    let reactions = format!("/api/chats/lobby/messages/{id}/reactions");
    let reacted = post_as(&server, &reactions, Some(&alice), &json!({"emoji": "👍"})).await;
    assert_eq!(reacted.status(), 201);
    let removed = server
        .http
        .delete(server.url(&format!("{reactions}/%F0%9F%91%8D?userId=bob")))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("unreact");
    assert_eq!(removed.status(), 403, "removing as someone else");
    let page = get_as(&server, "/api/chats/lobby/messages", &alice)
        .await
        .expect("GET");
    assert_eq!(page.status(), 200);
    assert_eq!(
        server.records().await.len(),
        3,
        "two messages and one reaction"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_user_over_the_write_limit_gets_429_with_retry_after() {
    let server = start(|c| c.writes.user_messages_per_sec = 1).await;
    let alice = token("alice", None, Duration::from_secs(600));
    let bob = token("bob", None, Duration::from_secs(600));
    let mut statuses = Vec::new();
    for n in 0..3 {
        statuses.push(
            post(
                &server,
                "lobby",
                Some(&alice),
                json!({"text": format!("m{n}")}),
            )
            .await
            .0,
        );
    }
    assert_eq!(
        statuses,
        [201, 201, 429],
        "a burst of twice the rate, then refused"
    );
    let refused = post_as(
        &server,
        "/api/chats/lobby/messages",
        Some(&alice),
        &json!({"text": "more"}),
    )
    .await;
    assert_eq!(refused.status(), 429);
    assert!(
        refused.headers()["retry-after"]
            .to_str()
            .expect("text")
            .parse::<u64>()
            .expect("secs")
            >= 1
    );
    assert_eq!(
        post(&server, "lobby", Some(&bob), json!({"text": "bob"}))
            .await
            .0,
        201,
        "users apart"
    );
    assert_eq!(server.records().await.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn development_tokens_only_when_asked_for() {
    let off = start(|_| {}).await;
    let response = post_as(&off, "/api/dev/token", None, &json!({"userId": "alice"})).await;
    assert_eq!(response.status(), 404);
    off.stop().await;

    let on = start(|c| c.web.dev_tokens = true).await;
    let (_, config) = on.get_json("/api/config").await;
    assert_eq!(config["auth"], true);
    assert_eq!(config["devTokens"], true);
    let issued: Value = post_as(
        &on,
        "/api/dev/token",
        None,
        &json!({"userId": "carol", "chats": ["lobby"]}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    let token = issued["token"].as_str().expect("token");
    assert_eq!(
        post(&on, "lobby", Some(token), json!({"text": "hi"}))
            .await
            .0,
        201
    );
    assert_eq!(
        post(&on, "other", Some(token), json!({"text": "hi"}))
            .await
            .0,
        403
    );
    on.stop().await;
}

/// A chat-server process of its own, with tokens signed by `KEY` and one
/// more setting, whose log the test reads.
async fn logged_server(name: &str, (key, value): (&str, &str)) -> test_support::LoggedProcess {
    test_support::LoggedProcess::start(
        env!("CARGO_BIN_EXE_chat-server"),
        "CHAT_SERVER_LISTEN",
        &[
            ("KAFKA_BROKERS", common::kafka_brokers()),
            ("KAFKA_TOPIC", common::unique(&format!("{name}-events"))),
            ("REDIS_URL", common::redis_url()),
            ("REDIS_KEY_PREFIX", common::unique(name)),
            ("AUTH_HMAC_KEY", KEY.to_owned()),
            (key, value.to_owned()),
        ],
    )
    .await
}

#[tokio::test]
async fn development_tokens_are_announced_loudly_at_start() {
    let server = logged_server("dev-log", ("DEV_TOKENS", "true")).await;
    let http = reqwest::Client::new();
    let issued = http
        .post(format!("{}/api/dev/token", server.base))
        .json(&json!({"userId": "alice"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(issued.status(), 200, "a loopback client gets a token");
    let logs = server.stop();
    assert!(
        logs.contains("DEVELOPMENT TOKENS ARE ON") && logs.contains("loopback"),
        "{logs}"
    );
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let server = logged_server("auth-log", ("RUST_LOG", "debug")).await;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let good = token("alice", None, Duration::from_secs(600));
    let forged = forged();
    for token in [&good, &forged] {
        let _ = http
            .post(format!("{base}/api/chats/lobby/messages"))
            .bearer_auth(token)
            .json(&json!({"text": "log me not"}))
            .send()
            .await;
        let _ = http
            .get(format!("{base}/api/chats/lobby/messages"))
            .bearer_auth(token)
            .send()
            .await;
    }
    let logs = server.stop();
    assert!(
        logs.contains("chat-server listening"),
        "the logs were captured: {logs}"
    );
    for token in [&good, &forged] {
        let signature = token.rsplit('.').next().expect("signature");
        assert!(!logs.contains(signature), "a token is in the logs");
    }
}

#[test]
fn the_token_command_prints_a_token_the_servers_accept() {
    let output = test_support::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args([
                "token",
                "--user",
                "alice",
                "--chats",
                "lobby,side",
                "--ttl",
                "1h",
            ])
            .env("AUTH_HMAC_KEY", KEY),
        "chat-server token",
    );
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let identity = signer(KEY).verify(token.trim()).expect("valid");
    assert_eq!(identity.user.as_str(), "alice");
    assert_eq!(
        identity.chats,
        Some(vec!["lobby".to_owned(), "side".to_owned()])
    );
    let left = identity.expires_at - chrono::Utc::now().timestamp();
    assert!((3590..=3600).contains(&left), "expires in {left} s");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["token", "--user", "alice"])
        .env_remove("AUTH_HMAC_KEY")
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("AUTH_HMAC_KEY"));
}

/// chat-server takes the token from the `Authorization` header only: a
/// `chat_token` cookie, which a browser sends by itself on a cross-site
/// request, authenticates nothing here (publish-server's streams take it).
#[tokio::test]
async fn the_chat_token_cookie_authenticates_nothing() {
    let server = start(|_| {}).await;
    let alice = token("alice", None, Duration::from_secs(600));
    let cookie = format!("chat_token={alice}");
    let posted = server
        .http
        .post(server.url("/api/chats/lobby/messages"))
        .header("cookie", &cookie)
        .json(&json!({"text": "by cookie"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 401);
    let fetched = server
        .http
        .get(server.url("/api/chats/lobby/messages"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(fetched.status(), 401);
    let (status, _) = post(&server, "lobby", Some(&alice), json!({"text": "by header"})).await;
    assert_eq!(status, 201, "the same token in the header is taken");
    server.stop().await;
}
