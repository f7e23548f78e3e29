//! The read model in Redis: per chat, its latest messages in log order and,
//! per message, the users holding each emoji and the counts.
//!
//! Every change is applied by a Lua script, atomically per chat, and skips
//! events at or below the chat's head (the offset of the last event applied),
//! so replaying the log, whole or in part, changes nothing that was applied.

use std::collections::HashMap;

use crate::event::{ChatEvent, Message};
use crate::id::EventId;
use crate::names::{self, Keys};
use crate::validate::{ChatId, UserId};
use redis::Script;
use serde::Serialize;

use crate::redis_conn::RedisConn;

mod wire;

use wire::{decode_page, encode};

/// Applies a batch of one chat's events. KEYS: messages, bodies, client ids,
/// head, reactions, events. ARGV: counts prefix, users prefix, retention,
/// replay log length, the field separator, the most distinct emojis a
/// message may hold, the changes prefix, then 8 values per event: kind (`m`/`r`), id, offset,
/// for a message userId, clientMessageId (or empty), body, unused; for a
/// reaction message id, userId, emoji, action; then its SSE frame.
/// Answers how many adds were refused because their message already held
/// the most distinct emojis.
const APPLY: &str = include_str!("../lua/apply.lua");

/// Moves a partition's projected offset forward, never back.
const ADVANCE: &str = include_str!("../lua/advance.lua");

/// Reads a page of messages with their counts. KEYS: messages, bodies,
/// head, reactions. ARGV: mode (`after`, `before`, `latest`), offset,
/// limit, and optionally a user id, the users prefix and the field
/// separator. Answers head id
/// (or false), has newer (0/1), has older (0/1), the bodies, the counts
/// (JSON, or false for none), then, given a user, per message the emojis
/// that user holds, in page order.
const FETCH: &str = include_str!("../lua/fetch.lua");

/// Reads the replay log after an offset. KEYS: events, head. ARGV: offset,
/// most frames, most bytes. Answers the highest offset trimmed from the log
/// (or false), then frame/offset pairs (within the bytes), then 1 when
/// there were more bytes than that.
const REPLAY: &str = include_str!("../lua/replay.lua");

/// Reads some messages' counts with the chat's head, atomically. KEYS:
/// head, reactions. ARGV: message ids. Answers head offset (or false), head
/// id (or false), then the counts (JSON, or false for none) in order.
const COUNTS: &str = include_str!("../lua/counts.lua");

/// Some messages' reaction counts as of a point of the chat's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountsAsOf {
    /// The last event of the chat applied: the counts include every event
    /// up to it and none after it.
    pub head: Option<EventId>,
    /// Per message asked for, in order: emoji to count.
    pub counts: Vec<HashMap<String, i64>>,
}

/// What the replay log of a chat holds after a given offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Events up to this offset were dropped from the log.
    pub trimmed: Option<i64>,
    /// Offsets and SSE frames, oldest first.
    pub frames: Vec<(i64, String)>,
    /// More frames followed than fit in the bytes asked for.
    pub over_bytes: bool,
    /// The projector has applied the whole partition up to this offset, so
    /// the log holds every event of the chat up to it.
    pub projected: Option<i64>,
}

/// Which page of a chat to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The latest messages.
    Latest,
    /// The messages right after this id.
    After(EventId),
    /// The messages right before this id.
    Before(EventId),
}

/// A message as the fetch API shows it: with its reaction counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchedMessage {
    #[serde(flatten)]
    pub message: Message,
    pub reactions: HashMap<String, i64>,
    /// The emojis the user named in the fetch holds on this message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mine: Option<Vec<String>>,
}

/// One page of a chat, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchPage {
    pub chat_id: ChatId,
    pub messages: Vec<FetchedMessage>,
    /// Where to continue: pass as `after` for what came since, or as
    /// `Last-Event-ID` to stream from here. When no newer message is left it
    /// is the chat's last applied event, reactions included, so the page's
    /// counts and the events after the cursor never overlap.
    pub cursor: Option<EventId>,
    /// Newer messages exist after `cursor`.
    pub has_more: bool,
    /// Older messages exist before the first one of the page.
    pub has_older: bool,
}

/// The distinct emojis a message may hold unless told otherwise.
pub const DEFAULT_MAX_EMOJIS_PER_MESSAGE: u32 = 50;

/// What a lookup of a message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The message is there.
    Found,
    /// The projector has passed the message's position: it does not exist
    /// (or was trimmed by retention).
    Missing,
    /// The projector has not reached the message's position yet; it has
    /// applied its partition up to this offset.
    NotYetProjected { projected: Option<i64> },
}

