//! Scenario 6: slow-loris and oversize requests. Request heads dribbled
//! slowly, bodies above the limit, 100 MB bodies (with a length and
//! chunked), deep JSON nesting, invalid UTF-8, NUL bytes and huge query
//! strings each get a 4xx or a closed connection in bounded time; the
//! servers' memory stays flat, and the clients posting and streaming
//! meanwhile lose nothing.

use std::time::{Duration, Instant};

use faults::{Cluster, Load, Options};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How a hostile request ended.
#[derive(Debug, PartialEq)]
enum End {
    Status(u16),
    Closed,
}

/// Sends `head` and then `body` in pieces of `piece` bytes every `pause`,
/// reading the answer meanwhile; answers how it ended and after how long.
/// Fails if it took longer than `bound`.
async fn hostile(
    port: u16,
    head: Vec<u8>,
    body: impl Iterator<Item = Vec<u8>> + Send + 'static,
    pause: Duration,
    bound: Duration,
) -> (End, Duration) {
    let started = Instant::now();
    let socket = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut read, mut write) = socket.into_split();
    let writer = tokio::spawn(async move {
        if write.write_all(&head).await.is_err() {
            return;
        }
        for piece in body {
            if write.write_all(&piece).await.is_err() {
                return;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        // Hold the connection open: the server must end it.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = tokio::time::timeout(bound, async {
        loop {
            match read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    writer.abort();
    let took = started.elapsed();
    assert!(end.is_ok(), "no answer within {bound:?}");
    let text = String::from_utf8_lossy(&answer);
    let end = match text.strip_prefix("HTTP/1.1 ") {
        Some(rest) => End::Status(rest[..3].parse().expect("status code")),
        None => End::Closed,
    };
    (end, took)
}

fn is_refusal(end: &End) -> bool {
    match end {
        End::Status(status) => (400..500).contains(status),
        End::Closed => true,
    }
}

fn post_head(path: &str, extra: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n{extra}\r\n")
        .into_bytes()
}

fn once(bytes: Vec<u8>) -> std::vec::IntoIter<Vec<u8>> {
    vec![bytes].into_iter()
}

/// A POST of `body` whole, with its length.
fn post(path: &str, body: &[u8]) -> (Vec<u8>, Pieces) {
    let head = post_head(path, &format!("content-length: {}\r\n", body.len()));
    (head, Box::new(once(body.to_vec())))
}

type Pieces = Box<dyn Iterator<Item = Vec<u8>> + Send>;

/// A GET of `target`, with no body.
fn get(target: &str) -> (Vec<u8>, Pieces) {
    let head = format!("GET {target} HTTP/1.1\r\nhost: test\r\n\r\n").into_bytes();
    (head, Box::new(std::iter::empty()))
}

/// A GET of `path` with a query of `param` 1 MB long.
fn get_with_1mb_query(path: &str, param: &str) -> (Vec<u8>, Pieces) {
    get(&format!("{path}?{param}={}", "1".repeat(1 << 20)))
}

/// What a case is called, the port it goes to, its head and body, and the
/// pause between the body's pieces.
type Case = (&'static str, u16, Vec<u8>, Pieces, Duration);

fn case(what: &'static str, port: u16, (head, body): (Vec<u8>, Pieces)) -> Case {
    (what, port, head, body, Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_in_bounded_time_and_hurt_no_one() {
    let cluster = Cluster::start(Options::default()).await;
    let load = Load::start(&cluster, 3, 2, 3, Duration::from_millis(50)).await;
    let chat = cluster.chat[0].port;
    let publish = cluster.publish[0].port;
    let rss_before = (cluster.chat[0].rss_kib(), cluster.publish[0].rss_kib());
    let path = "/api/chats/hostile/messages";
    let mb100 = 100 * 1024 * 1024;
    let mut results = Vec::new();

    // Slow-loris: 100 connections per server dribbling a head, a byte every
    // 500 ms. The servers give a head 10 s.
    let mut loris = Vec::new();
    for port in [chat, publish] {
        for _ in 0..100 {
            let head = b"GET /api/chats/hostile/events HTTP/1.1\r\nhost: test\r\nx-slow: ".to_vec();
            let dribble = std::iter::repeat_n(b"a".to_vec(), 1000);
            loris.push(tokio::spawn(hostile(
                port,
                head,
                dribble,
                Duration::from_millis(500),
                Duration::from_secs(20),
            )));
        }
    }

    let cases: Vec<Case> = vec![
        (
            "a body over the limit",
            chat,
            post_head(path, "content-length: 20000\r\n"),
            Box::new(once(vec![b' '; 20000])),
            Duration::ZERO,
        ),
        (
            "a 100 MB body with its length",
            chat,
            post_head(path, &format!("content-length: {mb100}\r\n")),
            Box::new(std::iter::repeat_n(vec![b' '; 1 << 20], 100)),
            Duration::ZERO,
        ),
        (
            "a 100 MB chunked body",
            chat,
            post_head(path, "transfer-encoding: chunked\r\n"),
            Box::new(std::iter::repeat_n(
                [
                    b"100000\r\n".to_vec(),
                    vec![b' '; 1 << 20],
                    b"\r\n".to_vec(),
                ]
                .concat(),
                100,
            )),
            Duration::ZERO,
        ),
        (
            "a body dribbled slowly",
            chat,
            post_head(path, "content-length: 1000\r\n"),
            Box::new(std::iter::repeat_n(b" ".to_vec(), 1000)),
            Duration::from_millis(500),
        ),
        case(
            "JSON nested 5,000 deep",
            chat,
            post(path, &[vec![b'['; 5000], vec![b']'; 5000]].concat()),
        ),
        case(
            "invalid UTF-8",
            chat,
            post(path, b"{\"userId\":\"a\",\"text\":\"\xff\xfe\xfd\"}"),
        ),
        case(
            "a NUL byte in a JSON string",
            chat,
            post(path, b"{\"userId\":\"a\",\"text\":\"a\0b\"}"),
        ),
        case(
            "a NUL character in the text",
            chat,
            post(path, br#"{"userId":"a","text":"a\u0000b"}"#),
        ),
        case(
            "a 1 MB query string (chat-server)",
            chat,
            get_with_1mb_query("/api/chats/hostile/messages", "after"),
        ),
        case(
            "a 1 MB query string (publish-server)",
            publish,
            get_with_1mb_query("/api/chats/hostile/events", "lastEventId"),
        ),
        case(
            "a NUL byte in the request line (publish-server)",
            publish,
            get("/api/chats/a\0b/events"),
        ),
        (
            "10,000 headers (publish-server)",
            publish,
            [
                b"GET /api/chats/hostile/events HTTP/1.1\r\n".to_vec(),
                b"x-a: b\r\n".repeat(10_000),
                b"\r\n".to_vec(),
            ]
            .concat(),
            Box::new(std::iter::empty()),
            Duration::ZERO,
        ),
    ];
    for (what, port, head, body, pause) in cases {
        let bound = if pause.is_zero() {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(20)
        };
        let (end, took) = hostile(port, head, body, pause, bound).await;
        assert!(is_refusal(&end), "{what}: {end:?}");
        results.push(format!("{what}: {end:?} in {} ms", took.as_millis()));
    }
    for (i, slow) in loris.into_iter().enumerate() {
        let (end, took) = slow.await.expect("slow-loris client");
        assert!(is_refusal(&end), "slow-loris {i}: {end:?}");
        assert!(
            took < Duration::from_secs(15),
            "slow-loris {i} held for {took:?}"
        );
    }
    results.push("200 slow-loris heads: closed or refused within 15 s".to_owned());

    let rss_after = (cluster.chat[0].rss_kib(), cluster.publish[0].rss_kib());
    // Flat: within 10 % or 8 MiB, whichever is more (allocator noise on a
    // small heap), and nowhere near the 200 MB the bodies held.
    for (name, before, after) in [
        ("chat-server", rss_before.0, rss_after.0),
        ("publish-server", rss_before.1, rss_after.1),
    ] {
        assert!(
            after <= before + (before / 10).max(8 * 1024),
            "{name} grew from {before} KiB to {after} KiB"
        );
        results.push(format!("{name} RSS {before} KiB before, {after} KiB after"));
    }
    let report = load.finish(Duration::from_secs(30)).await;
    let summary = report.check(&cluster).await;
    eprintln!(
        "hostile clients:\n  {}\n  meanwhile: {summary}",
        results.join("\n  ")
    );
}
