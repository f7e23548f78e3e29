//! `/api/openapi.json` documents exactly the routes the server serves.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use serde_json::Value;

/// `/api/chats/{chat_id}/messages` and `/api/chats/{chatId}/messages` alike
/// become `/api/chats/{}/messages`.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let server = TestServer::start().await;
    let response = server.get("/api/openapi.json").await.expect("openapi");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1."))
    );

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                documented.insert((shape(path), method.to_uppercase()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = chat_server::route_table()
        .into_iter()
        .map(|(path, method)| (shape(path), method.to_string()))
        .collect();
    assert_eq!(documented, served, "openapi.json and the router disagree");

    // Each documented operation reaches a handler (no 404 for the route,
    // no 405), with sample parameters and an empty JSON body.
    for (path, method) in &documented {
        let url = path
            .replacen("{}", "lobby", 1)
            .replacen("{}", "0-0000000000000000", 1)
            .replacen("{}", "%F0%9F%91%8D", 1);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = server
            .http
            .request(method.clone(), server.url(&url))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("request completes");
        let status = response.status().as_u16();
        assert_ne!(status, 405, "{method} {url}");
        let body = response.text().await.expect("body");
        assert!(
            !body.contains("urn:chat:problem:no-route"),
            "{method} {url}: {body}"
        );
    }
    let unknown = server.get("/api/nothing-here").await.expect("request");
    assert_eq!(unknown.status(), 404);
    assert!(
        unknown
            .text()
            .await
            .expect("body")
            .contains("urn:chat:problem:no-route")
    );
    server.stop().await;
}
