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
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use chat_core::auth::TokenSource;
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::serve::HEAD_TIMEOUT;
use chat_core::validate::ChatId;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::admission::{EventsRequest, Subscription, admit};
use crate::stream::LastSeen;

use chat_core::serve::HEAD_LIMIT;
const EVENTS_ROUTE: &str = "/api/chats/{chat_id}/events";
const MANY_ROUTE: &str = "/api/events";

/// Accepts connections until `shutdown` fires, then waits (boundedly) for
/// every connection's task to end.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    chat_core::serve::accept_loop(&listener, &connections, &shutdown, |socket| {
        connection(socket, router.clone(), state.clone(), shutdown.clone())
    })
    .await;
    drop(listener);
    chat_core::serve::drain(connections).await;
}

async fn connection(
    mut socket: TcpStream,
    router: Router,
    state: AppState,
    shutdown: CancellationToken,
) {
    let mut head = Vec::with_capacity(1024);
    match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut socket, &mut head)).await {
        Ok(Ok(Head::Complete)) => {}
        Ok(Ok(Head::TooLarge)) => {
            let _ = write_error(&mut socket, &ApiError::HeadTooLarge(HEAD_LIMIT), &[]).await;
            return;
        }
        // Closed, failed, or too slow: nothing to answer.
        Ok(Ok(Head::Closed) | Err(_)) | Err(_) => return,
    }
    match events_head(&head) {
        Some(events) => {
            drop(head);
            // The client behind a listed proxy, else the peer itself.
            let peer = socket.peer_addr().ok().map(|a| {
                let forwarded_for = events.forwarded_for.iter().map(String::as_str);
                state.trusted_proxies().client(a.ip(), forwarded_for)
            });
            serve_events(socket, events, peer, state, shutdown).await;
        }
        None => {
            // One request per connection: a client's next request, maybe
            // for a stream, comes on a new connection and so through here.
            let peer = socket.peer_addr().ok();
            let io = Prefixed {
                prefix: head,
                at: 0,
                inner: socket,
            };
            let io = chat_core::serve::WriteDeadline::new(
                io,
                chat_core::serve::Limits::default().write_timeout,
            );
            chat_core::serve::http1(io, router, peer, false, shutdown).await;
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

/// A `GET` of a chat's events as the client sent it, before any checks.
#[derive(Debug)]
struct EventsHead {
    /// The chat id as in the path, still percent-encoded; `None`: the
    /// many-chat stream (`/api/events?chat=...`).
    chat: Option<String>,
    query: String,
    /// `None` when absent; `Some(None)` when not text.
    last_event_id: Option<Option<String>>,
    origin: Option<String>,
    authorization: Option<Vec<u8>>,
    cookies: Vec<String>,
    forwarded_for: Vec<String>,
}

/// The request in `head` if it is a `GET` of `/api/chats/{chatId}/events`.
fn events_head(head: &[u8]) -> Option<EventsHead> {
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
    let chat = if path == MANY_ROUTE {
        None
    } else {
        Some(
            path.strip_prefix("/api/chats/")?
                .strip_suffix("/events")
                .filter(|chat| !chat.is_empty() && !chat.contains('/'))?,
        )
    };
    let values = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let text = |value: &[u8]| std::str::from_utf8(value).ok().map(str::to_owned);
    Some(EventsHead {
        chat: chat.map(str::to_owned),
        query: query.to_owned(),
        last_event_id: values("last-event-id").next().map(text),
        origin: values("origin").next().and_then(text),
        authorization: values("authorization").next().map(<[u8]>::to_vec),
        cookies: values("cookie").filter_map(text).collect(),
        forwarded_for: values("x-forwarded-for").filter_map(text).collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    last_event_id: Option<String>,
    /// For EventSource, which cannot set headers (never logged).
    token: Option<String>,
}

/// The many-chat stream's query: `chat` once per chat (`chatId`, or
/// `chatId@cursor` to start after a fetch's cursor), `lastEventId`,
/// `token`.
fn many_query(query: &str, most: usize) -> Result<(Vec<Subscription>, EventsQuery), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let mut chats: Vec<Subscription> = Vec::new();
    let mut rest = EventsQuery {
        last_event_id: None,
        token: None,
    };
    for (name, value) in pairs {
        match name.as_str() {
            "chat" => {
                let (chat, cursor) = match value.split_once('@') {
                    Some((chat, cursor)) => (chat, Some(cursor)),
                    None => (value.as_str(), None),
                };
                let chat: ChatId = chat
                    .parse()
                    .map_err(|e| ApiError::bad_request(format!("chat {value:?}: {e}")))?;
                let cursor = cursor
                    .map(|c| {
                        c.parse::<EventId>().map_err(|e| {
                            ApiError::bad_request(format!("chat {value:?}: cursor: {}", e.reason))
                        })
                    })
                    .transpose()?;
                // A chat named twice is followed once.
                if chats.iter().any(|s| s.chat == chat) {
                    continue;
                }
                if chats.len() == most {
                    return Err(ApiError::bad_request(format!(
                        "chat: at most {most} chats per stream"
                    )));
                }
                chats.push(Subscription { chat, cursor });
            }
            "lastEventId" => rest.last_event_id = Some(value),
            "token" => rest.token = Some(value),
            other => {
                return Err(ApiError::bad_request(format!(
                    "query: unknown parameter {other:?}"
                )));
            }
        }
    }
    if chats.is_empty() {
        return Err(ApiError::bad_request("chat: give at least one chat"));
    }
    Ok((chats, rest))
}

impl EventsHead {
    /// The typed request, or 400 saying what is malformed.
    fn parse(
        self,
        peer: Option<std::net::IpAddr>,
        max_chats: usize,
    ) -> Result<EventsRequest, ApiError> {
        let (chats, query, many) = match &self.chat {
            Some(chat) => {
                let chat: ChatId = percent_decode(chat)?
                    .parse()
                    .map_err(ApiError::bad_request)?;
                let query: EventsQuery = serde_urlencoded::from_str(&self.query)
                    .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
                (vec![Subscription { chat, cursor: None }], query, false)
            }
            None => {
                let (chats, query) = many_query(&self.query, max_chats)?;
                (chats, query, true)
            }
        };
        // The header wins: EventSource sends it on every reconnect.
        let text = match self.last_event_id {
            Some(None) => Err(()),
            Some(Some(header)) => Ok(Some(header)),
            None => Ok(query.last_event_id),
        };
        let last_seen = match text {
            Err(()) => LastSeen::Malformed,
            Ok(text) if many => position(text.as_deref()),
            Ok(text) => last_seen(text.as_deref()),
        };
        Ok(EventsRequest {
            chats,
            many,
            last_seen,
            token: TokenSource {
                authorization: self.authorization,
                cookies: self.cookies,
                query: query.token,
            },
            peer,
        })
    }
}

/// What a `Last-Event-ID` (or `?lastEventId=`) says: nothing when absent
/// or blank.
fn last_seen(text: Option<&str>) -> LastSeen {
    match text.map(str::trim) {
        None | Some("") => LastSeen::Nothing,
        Some(text) => text.parse().map_or(LastSeen::Malformed, LastSeen::Id),
    }
}

/// What a many-chat stream's `Last-Event-ID` says.
fn position(text: Option<&str>) -> LastSeen {
    match text.map(str::trim) {
        None | Some("") => LastSeen::Nothing,
        Some(text) => text.parse().map_or(LastSeen::Malformed, LastSeen::Position),
    }
}

fn percent_decode(text: &str) -> Result<String, ApiError> {
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
                .ok_or_else(|| {
                    ApiError::bad_request(format!("chatId: malformed percent-encoding in {text:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("chatId: not UTF-8"))
}

/// Answers a chat's events: an error, or the stream until it ends.
async fn serve_events(
    mut socket: TcpStream,
    events: EventsHead,
    peer: Option<std::net::IpAddr>,
    state: AppState,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let cors = cors_headers(&state, events.origin.as_deref());
    let route = if events.chat.is_some() {
        EVENTS_ROUTE
    } else {
        MANY_ROUTE
    };
    let admitted = events
        .parse(peer, state.max_chats_per_stream())
        .and_then(|request| admit(&state, request));
    let status = match &admitted {
        Ok(_) => StatusCode::OK,
        Err(error) => error.status(),
    };
    metrics::counter!("http_requests_total", "route" => route, "method" => "GET", "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => "GET")
        .record(started.elapsed().as_secs_f64());
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(error) => {
            let _ = write_error(&mut socket, &error, &cors).await;
            return;
        }
    };
    let mut head = Vec::from(
        &b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
           x-accel-buffering: no\r\nconnection: close\r\n"[..],
    );
    for (name, value) in &cors {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let (input, mut output) = socket.into_split();
    if tokio::time::timeout(state.send_timeout(), output.write_all(&head))
        .await
        .is_ok_and(|written| written.is_ok())
    {
        if admitted.many {
            crate::many::run(state, admitted, input, output, shutdown).await;
        } else {
            crate::stream::run(state, admitted, input, output, shutdown).await;
        }
    } else {
        for (hub, _) in &admitted.hubs {
            state.hubs().leave(hub);
        }
    }
}

/// The CORS response headers for a request from `origin`.
fn cors_headers(state: &AppState, origin: Option<&str>) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![(header::VARY, HeaderValue::from_static("origin"))];
    if let Some(origin) = origin
        && state.cors_allows(origin)
        && let Ok(value) = HeaderValue::from_str(origin)
    {
        headers.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
        // Origins are listed one by one, never `*`: cookies may go along.
        headers.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    headers
}

/// Writes `error` and closes the connection.
async fn write_error(
    socket: &mut TcpStream,
    error: &ApiError,
    extra: &[(HeaderName, HeaderValue)],
) -> io::Result<()> {
    let response = error.to_http1(extra);
    tokio::time::timeout(Duration::from_secs(5), async {
        socket.write_all(&response).await?;
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
        let head = events_head(
            b"GET /api/chats/lob%62y/events?lastEventId=1-0 HTTP/1.1\r\nLast-Event-ID: 0-0000000000000001\r\nOrigin: http://x\r\n\r\n",
        )
        .expect("events");
        assert_eq!(head.origin.as_deref(), Some("http://x"));
        let request = head.parse(None, 100).expect("well-formed");
        assert_eq!(request.chats.len(), 1);
        assert_eq!(request.chats[0].chat.as_str(), "lobby");
        assert!(
            matches!(request.last_seen, LastSeen::Id(id) if id.to_string() == "0-0000000000000001"),
            "the header wins over the query"
        );
        for other in [
            &b"POST /api/chats/lobby/events HTTP/1.1\r\n\r\n"[..],
            b"GET /api/chats/lobby/messages HTTP/1.1\r\n\r\n",
            b"GET /api/chats//events HTTP/1.1\r\n\r\n",
            b"GET /api/chats/a/b/events HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                events_head(other).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        assert!(percent_decode("a%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    fn many(query: &str) -> Result<EventsRequest, ApiError> {
        let head = format!("GET /api/events?{query} HTTP/1.1\r\n\r\n");
        events_head(head.as_bytes())
            .expect("a many-chat stream")
            .parse(None, 3)
    }

    #[test]
    fn a_many_chat_query_names_each_chat_once_with_its_cursor() {
        let request = many("chat=a&chat=b@2-0000000000000012&chat=a&lastEventId=0:1a~0c4f1e2a")
            .expect("well-formed");
        assert!(request.many);
        let chats: Vec<(String, Option<String>)> = request
            .chats
            .iter()
            .map(|s| (s.chat.to_string(), s.cursor.map(|c| c.to_string())))
            .collect();
        assert_eq!(
            chats,
            [
                ("a".to_owned(), None),
                ("b".to_owned(), Some("2-0000000000000012".to_owned()))
            ],
            "a duplicate is ignored"
        );
        assert!(matches!(request.last_seen, LastSeen::Position(_)));
        let detail = |query| many(query).expect_err("refused").to_string();
        assert!(
            detail("chat=a&chat=no%20space").contains("no space"),
            "names the chat"
        );
        assert!(detail("chat=a&chat=b&chat=c&chat=d").contains("at most 3 chats"));
        assert!(detail("").contains("at least one chat"));
        assert!(detail("chat=a@nope").contains("cursor"));
        assert!(detail("chat=a&since=1").contains("since"));
        assert!(matches!(
            many("chat=a&lastEventId=2-0000000000000012").map(|r| r.last_seen),
            Ok(LastSeen::Malformed)
        ));
    }
}