/// How much of each chat the read model keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per chat; older ones are dropped with their reactions.
    pub messages: u32,
    /// Events kept per chat for replay to reconnecting SSE clients.
    pub replay_events: u32,
}

/// Reads and writes the read model.
#[derive(Debug)]
pub struct ReadModel {
    keys: Keys,
    topic: String,
    retention: Retention,
    /// The most distinct emojis one message may hold.
    max_emojis: u32,
    apply: Script,
    advance: Script,
    fetch: Script,
    replay: Script,
    counts: Script,
}

impl ReadModel {
    /// The read model of `topic`'s events, keeping `retention` of each
    /// chat when it applies them.
    pub fn new(keys: Keys, topic: &str, retention: Retention) -> Self {
        Self {
            keys,
            topic: topic.to_owned(),
            retention,
            max_emojis: DEFAULT_MAX_EMOJIS_PER_MESSAGE,
            apply: Script::new(APPLY),
            advance: Script::new(ADVANCE),
            fetch: Script::new(FETCH),
            replay: Script::new(REPLAY),
            counts: Script::new(COUNTS),
        }
    }

    /// A read model only read from (as publish-server reads the replay log
    /// and positions): it never applies, so it needs no retention.
    pub fn reader(keys: Keys, topic: &str) -> Self {
        Self::new(
            keys,
            topic,
            Retention {
                messages: 1,
                replay_events: 1,
            },
        )
    }

    /// Caps the distinct emojis one message may hold: an add of another
    /// emoji is refused once a message holds `max`.
    pub fn with_max_emojis(mut self, max: u32) -> Self {
        self.max_emojis = max;
        self
    }

    /// The most distinct emojis one message may hold.
    pub fn max_emojis(&self) -> u32 {
        self.max_emojis
    }

