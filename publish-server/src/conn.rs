//! Connections. A `GET` of a chat's events is read and answered here and
//! the stream is written straight to the socket, so that an open stream
//! costs its task and its socket and no HTTP library buffers (8 KiB each
//! way per connection in hyper). Every other request goes to the router
//! through hyper, with the bytes already read put back in front, and is the
//! connection's last.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use chat_core::problem::Problem;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::AppState;

/// The largest request head taken.
const HEAD_LIMIT: usize = 8 * 1024;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const EVENTS_ROUTE: &str = "/api/chats/{chat_id}/events";

/// Accepts connections until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                tokio::spawn(connection(
                    socket,
                    router.clone(),
                    state.clone(),
                    shutdown.clone(),
                ));
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to close.
                warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    mut socket: TcpStream,
    router: Router,
    state: AppState,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let mut head = Vec::with_capacity(1024);
    match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut socket, &mut head)).await {
        Ok(Ok(Head::Complete)) => {}
        Ok(Ok(Head::TooLarge)) => {
            let problem = Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head-too-large",
                "Request head too large",
                format!("the request line and headers may take {HEAD_LIMIT} bytes"),
            );
            let _ = write_problem(&mut socket, &problem, &[]).await;
            return;
        }
        // Closed, failed, or too slow: nothing to answer.
        Ok(Ok(Head::Closed) | Err(_)) | Err(_) => return,
    }
    match events_request(&head) {
        Some(mut request) => {
            drop(head);
            request.peer = socket.peer_addr().ok().map(|a| a.ip());
            events(socket, request, state, shutdown).await;
        }
        None => {
            let io = hyper_util::rt::TokioIo::new(Prefixed {
                prefix: head,
                at: 0,
                inner: socket,
            });
            let service = hyper_util::service::TowerToHyperService::new(router);
            // One request per connection: a client's next request, maybe
            // for a stream, comes on a new connection and so through here.
            let served = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(io, service);
            tokio::pin!(served);
            tokio::select! {
                _ = served.as_mut() => {}
                () = shutdown.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), served).await;
                }
            }
        }
    }
}

enum Head {
    Complete,
    TooLarge,
    Closed,
}

/// Reads until the blank line that ends the request head.
async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Head::Complete);
        }
        if buf.len() >= HEAD_LIMIT {
            return Ok(Head::TooLarge);
        }
        let mut chunk = [0u8; 1024];
        let room = (HEAD_LIMIT - buf.len()).min(chunk.len());
        let n = socket.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A `GET` of a chat's events, as the client sent it.
#[derive(Debug)]
pub(crate) struct EventsRequest {
    /// The chat id as in the path, percent-decoded.
    pub(crate) chat: Result<String, String>,
    pub(crate) query: String,
    pub(crate) last_event_id: Option<Result<String, ()>>,
    pub(crate) origin: Option<String>,
    /// For the token (never logged).
    pub(crate) authorization: Option<String>,
    pub(crate) cookie: Option<String>,
    /// The client's address, for the per-address stream limit.
    pub(crate) peer: Option<std::net::IpAddr>,
}

/// The request in `head` if it is a `GET` of `/api/chats/{chatId}/events`.
fn events_request(head: &[u8]) -> Option<EventsRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    if request.method != Some("GET") {
        return None;
    }
    let target = request.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let chat = path
        .strip_prefix("/api/chats/")?
        .strip_suffix("/events")
        .filter(|chat| !chat.is_empty() && !chat.contains('/'))?;
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).map(str::to_owned))
    };
    Some(EventsRequest {
        chat: percent_decode(chat),
        query: query.to_owned(),
        last_event_id: header("last-event-id").map(|v| v.map_err(|_| ())),
        origin: header("origin").and_then(Result::ok),
        authorization: header("authorization").and_then(Result::ok),
        cookie: header("cookie").and_then(Result::ok),
        peer: None,
    })
}

fn percent_decode(text: &str) -> Result<String, String> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("chatId: malformed percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "chatId: not UTF-8".to_owned())
}

/// Answers a chat's events: a problem, or the stream until it ends.
async fn events(
    mut socket: TcpStream,
    request: EventsRequest,
    state: AppState,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let cors = cors_headers(&state, request.origin.as_deref());
    let admitted = crate::admit(&state, request);
    let status = match &admitted {
        Ok(_) => StatusCode::OK,
        Err(problem) => problem.status,
    };
    metrics::counter!("http_requests_total", "route" => EVENTS_ROUTE, "method" => "GET", "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => EVENTS_ROUTE, "method" => "GET")
        .record(started.elapsed().as_secs_f64());
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(problem) => {
            let _ = write_problem(&mut socket, &problem, &cors).await;
            return;
        }
    };
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
         x-accel-buffering: no\r\nconnection: close\r\n",
    );
    for (name, value) in &cors {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let (input, mut output) = socket.into_split();
    if tokio::time::timeout(state.send_timeout(), output.write_all(head.as_bytes()))
        .await
        .is_ok_and(|written| written.is_ok())
    {
        crate::stream::run(state, admitted, input, output, shutdown).await;
    } else {
        state.hubs().leave(&admitted.hub);
    }
}

/// The CORS response headers for a request from `origin`.
fn cors_headers(state: &AppState, origin: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![("vary", "origin".to_owned())];
    if let Some(origin) = origin
        && state.cors_allows(origin)
    {
        headers.push(("access-control-allow-origin", origin.to_owned()));
        // Origins are listed one by one, never `*`: cookies may go along.
        headers.push(("access-control-allow-credentials", "true".to_owned()));
    }
    headers
}

async fn write_problem(
    socket: &mut TcpStream,
    problem: &Problem,
    extra: &[(&'static str, String)],
) -> io::Result<()> {
    let body = serde_json::to_string(problem).unwrap_or_default();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
        problem.status.as_u16(),
        problem.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if problem.status == StatusCode::SERVICE_UNAVAILABLE
        || problem.status == StatusCode::TOO_MANY_REQUESTS
    {
        response.push_str("retry-after: 1\r\n");
    }
    if problem.status == StatusCode::UNAUTHORIZED {
        response.push_str("www-authenticate: Bearer realm=\"chat\"\r\n");
    }
    for (name, value) in extra {
        if HeaderValue::from_str(value).is_ok() {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    response.push_str("\r\n");
    response.push_str(&body);
    tokio::time::timeout(Duration::from_secs(5), async {
        socket.write_all(response.as_bytes()).await?;
        socket.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

/// A socket whose first bytes were already read: they are read again first.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_a_chats_events_is_taken() {
        let request = events_request(
            b"GET /api/chats/lob%62y/events?lastEventId=1-0 HTTP/1.1\r\nLast-Event-ID: 0-0000000000000001\r\nOrigin: http://x\r\n\r\n",
        )
        .expect("events");
        assert_eq!(request.chat, Ok("lobby".to_owned()));
        assert_eq!(request.query, "lastEventId=1-0");
        assert_eq!(
            request.last_event_id,
            Some(Ok("0-0000000000000001".to_owned()))
        );
        assert_eq!(request.origin.as_deref(), Some("http://x"));
        for other in [
            &b"POST /api/chats/lobby/events HTTP/1.1\r\n\r\n"[..],
            b"GET /api/chats/lobby/messages HTTP/1.1\r\n\r\n",
            b"GET /api/chats//events HTTP/1.1\r\n\r\n",
            b"GET /api/chats/a/b/events HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                events_request(other).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        assert!(percent_decode("a%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
