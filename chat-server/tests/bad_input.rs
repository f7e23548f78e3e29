//! Bad input gets a 4xx problem+json answer and writes nothing to Kafka.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::Value;

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
}

fn case(what: &'static str, method: Method, path: &str, body: &str, status: u16) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status,
    }
}

#[tokio::test]
async fn every_bad_input_is_refused_with_problem_json_and_writes_nothing() {
    let server = TestServer::start().await;
    let messages = "/api/chats/lobby/messages";
    let reactions = "/api/chats/lobby/messages/0-0000000000000000/reactions";
    let long_text = "x".repeat(4001);
    let huge = format!(r#"{{"userId":"a","text":"{}"}}"#, "y".repeat(20_000));
    let mut cases = vec![
        case(
            "malformed JSON",
            Method::POST,
            messages,
            r#"{"userId":"a","text":"#,
            400,
        ),
        case("not an object", Method::POST, messages, r#"["hi"]"#, 422),
        case("empty body", Method::POST, messages, "", 400),
        case(
            "missing text",
            Method::POST,
            messages,
            r#"{"userId":"a"}"#,
            422,
        ),
        case(
            "missing userId",
            Method::POST,
            messages,
            r#"{"text":"hi"}"#,
            422,
        ),
        case(
            "empty text",
            Method::POST,
            messages,
            r#"{"userId":"a","text":""}"#,
            422,
        ),
        case(
            "blank text",
            Method::POST,
            messages,
            r#"{"userId":"a","text":"  \n "}"#,
            422,
        ),
        case(
            "empty userId",
            Method::POST,
            messages,
            r#"{"userId":"","text":"hi"}"#,
            422,
        ),
        case(
            "userId with spaces",
            Method::POST,
            messages,
            r#"{"userId":"a b","text":"hi"}"#,
            422,
        ),
        case(
            "text not a string",
            Method::POST,
            messages,
            r#"{"userId":"a","text":42}"#,
            422,
        ),
        case(
            "NUL in text",
            Method::POST,
            messages,
            r#"{"userId":"a","text":"a\u0000b"}"#,
            422,
        ),
        case(
            "bad clientMessageId",
            Method::POST,
            messages,
            r#"{"userId":"a","text":"hi","clientMessageId":"has space"}"#,
            422,
        ),
        case(
            "text over the limit",
            Method::POST,
            messages,
            &format!(r#"{{"userId":"a","text":"{long_text}"}}"#),
            422,
        ),
        case("body over the limit", Method::POST, messages, &huge, 413),
        case(
            "invalid chat id",
            Method::POST,
            "/api/chats/no.dots/messages",
            r#"{"userId":"a","text":"hi"}"#,
            400,
        ),
        case(
            "chat id too long",
            Method::POST,
            &format!("/api/chats/{}/messages", "c".repeat(65)),
            r#"{"userId":"a","text":"hi"}"#,
            400,
        ),
        case(
            "malformed message id",
            Method::POST,
            "/api/chats/lobby/messages/42/reactions",
            r#"{"userId":"a","emoji":"👍"}"#,
            400,
        ),
        case(
            "text as emoji",
            Method::POST,
            reactions,
            r#"{"userId":"a","emoji":"thumbs up"}"#,
            422,
        ),
        case(
            "too many emoji",
            Method::POST,
            reactions,
            &format!(r#"{{"userId":"a","emoji":"{}"}}"#, "👍".repeat(11)),
            422,
        ),
        case(
            "missing emoji",
            Method::POST,
            reactions,
            r#"{"userId":"a"}"#,
            422,
        ),
        case(
            "remove without userId",
            Method::DELETE,
            &format!("{reactions}/%F0%9F%91%8D"),
            "",
            400,
        ),
        case(
            "remove a text emoji",
            Method::DELETE,
            &format!("{reactions}/abc?userId=a"),
            "",
            400,
        ),
        case(
            "remove on a malformed message id",
            Method::DELETE,
            "/api/chats/lobby/messages/x/reactions/%F0%9F%91%8D?userId=a",
            "",
            400,
        ),
        case(
            "unknown route",
            Method::POST,
            "/api/chats/lobby/nothing",
            r#"{"userId":"a","text":"hi"}"#,
            404,
        ),
        case(
            "unknown method",
            Method::PUT,
            messages,
            r#"{"userId":"a","text":"hi"}"#,
            405,
        ),
        case(
            "unknown method on reactions",
            Method::PATCH,
            reactions,
            r#"{"userId":"a","emoji":"👍"}"#,
            405,
        ),
    ];
    for (what, content_type) in [
        ("wrong content type", Some("text/plain")),
        (
            "form content type",
            Some("application/x-www-form-urlencoded"),
        ),
        ("no content type", None),
    ] {
        cases.push(Case {
            what,
            method: Method::POST,
            path: messages.to_owned(),
            content_type,
            body: br#"{"userId":"a","text":"hi"}"#.to_vec(),
            status: 415,
        });
    }
    cases.push(Case {
        what: "invalid UTF-8",
        method: Method::POST,
        path: messages.to_owned(),
        content_type: Some("application/json"),
        body: b"{\"userId\":\"a\",\"text\":\"\xff\xfe\"}".to_vec(),
        status: 400,
    });

    for case in cases {
        let mut request = server
            .http
            .request(case.method.clone(), server.url(&case.path));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let response = request
            .body(case.body)
            .send()
            .await
            .expect("request completes");
        assert_eq!(response.status().as_u16(), case.status, "{}", case.what);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{}",
            case.what
        );
        let problem: Value = response.json().await.expect("problem JSON");
        assert_eq!(problem["status"], case.status, "{}", case.what);
        let kind = match case.status {
            400 => "bad-request",
            404 => "no-route",
            405 => "method-not-allowed",
            413 => "body-too-large",
            415 => "unsupported-media-type",
            422 => "invalid-field",
            other => panic!("{}: no problem type known for {other}", case.what),
        };
        assert_eq!(
            problem["type"],
            format!("urn:chat:problem:{kind}"),
            "{}: {problem}",
            case.what
        );
        for field in ["title", "detail"] {
            assert!(
                problem[field].as_str().is_some_and(|s| !s.is_empty()),
                "{}: problem has no {field}: {problem}",
                case.what
            );
        }
    }

    // Nothing above was written; a good post still is.
    assert!(
        server.records().await.is_empty(),
        "bad input wrote to Kafka"
    );
    let ok = server.post_text("lobby", "a", "hi").await;
    assert_eq!(ok.status(), 201);
    assert_eq!(server.records().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn the_problem_detail_names_the_field_at_fault() {
    let server = TestServer::start().await;
    let response = server.post_text("lobby", "alice", &"x".repeat(4001)).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("JSON");
    let detail = problem["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("text:") && detail.contains("4000"),
        "{detail}"
    );
    server.stop().await;
}

/// A request is checked before it spends anything: malformed fetches of a
/// hot chat take none of its budget, and posts with a malformed
/// `clientMessageId` take none of the user's write limit.
#[tokio::test]
async fn malformed_requests_spend_no_budget_and_no_write_limit() {
    let mut config = common::config();
    config.hot.throttle.fetch_budget = 1;
    config.hot.throttle.fetch_burst = 1;
    config.writes.user_messages_per_sec = 1;
    let server = TestServer::start_with(config).await;

    // The chat is hot the way the scheduler flags it; the server resyncs
    // the flags every second.
    test_support::flag_hot(&server.config.redis.keys(), "spent").await;
    server.until_knows_hot("spent").await;
    for _ in 0..5 {
        let (status, _) = server.get_json("/api/chats/spent/messages?limit=0").await;
        assert_eq!(status, 400);
    }
    let admitted = server
        .get("/api/chats/spent/messages")
        .await
        .expect("answer");
    assert_eq!(admitted.status(), 200, "the budget is whole");
    assert!(
        admitted.headers().contains_key("ratelimit-limit"),
        "the chat was hot for this fetch"
    );

    for _ in 0..5 {
        let refused = server
            .post_json(
                "/api/chats/lobby/messages",
                serde_json::json!({"userId": "dora", "text": "x", "clientMessageId": "no spaces"}),
            )
            .await;
        assert_eq!(refused.status(), 422);
    }
    let posted = server
        .post_text("lobby", "dora", "after the refusals")
        .await;
    assert_eq!(posted.status(), 201, "the write limit is whole");
    server.stop().await;
}
