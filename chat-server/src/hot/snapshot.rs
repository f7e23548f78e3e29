//! The shared snapshot of a hot chat: its latest page, read from Redis by
//! one request at a time and reused by every fetch for a short while.
//!
//! The cursor contract makes a slightly old page harmless: a page holds
//! every event up to its cursor and none after it, and a stream from that
//! cursor delivers everything after. So each hot chat costs Redis at most
//! one page read per `ttl` on this instance, however many members fetch.
//!
//! Bodies are built from each message's JSON, serialized once when the
//! snapshot is taken; a page's whole body is then kept and shared (as
//! `Bytes`) by every fetch asking for the same slice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chat_core::id::EventId;
use chat_core::read_model::{FetchPage, Page, ReadModel};
use chat_core::redis_conn::RedisConn;
use chat_core::validate::ChatId;

/// Most page bodies kept per snapshot, and most bytes they may take, as a
/// multiple of the snapshot's own messages; past either, further slices
/// are built for each fetch.
const MAX_BODIES: usize = 256;
const MAX_BODY_BYTES_FACTOR: usize = 4;

/// One hot chat's latest page as of one read: its messages, oldest first,
/// each serialized once, and the page's cursor.
#[derive(Debug)]
pub(crate) struct Snapshot {
    chat: ChatId,
    taken: Instant,
    /// Each message's id and JSON (without `mine`), oldest first.
    messages: Vec<(EventId, Bytes)>,
    /// The cursor of the latest page: every event up to it, none after.
    cursor: Option<EventId>,
    /// Messages older than the snapshot's first exist.
    has_older: bool,
    /// Bodies built so far, by (first message, end), and their bytes.
    bodies: Mutex<Bodies>,
}

#[derive(Debug, Default)]
struct Bodies {
    by_slice: HashMap<(usize, usize), Bytes>,
    bytes: usize,
}

impl Snapshot {
    pub(crate) fn new(page: FetchPage, taken: Instant) -> Self {
        let messages = page
            .messages
            .into_iter()
            .map(|mut message| {
                message.mine = None;
                let json = serde_json::to_vec(&message).unwrap_or_default();
                (message.message.id, Bytes::from(json))
            })
            .collect();
        Self {
            chat: page.chat_id,
            taken,
            messages,
            cursor: page.cursor,
            has_older: page.has_older,
            bodies: Mutex::default(),
        }
    }

    /// How old the snapshot is.
    pub(crate) fn age(&self) -> Duration {
        self.taken.elapsed()
    }

    /// The body of `page` with up to `limit` messages, when the snapshot
    /// can answer it exactly as a read at the snapshot's moment would: the
    /// latest page, or the messages after an id at or after the snapshot's
    /// first message. `None` for anything older.
    pub(crate) fn answer(&self, page: Page, limit: u32) -> Option<Bytes> {
        let limit = limit as usize;
        let len = self.messages.len();
        let (start, end, after) = match page {
            Page::Latest => (len.saturating_sub(limit), len, None),
            Page::After(after) => {
                let covered = !self.has_older
                    || self
                        .messages
                        .first()
                        .is_some_and(|(first, _)| after.offset >= first.offset);
                if !covered {
                    return None;
                }
                let start = self
                    .messages
                    .partition_point(|(id, _)| id.offset <= after.offset);
                (start, len.min(start + limit), Some(after))
            }
            Page::Before(_) => return None,
        };
        let has_more = end < len;
        let cursor = if has_more {
            Some(self.messages[end - 1].0)
        } else {
            [self.cursor, after]
                .into_iter()
                .flatten()
                .max_by_key(|id| id.offset)
        };
        // A cursor from the request, newer than the snapshot's, is the
        // caller's own: that body is not shared.
        let shared = has_more || cursor == self.cursor;
        if shared && let Some(body) = self.lock_bodies().by_slice.get(&(start, end)) {
            return Some(body.clone());
        }
        let body = self.body(start, end, cursor, has_more);
        if shared {
            let budget = MAX_BODY_BYTES_FACTOR
                * (self.messages.iter().map(|(_, m)| m.len()).sum::<usize>() + 1024);
            let mut bodies = self.lock_bodies();
            if bodies.by_slice.len() < MAX_BODIES && bodies.bytes + body.len() <= budget {
                bodies.bytes += body.len();
                bodies.by_slice.insert((start, end), body.clone());
            }
        }
        Some(body)
    }

