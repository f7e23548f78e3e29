//! chat-server serves the built web UI at `/` (its `index.html` for any
//! other page path) and tells it where the streams are, while unknown API
//! paths still answer problem+json.

mod common;

use common::TestServer;

#[tokio::test]
async fn the_ui_is_served_beside_the_api() {
    let dir = std::env::temp_dir().join(common::unique("web-dist"));
    std::fs::create_dir_all(dir.join("assets")).expect("dir");
    std::fs::write(dir.join("index.html"), "<!doctype html><title>chat</title>").expect("index");
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").expect("asset");
    let server = TestServer::start_configured(|c| {
        c.web.web_dir = dir.clone();
        c.web.public_stream_url = "http://streams.example:8081".into();
    })
    .await;

    for path in ["/", "/some/page"] {
        let response = server.get(path).await.expect("GET");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .expect("text");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "connect-src 'self' http://streams.example:8081",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{directive} in {policy}");
        }
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/html")
        );
        assert!(
            response
                .text()
                .await
                .expect("body")
                .contains("<title>chat</title>")
        );
    }
    let asset = server.get("/assets/app.js").await.expect("GET");
    assert_eq!(asset.status(), 200);
    assert_eq!(asset.headers()["x-content-type-options"], "nosniff");
    assert_eq!(asset.text().await.expect("body"), "console.log(1)");

    let (status, ui) = server.get_json("/api/config").await;
    assert_eq!(status, 200);
    assert_eq!(ui["streamUrl"], "http://streams.example:8081");

    let response = server.get("/api/nothing-here").await.expect("GET");
    common::assert_problem(&response, 404, "an unknown API path");
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn without_a_built_ui_the_root_says_so() {
    let web_dir = std::env::temp_dir().join(common::unique("no-web"));
    let server = TestServer::start_configured(|c| c.web.web_dir = web_dir).await;
    let (status, problem) = server.get_json("/").await;
    assert_eq!(status, 404);
    common::assert_detail_contains(&problem, "not built");
    server.stop().await;
}
