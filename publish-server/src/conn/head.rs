//! The head of a request: read from the socket up to its blank line, and
//! parsed (with `httparse`) far enough to tell a `GET` of chats' events
//! from every other request.

use std::io;

use chat_core::serve::HEAD_LIMIT;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use super::MANY_ROUTE;

pub(super) enum Head {
    Complete,
    TooLarge,
    Closed,
}

/// A header as the client sent it.
#[derive(Debug)]
pub(super) enum Header {
    Absent,
    /// Present, but not UTF-8.
    NotText,
    Text(String),
}

/// Reads until the blank line that ends the request head.
pub(super) async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
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
pub(super) struct EventsHead {
    /// The chat id as in the path, still percent-encoded; `None`: the
    /// many-chat stream (`/api/events?chat=...`).
    pub(super) chat: Option<String>,
    pub(super) query: String,
    pub(super) last_event_id: Header,
    pub(super) origin: Option<String>,
    pub(super) authorization: Option<Vec<u8>>,
    pub(super) cookies: Vec<String>,
    pub(super) forwarded_for: Vec<String>,
}

/// The request in `head` if it is a `GET` of `/api/chats/{chatId}/events`.
pub(super) fn events_head(head: &[u8]) -> Option<EventsHead> {
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
        last_event_id: match values("last-event-id").next() {
            None => Header::Absent,
            Some(value) => text(value).map_or(Header::NotText, Header::Text),
        },
        origin: values("origin").next().and_then(text),
        authorization: values("authorization").next().map(<[u8]>::to_vec),
        cookies: values("cookie").filter_map(text).collect(),
        forwarded_for: values("x-forwarded-for").filter_map(text).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_a_chats_events_is_taken() {
        let head = events_head(
            b"GET /api/chats/lobby/events HTTP/1.1\r\nLast-Event-ID: 0-0000000000000001\r\nOrigin: http://x\r\n\r\n",
        )
        .expect("events");
        assert_eq!(head.origin.as_deref(), Some("http://x"));
        assert_eq!(head.chat.as_deref(), Some("lobby"));
        assert!(matches!(&head.last_event_id, Header::Text(id) if id == "0-0000000000000001"));
        let unreadable =
            events_head(b"GET /api/events?chat=a HTTP/1.1\r\nLast-Event-ID: \xff\r\n\r\n")
                .expect("events");
        assert!(unreadable.chat.is_none(), "the many-chat stream");
        assert!(matches!(unreadable.last_event_id, Header::NotText));
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
    }
}