    /// Applies events (in log order per partition) in one round trip, then
    /// records the partitions' progress in a second. Safe to repeat.
    /// Answers how many reaction adds were refused by the emoji cap.
    pub async fn apply(
        &self,
        redis: &RedisConn,
        events: &[(EventId, ChatEvent)],
    ) -> redis::RedisResult<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        // One script call per chat, its events in log order.
        let mut by_chat: Vec<(&ChatId, Vec<&(EventId, ChatEvent)>)> = Vec::new();
        let mut index: HashMap<&ChatId, usize> = HashMap::new();
        let mut progress: HashMap<i32, i64> = HashMap::new();
        for event in events {
            let chat = event.1.chat_id();
            let slot = *index.entry(chat).or_insert_with(|| {
                by_chat.push((chat, Vec::new()));
                by_chat.len() - 1
            });
            by_chat[slot].1.push(event);
            let seen = progress.entry(event.0.partition).or_insert(event.0.offset);
            *seen = (*seen).max(event.0.offset);
        }
        let conn = redis.get().await?;
        // One script call per chat, all sent together: each touches one
        // slot of a cluster. (A script Redis no longer has, after a
        // restart, is loaded again by the call.)
        let applies = by_chat.iter().map(|(chat, chat_events)| {
            let keys = self.keys.chat(chat);
            let mut call = self.apply.key(&keys.messages);
            call.key(&keys.bodies)
                .key(&keys.client_ids)
                .key(&keys.head)
                .key(&keys.reactions)
                .key(&keys.events)
                .arg(&keys.counts_prefix)
                .arg(&keys.users_prefix)
                .arg(self.retention.messages)
                .arg(self.retention.replay_events)
                .arg(names::FIELD_SEPARATOR)
                .arg(self.max_emojis)
                .arg(&keys.changes_prefix);
            for (id, event) in chat_events {
                encode(&mut call, *id, event);
            }
            let mut conn = conn.clone();
            async move { call.invoke_async::<u64>(&mut conn).await }
        });
        let refused: Vec<u64> = futures::future::try_join_all(applies).await?;
        // Then each partition's progress, once every chat holds its events.
        let advances = progress.into_iter().map(|(partition, offset)| {
            let mut call = self
                .advance
                .key(self.keys.projected(&self.topic, partition));
            call.arg(offset);
            let mut conn = conn.clone();
            async move { call.invoke_async::<redis::Value>(&mut conn).await }
        });
        futures::future::try_join_all(advances).await?;
        Ok(refused.iter().sum())
    }

    /// The offset up to which the projector has applied `partition`
    /// (inclusive); `None` before it applied any.
    pub async fn projected(
        &self,
        redis: &RedisConn,
        partition: i32,
    ) -> redis::RedisResult<Option<i64>> {
        let mut conn = redis.get().await?;
        redis::cmd("GET")
            .arg(self.keys.projected(&self.topic, partition))
            .query_async(&mut conn)
            .await
    }

    /// Reads one page of `chat`, up to `limit` messages, in one round trip.
    /// Given `user`, each message also says which emojis that user holds.
    pub async fn fetch(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        page: Page,
        limit: u32,
        user: Option<&UserId>,
    ) -> redis::RedisResult<FetchPage> {
        let keys = self.keys.chat(chat);
        let (mode, offset) = match page {
            Page::Latest => ("latest", 0),
            Page::After(id) => ("after", id.offset),
            Page::Before(id) => ("before", id.offset),
        };
        let mut conn = redis.get().await?;
        let mut call = self.fetch.key(&keys.messages);
        call.key(&keys.bodies)
            .key(&keys.head)
            .key(&keys.reactions)
            .arg(mode)
            .arg(offset)
            .arg(limit);
        if let Some(user) = user {
            call.arg(user.as_str())
                .arg(&keys.users_prefix)
                .arg(names::FIELD_SEPARATOR);
        }
        let reply: Vec<redis::Value> = call.invoke_async(&mut conn).await?;
        decode_page(chat, page, reply)
    }

    /// Up to `most` events of `chat`'s replay log after `after`, with the
    /// chat's head and how far the log was trimmed, in one round trip.
    pub async fn replay(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        after: EventId,
        most: u32,
        most_bytes: u64,
    ) -> redis::RedisResult<Replay> {
        use redis::FromRedisValue as _;
        let keys = self.keys.chat(chat);
        // Read before the log: the projector records a partition's progress
        // only after the chats' logs hold it, so the log read next holds at
        // least everything up to this offset.
        let projected = self.projected(redis, after.partition).await?;
        let mut conn = redis.get().await?;
        let (trimmed, flat, over_bytes): (Option<i64>, Vec<redis::Value>, bool) = self
            .replay
            .key(&keys.events)
            .key(&keys.head)
            .arg(after.offset)
            .arg(most)
            .arg(most_bytes)
            .invoke_async(&mut conn)
            .await?;

        let mut frames = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(frame), Some(score)) = (flat.next(), flat.next()) {
            frames.push((
                i64::from_redis_value(score)?,
                String::from_redis_value(frame)?,
            ));
        }
        Ok(Replay {
            trimmed,
            frames,
            over_bytes,
            projected,
        })
    }

    /// The counts of `messages` (at most a few thousand) and the chat's
    /// head they are as of, in one round trip.
    pub async fn counts(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        messages: &[EventId],
    ) -> redis::RedisResult<CountsAsOf> {
        let keys = self.keys.chat(chat);
        let mut conn = redis.get().await?;
        let mut call = self.counts.key(&keys.head);
        call.key(&keys.reactions);
        for message in messages {
            call.arg(message.to_string());
        }
        let (_, head, counts): (Option<i64>, Option<String>, Vec<Option<String>>) =
            call.invoke_async(&mut conn).await?;
        let counts = counts
            .into_iter()
            .map(|json| {
                json.and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or_default()
            })
            .collect();
        Ok(CountsAsOf {
            head: head.and_then(|id| id.parse().ok()),
            counts,
        })
    }

    /// Whether `message` is in `chat`'s read model, and if not, whether the
    /// projector has passed its position.
    pub async fn lookup(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        message: EventId,
    ) -> redis::RedisResult<Lookup> {
        let keys = self.keys.chat(chat);
        // The partition's progress first, the chat's keys (one slot) after:
        // the projector applies a chat before it advances the progress, so
        // a message missing after the progress passed it does not exist.
        let projected = self.projected(redis, message.partition).await?;
        let mut conn = redis.get().await?;
        let (exists, head): (bool, Option<String>) = redis::pipe()
            .hexists(&keys.bodies, message.to_string())
            .hget(&keys.head, "id")
            .query_async(&mut conn)
            .await?;
        // All of a chat's events share one partition.
        let other_partition = head
            .and_then(|id| id.parse::<EventId>().ok())
            .is_some_and(|head| head.partition != message.partition);
        Ok(if exists {
            Lookup::Found
        } else if other_partition || projected.is_some_and(|p| p >= message.offset) {
            Lookup::Missing
        } else {
            Lookup::NotYetProjected { projected }
        })
    }
}
