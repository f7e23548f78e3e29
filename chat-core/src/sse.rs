//! Server-Sent Events frames of chat events. An event is encoded once, here,
//! and the same bytes go to every subscriber and into the replay log.

use std::collections::HashMap;

use serde::Serialize;

use crate::event::{ChatEvent, Message, Reaction};
use crate::id::EventId;

/// Sent once at the start of a stream: how long EventSource waits before
/// reconnecting, in milliseconds.
pub const RETRY: &str = "retry: 2000\n\n";

/// A comment line that keeps proxies and clients from timing the stream out.
pub const HEARTBEAT: &str = ": heartbeat\n\n";

/// The SSE frame of the event at `id`: `id:`, `event:` named after its type,
/// and the event as the API shows it (a stored message or reaction).
pub fn frame(id: EventId, event: &ChatEvent) -> String {
    let (name, data) = match event {
        ChatEvent::Message(posted) => (
            "message",
            serde_json::to_string(&Message::stored(id, posted.clone())),
        ),
        ChatEvent::Reaction(change) => (
            "reaction",
            serde_json::to_string(&Reaction {
                id,
                change: change.clone(),
            }),
        ),
    };
    // Stored messages and reactions are strings and numbers: they encode,
    // and JSON puts no raw line break in a string.
    let data = data.unwrap_or_default();
    format!("id: {id}\nevent: {name}\ndata: {data}\n\n")
}

/// A `reactions` frame: a message's absolute reaction counts as of the
/// event `as_of` (hot chats, at most once per message per second). It has
/// no `id:`: the client's last event id stays as it was, and a `reaction`
/// event whose id is not above `asOf` is already counted in it.
pub fn reactions(
    chat: &str,
    message: EventId,
    counts: &HashMap<String, i64>,
    as_of: EventId,
) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        chat_id: &'a str,
        message_id: EventId,
        reactions: &'a HashMap<String, i64>,
        as_of: EventId,
    }
    let data = json(&Data {
        chat_id: chat,
        message_id: message,
        reactions: counts,
        as_of,
    });
    format!("event: reactions\ndata: {data}\n\n")
}

/// A `reset` frame: the server cannot replay from the client's id; the
/// client refetches with the fetch API. It has no `id:`, so the client's
/// last event id stays as it was.
pub fn reset(reason: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        reason: &'a str,
    }
    let data = json(&Data { reason });
    format!("event: reset\ndata: {data}\n\n")
}

/// A many-chat stream's `reset` of one chat: that chat's client refetches
/// it; the stream's other chats go on.
pub fn reset_chat(chat: &str, reason: &str) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Data<'a> {
        chat_id: &'a str,
        reason: &'a str,
    }
    let data = json(&Data {
        chat_id: chat,
        reason,
    });
    format!("event: reset\ndata: {data}\n\n")
}

/// The first event of a many-chat stream: its chats, and as its `id:` the
/// stream's position, so that a reconnect resumes every chat even before
/// any of them had an event.
pub fn subscribed(position: &str, chats: &[&str]) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        chats: &'a [&'a str],
    }
    let data = json(&Data { chats });
    format!("id: {position}\nevent: subscribed\ndata: {data}\n\n")
}

/// A frame's data: strings, numbers and maps of them always encode, and
/// JSON puts no raw line break in a string.
fn json(data: &impl Serialize) -> String {
    serde_json::to_string(data).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::alice_in_lobby;

    #[test]
    fn a_message_frame_has_id_event_and_one_data_line() {
        let event = alice_in_lobby("two\nlines");
        let frame = frame(EventId::new(1, 42), &event);
        assert_eq!(
            frame,
            "id: 1-000000000000002a\nevent: message\ndata: {\"id\":\"1-000000000000002a\",\"chatId\":\"lobby\",\"userId\":\"alice\",\"text\":\"two\\nlines\",\"createdAt\":\"2026-11-21T09:30:00.123Z\"}\n\n"
        );
        assert!(reset("gone").starts_with("event: reset\ndata: {"));
    }
}
