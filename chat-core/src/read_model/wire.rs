//! The read model's wire format: events encoded as the apply script's
//! arguments, and the fetch script's reply decoded into a page.

use std::collections::HashMap;

use super::{FetchPage, FetchedMessage, Page};
use crate::event::{ChatEvent, Message, ReactionAction};
use crate::id::EventId;
use crate::validate::ChatId;

/// Adds `event` at `id` to the apply script's arguments: its kind, id and
/// offset, its fields, then its SSE frame for the replay log.
pub(super) fn encode(call: &mut redis::ScriptInvocation<'_>, id: EventId, event: &ChatEvent) {
    call.arg(match event {
        ChatEvent::Message(_) => "m",
        ChatEvent::Reaction(_) => "r",
    })
    .arg(id.to_string())
    .arg(id.offset);
    match event {
        ChatEvent::Message(posted) => {
            let body =
                serde_json::to_string(&Message::stored(id, posted.clone())).unwrap_or_default();
            call.arg(posted.user_id.as_str())
                .arg(posted.client_message_id.as_ref().map_or("", |c| c.as_str()))
                .arg(body)
                .arg("");
        }
        ChatEvent::Reaction(change) => {
            call.arg(change.message_id.to_string())
                .arg(change.user_id.as_str())
                .arg(change.emoji.as_str())
                .arg(match change.action {
                    ReactionAction::Add => "add",
                    ReactionAction::Remove => "remove",
                });
        }
    }
    call.arg(crate::sse::frame(id, event));
}

/// A reply the read model's scripts never give.
pub(super) fn invalid(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected read model reply",
        what.to_owned(),
    ))
}

/// The fetch script's reply as the page of `chat` asked by `page`.
pub(super) fn decode_page(
    chat: &ChatId,
    page: Page,
    reply: Vec<redis::Value>,
) -> redis::RedisResult<FetchPage> {
    use redis::FromRedisValue as _;
    let mut reply = reply.into_iter();
    let mut next = || reply.next().ok_or_else(|| invalid("short reply"));
    let head = Option::<String>::from_redis_value(next()?)?
        .map(|id| id.parse::<EventId>().map_err(|e| invalid(&e.to_string())))
        .transpose()?;
    let has_more = i64::from_redis_value(next()?)? == 1;
    let has_older = i64::from_redis_value(next()?)? == 1;
    let bodies = Vec::<Option<String>>::from_redis_value(next()?)?;
    let counts = Vec::<Option<String>>::from_redis_value(next()?)?;
    let mut mine = Vec::<Vec<String>>::from_redis_value(next()?)?.into_iter();
    let mut messages = Vec::with_capacity(bodies.len());
    // A body is missing only if retention dropped it between the range and
    // the read, which one script call rules out; skip rather than fail.
    for (body, counts, mine) in bodies
        .into_iter()
        .zip(counts)
        .map(|(b, c)| (b, c, mine.next()))
        .filter_map(|(b, c, m)| Some((b?, c, m)))
    {
        let message: Message = serde_json::from_str(&body).map_err(|e| invalid(&e.to_string()))?;
        let reactions = match counts {
            Some(json) => serde_json::from_str(&json).map_err(|e| invalid(&e.to_string()))?,
            None => HashMap::new(),
        };
        messages.push(FetchedMessage {
            message,
            reactions,
            mine,
        });
    }
    let last = messages.last().map(|m| m.message.id);
    // With nothing newer left, continue from the chat's head, which also
    // covers reactions applied after the last message.
    let cursor = match (has_more, last, page) {
        (true, Some(last), _) => Some(last),
        (_, last, page) => {
            let given = match page {
                Page::After(id) => Some(id),
                _ => None,
            };
            [last, given, head]
                .into_iter()
                .flatten()
                .max_by_key(|id| id.offset)
        }
    };
    Ok(FetchPage {
        chat_id: chat.clone(),
        messages,
        cursor,
        has_more,
        has_older,
    })
}
