//! Connections. A `GET` of a chat's events is read and answered here and
//! the stream is written straight to the socket, so that an open stream
//! costs its task and its socket and no HTTP library buffers (8 KiB each
//! way per connection in hyper). Every other request goes to the router
//! through hyper, with the bytes already read put back in front, and is the
//! connection's last.

mod cors;
mod head;
mod prefixed;
mod query;

use std::io;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use chat_core::problem::ApiError;
use chat_core::serve::{HEAD_LIMIT, HEAD_TIMEOUT};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::admission::admit;
use cors::cors_headers;
use head::{EventsHead, Head, events_head, read_head};
use prefixed::Prefixed;

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
        let tracker = connections.clone();
        connection(
            socket,
            router.clone(),
            state.clone(),
            shutdown.clone(),
            tracker,
        )
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
    tracker: TaskTracker,
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
                state.trusted_proxies.client(a.ip(), forwarded_for)
            });
            serve_events(socket, events, peer, state, shutdown, tracker).await;
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

/// Answers a chat's events: an error, or the stream's head, and then the
/// stream in a task of its own, so that what reading and answering the
/// request took (this task's future) is not held for the stream's life.
async fn serve_events(
    mut socket: TcpStream,
    events: EventsHead,
    peer: Option<std::net::IpAddr>,
    state: AppState,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let started = Instant::now();
    let cors = cors_headers(&state, events.origin.as_deref());
    let route = if events.chat.is_some() {
        EVENTS_ROUTE
    } else {
        MANY_ROUTE
    };
    let admitted = events
        .parse(peer, state.config.max_chats_per_stream as usize)
        .and_then(|request| admit(&state, request));
    let status = match &admitted {
        Ok(_) => StatusCode::OK,
        Err(error) => error.status(),
    };
    chat_core::metrics::record_request(route, "GET", status.as_u16(), started.elapsed());
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
    // Neither is held for the life of the stream.
    drop(cors);
    let (input, mut output) = socket.into_split();
    let written = tokio::time::timeout(state.config.send_timeout(), output.write_all(&head)).await;
    drop(head);
    if written.is_ok_and(|written| written.is_ok()) {
        tracker.spawn(crate::stream::run(state, admitted, input, output, shutdown));
    } else {
        for (hub, _) in &admitted.hubs {
            state.hubs.leave(hub);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future that `f` makes when called with five
    /// arguments, without calling it.
    fn future_of_5<F, A, B, C, D, E, Fut>(_: &F) -> usize
    where
        F: FnOnce(A, B, C, D, E) -> Fut,
    {
        size_of::<Fut>()
    }

    /// The same for six arguments.
    fn future_of_6<F, A, B, C, D, E, G, Fut>(_: &F) -> usize
    where
        F: FnOnce(A, B, C, D, E, G) -> Fut,
    {
        size_of::<Fut>()
    }

    /// An open stream's task holds the future of `stream::run` alone (the
    /// connection's task, which read the request, has ended): its size is
    /// paid once per subscriber, whatever the stream does.
    #[test]
    fn an_open_stream_holds_a_small_task() {
        let connection = future_of_5(&connection);
        let events = future_of_6(&serve_events);
        let stream = future_of_5(&crate::stream::run);
        eprintln!("connection {connection} B, serve_events {events} B, stream {stream} B");
        assert!(stream <= 3072, "{stream} bytes");
    }
}
