//! Which reaction changes are written: only those that change something.
//!
//! An add of an emoji the user holds, or a remove of one the user does not
//! hold, changes nothing; written to the log, it would still reach every
//! stream as a change and move every member's live counts. So the decision
//! is taken in Redis, atomically with the message's other changes, before
//! the write: against the read model, and against the changes Kafka has
//! taken (or is taking) that the projector has not applied yet, which are
//! noted per message until it has. A change of the same user's same emoji
//! while another is in flight waits for that write, so changes of one
//! reaction reach the log in the order they were decided. An add of an
//! emoji new to the message counts the new emojis in flight against the
//! emoji cap, so two adds cannot both pass it.
//!
//! A write that failed without telling whether Kafka stored it leaves its
//! note in flight until librdkafka can no longer deliver it (the message
//! timeout); then the read model decides again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_core::event::{ReactionAction, ReactionChanged};
use chat_core::id::EventId;
use chat_core::names::{self, Keys};
use chat_core::redis_conn::RedisConn;
use redis::Script;

/// Decides a change and marks it in flight (see the script's header).
const DECIDE: &str = include_str!("lua/reaction_decide.lua");

/// Settles a marked change once its write's outcome is known.
const SETTLE: &str = include_str!("lua/reaction_settle.lua");

/// How long a message's notes are kept past the last change (they are
/// removed as the projector applies each change; this only bounds what a
/// server that died mid-write leaves).
const KEEP: Duration = Duration::from_secs(600);

/// What a change would do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The message is not in the read model.
    Missing,
    /// Another change of this user's emoji on the message is being written.
    Busy,
    /// It changes nothing: nothing is written.
    Same,
    /// It would give the message one distinct emoji more than allowed.
    Full,
    /// It changes the reaction: the caller writes it, then settles `Mark`.
    Write(Mark),
}

/// A change marked in flight, to be settled by its writer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    changes: String,
    marker: String,
    fields: Vec<String>,
    holds_after: bool,
}

/// The notes of reaction changes, in the read model's Redis.
#[derive(Debug)]
pub(crate) struct ReactionChanges {
    keys: Keys,
    max_emojis: u32,
    /// How long a write may still reach the log after its POST failed.
    in_flight: Duration,
    decide: Script,
    settle: Script,
}

impl ReactionChanges {
    /// Notes under `keys`, for messages holding at most `max_emojis`
    /// distinct emojis, a write in flight for at most `in_flight`.
    pub(crate) fn new(keys: Keys, max_emojis: u32, in_flight: Duration) -> Self {
        Self {
            keys,
            max_emojis,
            in_flight,
            decide: Script::new(DECIDE),
            settle: Script::new(SETTLE),
        }
    }

    /// Decides `change`, marking it in flight when it is to be written.
    pub(crate) async fn decide(
        &self,
        redis: &RedisConn,
        change: &ReactionChanged,
    ) -> redis::RedisResult<Decision> {
        let keys = self.keys.chat(&change.chat_id);
        let message = change.message_id.to_string();
        let changes = format!("{}{message}", keys.changes_prefix);
        let now = chat_core::hot::now_millis();
        let until = now + self.in_flight.as_millis() as i64;
        let marker = format!("p|{until}|{}", nonce());
        let add = change.action == ReactionAction::Add;
        let mut conn = redis.get().await?;
        let answer: String = self
            .decide
            .key(&keys.bodies)
            .key(format!("{}{message}", keys.counts_prefix))
            .key(format!("{}{message}", keys.users_prefix))
            .key(&keys.head)
            .key(&changes)
            .arg(&message)
            .arg(change.emoji.as_str())
            .arg(change.user_id.as_str())
            .arg(if add { "add" } else { "remove" })
            .arg(self.max_emojis)
            .arg(now)
            .arg(&marker)
            .arg(names::FIELD_SEPARATOR)
            .arg(KEEP.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        let field = format!(
            "{}{}{}",
            change.emoji.as_str(),
            names::FIELD_SEPARATOR,
            change.user_id.as_str()
        );
        let mark = |fields: Vec<String>| {
            Decision::Write(Mark {
                changes: changes.clone(),
                marker: marker.clone(),
                fields,
                holds_after: add,
            })
        };
        Ok(match answer.as_str() {
            "missing" => Decision::Missing,
            "busy" => Decision::Busy,
            "same" => Decision::Same,
            "full" => Decision::Full,
            "write+" => mark(vec![field, format!("+{}", change.emoji.as_str())]),
            _ => mark(vec![field]),
        })
    }

    /// Settles `mark`: its change is in the log at `stored`, or (`None`)
    /// its write failed and it is not.
    pub(crate) async fn settle(
        &self,
        redis: &RedisConn,
        mark: &Mark,
        stored: Option<EventId>,
    ) -> redis::RedisResult<()> {
        let record = stored.map_or_else(String::new, |id| {
            format!("a|{}|{}", id.offset, u8::from(mark.holds_after))
        });
        let mut conn = redis.get().await?;
        let mut call = self.settle.key(&mark.changes);
        call.arg(&mark.marker)
            .arg(record)
            .arg(KEEP.as_millis() as u64);
        for field in &mark.fields {
            call.arg(field);
        }
        call.invoke_async::<i64>(&mut conn).await.map(drop)
    }
}

/// A marker no other write uses: this process (its id and the time it
/// first marked one) and a counter.
fn nonce() -> String {
    static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos())
    });
    format!(
        "{}-{started}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
