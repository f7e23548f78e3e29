//! Remembers which message each `clientMessageId` became, so a retried POST
//! answers with the original message and writes nothing new.
//!
//! The first request with a given id claims it in Redis with a `pending`
//! marker that names its time, writes to Kafka, then stores for the
//! idempotency window only what a retry's answer needs beside the retry
//! itself: the message's id and time, and a hash of its text (a retry
//! carries the text; one whose text hashes otherwise reused the id). About
//! 100 bytes an id, whatever the text. A concurrent retry waits for the
//! claim to resolve. A claim never lapses by itself: a server that died
//! mid-write leaves its marker, and a retry takes it over only once that
//! write can no longer reach the log and the projector has applied the log
//! to its end without it.

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use chat_core::event::Message;
use chat_core::id::EventId;
use chat_core::names::Keys;
use chat_core::validate::{ChatId, ClientMessageId, UserId};
use chrono::{DateTime, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};

use chat_core::redis_conn::RedisConn;

/// The start of a pending claim's marker (`pending:<Unix ms>:<nonce>`).
/// A bare `pending` is a claim of an older release, which lapses.
const PENDING: &str = "pending";

/// The start of the marker of a claim whose write failed without telling
/// whether Kafka stored it (`maybe:<Unix ms>`): kept for the idempotency
/// window, never lapsing, so a retry cannot write a second copy of a
/// message that is in the log but not projected yet.
const UNKNOWN: &str = "maybe:";

/// Answers the stored message if the key holds one, else the message the
/// read model holds for the id (KEYS[2] client ids, KEYS[3] bodies; ARGV[3]
/// the field): a server that died between its write and `complete` left a
/// claim that is pending or lapsed, and the projector knows what the write
/// became. Else answers the pending marker, or sets it and answers nothing.
const CLAIM: &str = include_str!("lua/claim.lua");

/// Removes the caller's own pending marker, never a stored message.
const RELEASE: &str = include_str!("lua/release.lua");

/// Turns an unknown-outcome marker into a pending claim, unless the read
/// model knows the id.
const TAKE_OVER: &str = include_str!("lua/take_over.lua");

/// What a claim on a `clientMessageId` found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Nobody used the id: the caller holds `marker`, writes the message,
    /// then `complete`s (or `release`s the marker).
    Won { marker: String },
    /// Another request claimed this message at `at_ms` (Unix ms; `None`
    /// for a claim of an older release, which lapses) and is writing it, or
    /// its server died mid-write.
    Pending { marker: String, at_ms: Option<i64> },
    /// A write of this message failed without telling whether Kafka stored
    /// it, at `marker`'s time (Unix ms); the projector has not shown it.
    Unknown { marker: String, at_ms: i64 },
    /// The id was used for this message.
    Stored(Stored),
}

/// What is kept of a message posted with a `clientMessageId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stored {
    pub(crate) id: EventId,
    #[serde(with = "chat_core::event::rfc3339")]
    pub(crate) created_at: DateTime<Utc>,
    /// FNV-1a (64 bits) of the text, in hex.
    text_hash: String,
}

impl Stored {
    fn of(message: &Message) -> Self {
        Self {
            id: message.id,
            created_at: message.created_at,
            text_hash: text_hash(&message.text),
        }
    }

    /// Whether `text` is the text this message was posted with.
    pub(crate) fn has_text(&self, text: &str) -> bool {
        self.text_hash == text_hash(text)
    }
}

/// FNV-1a, 64 bits, in hex: stable across builds and releases, as a hash
/// kept for a day must be.
fn text_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in text.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A pending marker for a claim made now: its time, then a nonce that
/// tells two claims of one millisecond apart.
fn pending_marker() -> String {
    static CLAIMS: AtomicU64 = AtomicU64::new(0);
    let n = CLAIMS.fetch_add(1, Ordering::Relaxed);
    format!(
        "{PENDING}:{}:{}-{n}",
        Utc::now().timestamp_millis(),
        std::process::id()
    )
}

/// The time (Unix ms) a pending marker names.
fn pending_at(marker: &str) -> Option<i64> {
    marker.split(':').nth(1)?.parse().ok()
}

/// A kept value: the short record, or a whole message (from the read
/// model, for a write whose server died before recording it).
fn parse_kept(json: &str) -> Result<Stored, serde_json::Error> {
    serde_json::from_str::<Stored>(json)
        .or_else(|_| serde_json::from_str::<Message>(json).map(|m| Stored::of(&m)))
}

/// The store of `clientMessageId`s, in Redis.
#[derive(Debug)]
pub(crate) struct ClientMessages {
    keys: Keys,
    /// How long a stored id answers retries.
    window: Duration,
    claim: Script,
    release: Script,
    take_over: Script,
}

impl ClientMessages {
    /// A store that remembers ids, and keeps claims, for `window`.
    pub(crate) fn new(keys: Keys, window: Duration) -> Self {
        Self {
            keys,
            window,
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
            take_over: Script::new(TAKE_OVER),
        }
    }

    fn key(&self, chat: &ChatId, user: &UserId, id: &ClientMessageId) -> String {
        self.keys.client_message(chat, user, id)
    }

