//! Bounds on connections: a client that stops reading its answer, one
//! connection too many, and a request head too large.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const PATIENCE: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection (or resets it); `None`
/// when it is still open after `limit`.
async fn read_to_close(socket: &mut TcpStream, limit: Duration) -> Option<usize> {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(total),
            Ok(Ok(n)) => total += n,
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let server = TestServer::start_configured(|c| c.requests.write_timeout_ms = 1000).await;
    let chat = common::unique("big");
    let text = "x".repeat(3000);
    for _ in 0..100 {
        server.post_message(&chat, "alice", &text).await;
    }
    let path = format!("/api/chats/{chat}/messages?limit=100");
    let page_bytes = eventually(PATIENCE, "a full page", || async {
        let response = server.get(&path).await.ok()?;
        let body = response.text().await.ok()?;
        let page: serde_json::Value = serde_json::from_str(&body).ok()?;
        (page["messages"].as_array()?.len() == 100).then_some(body.len())
    })
    .await;

    // Forty pages asked for at once, far more than the socket buffers hold,
    // and none of it read.
    let asked = 40;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let mut stream = socket.connect(server.addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: chat\r\n\r\n").repeat(asked);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("requests");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Meanwhile everyone else is served.
    let (status, _) = server.get_json(&path).await;
    assert_eq!(status, 200);

    let taken = read_to_close(&mut stream, Duration::from_secs(20))
        .await
        .expect("the server closed the connection it could not write to");
    assert!(
        taken < asked * page_bytes,
        "took {taken} bytes of {} asked for",
        asked * page_bytes
    );
    server.stop().await;
}

#[tokio::test]
async fn one_connection_over_the_cap_gets_503_and_a_freed_place_is_reused() {
    let server = TestServer::start_configured(|c| c.requests.max_connections = 4).await;
    // The test harness's own client may hold kept-alive connections: this
    // test's count starts from a server that holds none of its own.
    let mut held = Vec::new();
    let refused = loop {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n")
            .await
            .expect("request");
        let mut head = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await;
        let status = read.ok().and_then(Result::ok).map(|_| head);
        match status {
            Some(head) if head.starts_with(b"HTTP/1.1 503") => break stream,
            Some(head) if head.starts_with(b"HTTP/1.1 200") => held.push(stream),
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(held.len() <= 4, "more than 4 connections held");
    };
    let mut rest = String::new();
    let mut refused = refused;
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_string(&mut rest))
        .await
        .expect("the refused connection is closed")
        .expect("read");
    assert!(rest.contains("application/problem+json"), "{rest}");
    assert!(rest.contains("retry-after"), "{rest}");
    assert!(rest.contains("4 connections"), "{rest}");

    // A client that leaves gives its place back.
    drop(held.pop());
    eventually(PATIENCE, "a freed place", || async {
        let mut stream = TcpStream::connect(server.addr).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_over_8_kib_is_431() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let answer = |header_bytes: usize| async move {
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: chat\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(header_bytes)
        );
        test_support::raw_exchange(addr, &request, Duration::from_secs(5))
            .await
            .0
    };
    assert!(answer(6 * 1024).await.starts_with("HTTP/1.1 200"));
    let refused = answer(9 * 1024).await;
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
    server.stop().await;
}

/// Any token is an HTTP method and any path can be asked: neither may
/// become a metric label, or every client could grow `/metrics` (and each
/// scrape) without bound.
#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series_of_their_own() {
    let server = TestServer::start().await;
    test_support::labels::assert_made_up_requests_add_few_series(
        &server.http,
        &server.url(""),
        200,
    )
    .await;
    server.stop().await;
}