    fn lock_bodies(&self) -> std::sync::MutexGuard<'_, Bodies> {
        self.bodies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A page body, as `FetchPage` serializes, from the messages' JSON.
    fn body(&self, start: usize, end: usize, cursor: Option<EventId>, has_more: bool) -> Bytes {
        let messages = &self.messages[start..end];
        let size = messages
            .iter()
            .map(|(_, json)| json.len() + 1)
            .sum::<usize>()
            + 160;
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(b"{\"chatId\":");
        let _ = serde_json::to_writer(&mut body, &self.chat);
        body.extend_from_slice(b",\"messages\":[");
        for (n, (_, json)) in messages.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(json);
        }
        body.extend_from_slice(b"],\"cursor\":");
        let _ = serde_json::to_writer(&mut body, &cursor);
        let has_older = start > 0 || self.has_older;
        body.extend_from_slice(
            format!(",\"hasMore\":{has_more},\"hasOlder\":{has_older}}}").as_bytes(),
        );
        Bytes::from(body)
    }
}

/// How a fetch got its snapshot, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A fresh snapshot was there.
    Hit,
    /// This fetch read the page.
    Miss,
    /// This fetch waited for another's read.
    Wait,
    /// An older snapshot: a read is in flight, or Redis failed.
    Stale,
}

impl Source {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Wait => "wait",
            Self::Stale => "stale",
        }
    }
}

/// Why no snapshot could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unavailable {
    #[error("{0}")]
    Read(#[from] redis::RedisError),
    #[error("the last read failed less than {0} ms ago")]
    RecentlyFailed(u128),
}

#[derive(Debug, Default)]
struct Slot {
    current: RwLock<Option<Arc<Snapshot>>>,
    /// Held by the one read in flight; holds when the last read failed.
    read: tokio::sync::Mutex<Option<Instant>>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Snapshot>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fresh(&self, ttl: Duration) -> Option<Arc<Snapshot>> {
        self.current().filter(|s| s.age() < ttl)
    }
}

/// The snapshots of the hot chats of this instance.
#[derive(Debug)]
pub(crate) struct Snapshots {
    ttl: Duration,
    /// Messages a snapshot holds: the largest `limit` a fetch may ask.
    size: u32,
    read_model: Arc<ReadModel>,
    redis: Arc<RedisConn>,
    chats: Mutex<HashMap<ChatId, Arc<Slot>>>,
}