    /// Claims `id` for a new message, or tells what it is already used for.
    pub(crate) async fn claim(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        user: &UserId,
        id: &ClientMessageId,
    ) -> redis::RedisResult<Claim> {
        let mut conn = redis.get().await?;
        let read_model = self.keys.chat(chat);
        let marker = pending_marker();
        let held: Option<String> = self
            .claim
            .key(self.key(chat, user, id))
            .key(&read_model.client_ids)
            .key(&read_model.bodies)
            .arg(&marker)
            .arg(self.window.as_millis() as u64)
            .arg(chat_core::names::client_id_field(user, id))
            .invoke_async(&mut conn)
            .await?;
        Ok(match held {
            None => Claim::Won { marker },
            Some(value) if value == PENDING => Claim::Pending {
                marker: value,
                at_ms: None,
            },
            Some(value) if value.starts_with("pending:") => Claim::Pending {
                at_ms: pending_at(&value),
                marker: value,
            },
            Some(value) if value.starts_with(UNKNOWN) => Claim::Unknown {
                at_ms: value[UNKNOWN.len()..].parse().unwrap_or(0),
                marker: value,
            },
            Some(json) => match parse_kept(&json) {
                Ok(stored) => Claim::Stored(stored),
                Err(error) => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "stored message is not valid",
                        error.to_string(),
                    )));
                }
            },
        })
    }

    /// Records that the claimed id became `message`.
    pub(crate) async fn complete(
        &self,
        redis: &RedisConn,
        message: &Message,
        id: &ClientMessageId,
    ) -> redis::RedisResult<()> {
        let json = serde_json::to_string(&Stored::of(message)).unwrap_or_default();
        let key = self.key(&message.chat_id, &message.user_id, id);
        self.keep(redis, &key, &json, false).await
    }

    /// Sets `key` to `value` for the idempotency window (only if it exists,
    /// with `existing`).
    async fn keep(
        &self,
        redis: &RedisConn,
        key: &str,
        value: &str,
        existing: bool,
    ) -> redis::RedisResult<()> {
        let mut conn = redis.get().await?;
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(value)
            .arg("PX")
            .arg(self.window.as_millis() as u64);
        if existing {
            set.arg("XX");
        }
        set.query_async::<()>(&mut conn).await
    }

    /// Records that the claimed id's write failed without telling whether
    /// Kafka stored it: the claim stays (for the idempotency window) until
    /// the projector shows the message or [`Self::take_over`] finds the
    /// log applied to its end without it.
    pub(crate) async fn mark_unknown(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        user: &UserId,
        id: &ClientMessageId,
    ) -> redis::RedisResult<()> {
        let marker = format!("{UNKNOWN}{}", Utc::now().timestamp_millis());
        self.keep(redis, &self.key(chat, user, id), &marker, true)
            .await
    }

    /// Claims an id whose earlier write nobody can finish any more
    /// (`marker`, as the caller saw it: an unknown outcome, or a pending
    /// claim of a server that died), for a caller that found the chat's
    /// partition applied to the end of the log: the caller's own pending
    /// marker when it now holds the claim and writes the message.
    pub(crate) async fn take_over(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        user: &UserId,
        id: &ClientMessageId,
        marker: &str,
    ) -> redis::RedisResult<Option<String>> {
        let mut conn = redis.get().await?;
        let read_model = self.keys.chat(chat);
        let own = pending_marker();
        let taken: i64 = self
            .take_over
            .key(self.key(chat, user, id))
            .key(&read_model.client_ids)
            .arg(marker)
            .arg(self.window.as_millis() as u64)
            .arg(chat_core::names::client_id_field(user, id))
            .arg(&own)
            .invoke_async(&mut conn)
            .await?;
        Ok((taken == 1).then_some(own))
    }

    /// Gives a claimed id back after the write failed, so a retry can try
    /// again: removes `marker`, the caller's own.
    pub(crate) async fn release(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        user: &UserId,
        id: &ClientMessageId,
        marker: &str,
    ) -> redis::RedisResult<()> {
        let mut conn = redis.get().await?;
        self.release
            .key(self.key(chat, user, id))
            .arg(marker)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Message {
        Message {
            id: EventId::new(2, 41),
            chat_id: "lobby".parse().expect("chat"),
            user_id: "alice".parse().expect("user"),
            text: text.to_owned(),
            client_message_id: Some("c-1".parse().expect("id")),
            created_at: chat_core::event::now(),
        }
    }

    #[test]
    fn a_pending_marker_names_its_time_and_differs_from_the_next() {
        let before = Utc::now().timestamp_millis();
        let (a, b) = (pending_marker(), pending_marker());
        assert_ne!(a, b);
        let at = pending_at(&a).expect("a time");
        assert!(at >= before && at <= Utc::now().timestamp_millis(), "{a}");
        assert_eq!(pending_at(PENDING), None);
    }

    #[test]
    fn a_kept_id_costs_the_same_small_record_whatever_the_text() {
        let long = message(&"x".repeat(16_000));
        let kept = serde_json::to_string(&Stored::of(&long)).expect("json");
        assert!(kept.len() < 100, "{} bytes: {kept}", kept.len());
        let back = parse_kept(&kept).expect("parses");
        assert_eq!(back, Stored::of(&long));
        assert!(back.has_text(&long.text));
        assert!(!back.has_text("another text"));
        // A whole message, as the read model holds it, reads the same.
        let whole = serde_json::to_string(&long).expect("json");
        assert_eq!(parse_kept(&whole).expect("parses"), Stored::of(&long));
        // The hash is fixed: a value kept by one release is read by the next.
        assert_eq!(text_hash("hi"), "08ba5f07b55ec3da");
    }
}
