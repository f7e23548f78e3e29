//! Remembers which message each `clientMessageId` became, so a retried POST
//! answers with the original message and writes nothing new.
//!
//! The first request with a given id claims it in Redis with a short-lived
//! `pending` marker, writes to Kafka, then stores the message for the
//! idempotency window. A concurrent retry waits for the claim to resolve.

use std::time::Duration;

use chat_core::event::Message;
use chat_core::names::Keys;
use chat_core::validate::{ChatId, ClientMessageId, UserId};
use redis::Script;

use chat_core::redis_conn::RedisConn;

const PENDING: &str = "pending";

/// Answers the stored message if the key holds one, else the message the
/// read model holds for the id (KEYS[2] client ids, KEYS[3] bodies; ARGV[3]
/// the field): a server that died between its write and `complete` left a
/// claim that is pending or lapsed, and the projector knows what the write
/// became. Else answers the pending marker, or sets it and answers nothing.
const CLAIM: &str = include_str!("lua/claim.lua");

/// Removes the pending marker, never a stored message.
const RELEASE: &str = include_str!("lua/release.lua");

/// What a claim on a `clientMessageId` found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// Nobody used the id: the caller writes the message, then `complete`s.
    Won,
    /// Another request is writing this message right now.
    Pending,
    /// The id was used for this message.
    Stored(Message),
}

/// The store of `clientMessageId`s, in Redis.
#[derive(Debug)]
pub(crate) struct ClientMessages {
    keys: Keys,
    /// How long a stored id answers retries.
    window: Duration,
    /// How long a claim may stay pending: longer than any write can take.
    pending_for: Duration,
    claim: Script,
    release: Script,
}

impl ClientMessages {
    /// A store that remembers ids for `window`, with claims that lapse after
    /// `pending_for` (should a server die mid-write).
    pub(crate) fn new(keys: Keys, window: Duration, pending_for: Duration) -> Self {
        Self {
            keys,
            window,
            pending_for,
            claim: Script::new(CLAIM),
            release: Script::new(RELEASE),
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
        let held: Option<String> = self
            .claim
            .key(self.key(chat, user, id))
            .key(&read_model.client_ids)
            .key(&read_model.bodies)
            .arg(PENDING)
            .arg(self.pending_for.as_millis() as u64)
            .arg(chat_core::names::client_id_field(user, id))
            .invoke_async(&mut conn)
            .await?;
        Ok(match held {
            None => Claim::Won,
            Some(value) if value == PENDING => Claim::Pending,
            Some(json) => match serde_json::from_str(&json) {
                Ok(message) => Claim::Stored(message),
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
        let mut conn = redis.get().await?;
        let json = serde_json::to_string(message).unwrap_or_default();
        redis::cmd("SET")
            .arg(self.key(&message.chat_id, &message.user_id, id))
            .arg(json)
            .arg("PX")
            .arg(self.window.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await
    }

    /// Gives a claimed id back after the write failed, so a retry can try again.
    pub(crate) async fn release(
        &self,
        redis: &RedisConn,
        chat: &ChatId,
        user: &UserId,
        id: &ClientMessageId,
    ) -> redis::RedisResult<()> {
        let mut conn = redis.get().await?;
        self.release
            .key(self.key(chat, user, id))
            .arg(PENDING)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
    }
}
