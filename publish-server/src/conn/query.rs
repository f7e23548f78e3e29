//! The query and `Last-Event-ID` of a request for chats' events, read
//! into the typed request that admission decides on.

use chat_core::auth::TokenSource;
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::validate::ChatId;
use serde::Deserialize;

use super::head::{EventsHead, Header};
use crate::admission::{EventsRequest, Subscription};
use crate::stream::{Kind, LastSeen};

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
    pub(super) fn parse(
        self,
        peer: Option<std::net::IpAddr>,
        max_chats: usize,
    ) -> Result<EventsRequest, ApiError> {
        let (chats, query, kind) = match &self.chat {
            Some(chat) => {
                let chat: ChatId = percent_decode(chat)?
                    .parse()
                    .map_err(ApiError::bad_request)?;
                let query: EventsQuery = serde_urlencoded::from_str(&self.query)
                    .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
                (
                    vec![Subscription { chat, cursor: None }],
                    query,
                    Kind::OneChat,
                )
            }
            None => {
                let (chats, query) = many_query(&self.query, max_chats)?;
                (chats, query, Kind::ManyChats)
            }
        };
        // The header wins: EventSource sends it on every reconnect.
        let last_seen = match self.last_event_id {
            Header::NotText => LastSeen::Malformed,
            Header::Text(header) => last_seen(kind, Some(&header)),
            Header::Absent => last_seen(kind, query.last_event_id.as_deref()),
        };
        Ok(EventsRequest {
            chats,
            kind,
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
/// or blank; an event id on a one-chat stream, a position on a many-chat
/// one.
fn last_seen(kind: Kind, text: Option<&str>) -> LastSeen {
    match (text.map(str::trim), kind) {
        (None | Some(""), _) => LastSeen::Nothing,
        (Some(text), Kind::OneChat) => text.parse().map_or(LastSeen::Malformed, LastSeen::Id),
        (Some(text), Kind::ManyChats) => {
            text.parse().map_or(LastSeen::Malformed, LastSeen::Position)
        }
    }
}

/// The chat id of a one-chat stream's path, percent-decoded.
fn percent_decode(text: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| ApiError::bad_request("chatId: not UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::super::head::events_head;
    use super::*;

    fn parse(head: &str, most: usize) -> Result<EventsRequest, ApiError> {
        events_head(head.as_bytes())
            .expect("a request for events")
            .parse(None, most)
    }

    #[test]
    fn a_one_chat_stream_takes_its_chat_from_the_path_and_the_header_over_the_query() {
        let request = parse(
            "GET /api/chats/lob%62y/events?lastEventId=1-0 HTTP/1.1\r\nLast-Event-ID: 0-0000000000000001\r\n\r\n",
            100,
        )
        .expect("well-formed");
        assert_eq!(request.kind, Kind::OneChat);
        assert_eq!(request.chats.len(), 1);
        assert_eq!(request.chats[0].chat.as_str(), "lobby");
        assert!(
            matches!(request.last_seen, LastSeen::Id(id) if id.to_string() == "0-0000000000000001"),
            "the header wins over the query"
        );
        let from_query = parse(
            "GET /api/chats/lobby/events?lastEventId=0-0000000000000002 HTTP/1.1\r\n\r\n",
            100,
        )
        .expect("well-formed");
        assert!(matches!(from_query.last_seen, LastSeen::Id(id) if id.offset == 2));
        let blank = parse(
            "GET /api/chats/lobby/events HTTP/1.1\r\nLast-Event-ID:  \r\n\r\n",
            100,
        )
        .expect("well-formed");
        assert!(matches!(blank.last_seen, LastSeen::Nothing));
        let not_an_id = parse(
            "GET /api/chats/lobby/events HTTP/1.1\r\nLast-Event-ID: \u{e9}x\r\n\r\n",
            100,
        )
        .expect("well-formed");
        assert!(matches!(not_an_id.last_seen, LastSeen::Malformed));
        for bad in ["a%zz", "%ff", "a%20b"] {
            let head = format!("GET /api/chats/{bad}/events HTTP/1.1\r\n\r\n");
            let refused = parse(&head, 100).expect_err(bad);
            assert_eq!(
                refused.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    fn many(query: &str) -> Result<EventsRequest, ApiError> {
        parse(&format!("GET /api/events?{query} HTTP/1.1\r\n\r\n"), 3)
    }

    #[test]
    fn a_many_chat_query_names_each_chat_once_with_its_cursor() {
        let request = many("chat=a&chat=b@2-0000000000000012&chat=a&lastEventId=0:1a~0c4f1e2a")
            .expect("well-formed");
        assert_eq!(request.kind, Kind::ManyChats);
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