impl Snapshots {
    /// Snapshots of `size` messages, reused for `ttl`.
    pub(crate) fn new(
        ttl: Duration,
        size: u32,
        read_model: Arc<ReadModel>,
        redis: Arc<RedisConn>,
    ) -> Self {
        Self {
            ttl,
            size,
            read_model,
            redis,
            chats: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, chat: &ChatId) -> Arc<Slot> {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = chats.get(chat) {
            return slot.clone();
        }
        let slot = Arc::new(Slot::default());
        chats.insert(chat.clone(), slot.clone());
        metrics::gauge!(chat_core::metrics::name::HOT_SNAPSHOT_CHATS).set(chats.len() as f64);
        slot
    }

    /// The snapshot of the hot chat `chat`: a fresh one, or one read now
    /// (one read at a time per chat; concurrent fetches wait for it), or,
    /// while a read is in flight or Redis fails, the last one taken.
    pub(crate) async fn get(&self, chat: &ChatId) -> Result<(Arc<Snapshot>, Source), Unavailable> {
        let slot = self.slot(chat);
        if let Some(snapshot) = slot.fresh(self.ttl) {
            return Ok((snapshot, Source::Hit));
        }
        let (mut read, waited) = match slot.read.try_lock() {
            Ok(read) => (read, false),
            Err(_) => {
                if let Some(snapshot) = slot.current() {
                    return Ok((snapshot, Source::Stale));
                }
                (slot.read.lock().await, true)
            }
        };
        if let Some(snapshot) = slot.fresh(self.ttl) {
            return Ok((snapshot, if waited { Source::Wait } else { Source::Hit }));
        }
        // The last read failed a moment ago: do not pile reads on a Redis
        // that is down.
        let failed_recently = read.is_some_and(|at| at.elapsed() < self.ttl);
        let result = if failed_recently {
            None
        } else {
            Some(self.read(chat).await)
        };
        match result {
            Some(Ok(snapshot)) => {
                *read = None;
                let snapshot = Arc::new(snapshot);
                *slot.current.write().unwrap_or_else(|e| e.into_inner()) = Some(snapshot.clone());
                Ok((snapshot, Source::Miss))
            }
            failed => {
                let error = match failed {
                    Some(Err(error)) => {
                        *read = Some(Instant::now());
                        Unavailable::Read(error)
                    }
                    _ => Unavailable::RecentlyFailed(self.ttl.as_millis()),
                };
                match slot.current() {
                    Some(snapshot) => Ok((snapshot, Source::Stale)),
                    None => Err(error),
                }
            }
        }
    }

    async fn read(&self, chat: &ChatId) -> redis::RedisResult<Snapshot> {
        let started = Instant::now();
        let page = self
            .read_model
            .fetch(&self.redis, chat, Page::Latest, self.size, None)
            .await;
        let result = if page.is_ok() { "ok" } else { "error" };
        metrics::counter!(chat_core::metrics::name::HOT_PAGE_READS_TOTAL, "kind" => "snapshot", "result" => result)
            .increment(1);
        Ok(Snapshot::new(page?, started))
    }

    /// Drops the snapshots of chats that are no longer hot.
    pub(crate) fn retain(&self, hot: impl Fn(&ChatId) -> bool) {
        let mut chats = self.chats.lock().unwrap_or_else(|e| e.into_inner());
        chats.retain(|chat, _| hot(chat));
        metrics::gauge!(chat_core::metrics::name::HOT_SNAPSHOT_CHATS).set(chats.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap as Map;

    use chat_core::event::Message;
    use chat_core::read_model::FetchedMessage;

    use super::*;

    fn id(offset: i64) -> EventId {
        EventId {
            partition: 2,
            offset,
        }
    }

    fn message(offset: i64) -> FetchedMessage {
        let json = serde_json::json!({
            "id": id(offset).to_string(),
            "chatId": "crowd",
            "userId": "ann",
            "text": format!("message {offset}"),
            "createdAt": "2026-11-30T00:00:00Z",
        });
        FetchedMessage {
            message: serde_json::from_value::<Message>(json).expect("message"),
            reactions: Map::from([("👍".to_owned(), offset)]),
            mine: Some(vec!["👍".to_owned()]),
        }
    }

    /// The page a read at the snapshot's moment gives: messages 10..=14
    /// (older ones exist), the cursor past them at the chat's head, 15.
    fn page(range: std::ops::RangeInclusive<i64>) -> FetchPage {
        FetchPage {
            chat_id: "crowd".parse().expect("chat"),
            messages: range.map(message).collect(),
            cursor: Some(id(15)),
            has_more: false,
            has_older: true,
        }
    }

    fn expected(
        range: impl IntoIterator<Item = i64>,
        cursor: i64,
        more: bool,
        older: bool,
    ) -> serde_json::Value {
        let mut messages: Vec<FetchedMessage> = range.into_iter().map(message).collect();
        for message in &mut messages {
            message.mine = None;
        }
        serde_json::to_value(FetchPage {
            chat_id: "crowd".parse().expect("chat"),
            messages,
            cursor: Some(id(cursor)),
            has_more: more,
            has_older: older,
        })
        .expect("JSON")
    }

    fn answer(snapshot: &Snapshot, page: Page, limit: u32) -> Option<serde_json::Value> {
        snapshot
            .answer(page, limit)
            .map(|body| serde_json::from_slice(&body).expect("the body is JSON"))
    }

    #[test]
    fn answers_what_a_read_at_its_moment_would() {
        let snapshot = Snapshot::new(page(10..=14), Instant::now());
        assert_eq!(
            answer(&snapshot, Page::Latest, 100),
            Some(expected(10..=14, 15, false, true))
        );
        assert_eq!(
            answer(&snapshot, Page::Latest, 2),
            Some(expected(13..=14, 15, false, true))
        );
        assert_eq!(
            answer(&snapshot, Page::After(id(11)), 100),
            Some(expected(12..=14, 15, false, true)),
            "the suffix after 11, with the snapshot's cursor"
        );
        assert_eq!(
            answer(&snapshot, Page::After(id(10)), 2),
            Some(expected(11..=12, 12, true, true)),
            "a cut suffix continues from its last message"
        );
        assert_eq!(
            answer(&snapshot, Page::After(id(14)), 10),
            Some(expected([], 15, false, true)),
            "nothing new: the cursor is the chat's head"
        );
        assert_eq!(
            answer(&snapshot, Page::After(id(20)), 10),
            Some(expected([], 20, false, true)),
            "a caller ahead of the snapshot keeps its own position"
        );
        assert_eq!(
            answer(&snapshot, Page::After(id(9)), 10),
            None,
            "older than the snapshot"
        );
        assert_eq!(answer(&snapshot, Page::Before(id(12)), 10), None);
    }

    #[test]
    fn a_snapshot_of_a_whole_chat_answers_any_after() {
        let mut whole = page(10..=14);
        whole.has_older = false;
        let snapshot = Snapshot::new(whole, Instant::now());
        assert_eq!(
            answer(&snapshot, Page::After(id(3)), 100),
            Some(expected(10..=14, 15, false, false))
        );
    }

    #[test]
    fn a_body_is_built_once_and_shared() {
        let snapshot = Snapshot::new(page(10..=14), Instant::now());
        let first = snapshot.answer(Page::Latest, 3).expect("answered");
        let again = snapshot.answer(Page::After(id(11)), 3).expect("answered");
        assert_eq!(first.as_ptr(), again.as_ptr(), "one shared body");
        let raw = String::from_utf8(first.to_vec()).expect("text");
        assert!(!raw.contains("mine"), "hot pages carry no mine: {raw}");
    }
}
