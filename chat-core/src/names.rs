//! The one place that names every Kafka topic and Redis key.
//!
//! Every Redis key starts with a deployment prefix, so several deployments or
//! test runs can share one Redis, and keys of one chat share the hash tag
//! `{c:<chat id>}`, so they land on one Redis Cluster slot.

use crate::validate::{ChatId, ClientMessageId, UserId};

/// The topic that carries every chat event, keyed by chat id.
pub const CHAT_EVENTS_TOPIC: &str = "chat-events";

/// The partition of `chat` among `partitions`: CRC-32 (IEEE) of the chat
/// id modulo the partition count, as the producer's `consistent_random`
/// partitioner places a record keyed by the chat id.
pub fn partition_of(chat: &str, partitions: usize) -> i32 {
    (crc32(chat.as_bytes()) as usize % partitions.max(1)) as i32
}

/// CRC-32 (IEEE 802.3, the checksum of zip and of librdkafka's
/// partitioners), bit by bit: it runs on short keys.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc: u32 = 0xffff_ffff;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The default prefix of every Redis key.
pub const DEFAULT_KEY_PREFIX: &str = "chat";

/// Builds Redis key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (for example `chat` or a per-test prefix).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The read model of one chat.
    pub fn chat(&self, chat: &ChatId) -> ChatKeys {
        let base = format!("{}:{{c:{}}}", self.prefix, chat.as_str());
        ChatKeys {
            messages: format!("{base}:messages"),
            bodies: format!("{base}:bodies"),
            client_ids: format!("{base}:client-ids"),
            head: format!("{base}:head"),
            reactions: format!("{base}:reactions"),
            events: format!("{base}:events"),
            counts_prefix: format!("{base}:counts:"),
            users_prefix: format!("{base}:users:"),
            changes_prefix: format!("{base}:changes:"),
        }
    }

    /// The offset up to which the projector has applied a partition of
    /// `topic` to the read model.
    pub fn projected(&self, topic: &str, partition: i32) -> String {
        format!("{}:projected:{topic}:{partition}", self.prefix)
    }

    /// Sorted set of chat ids scored by the number of fetches of that chat
    /// during the wall-clock second `second` (Unix time), summed over
    /// every instance, for the chats of one shard (`fetch_count_shard`).
    /// Scored, so the scheduler reads only the chats at or over the
    /// threshold, however many were fetched. Each shard is a hash tag of
    /// its own, so on a Redis Cluster every chat-server's flushes spread
    /// over the nodes instead of all landing on one.
    pub fn fetch_counts(&self, second: i64, shard: u32) -> String {
        format!("{}:{{hot:{shard}}}:fetches:{second}", self.prefix)
    }

    /// The `hotchat` flags: a sorted set of chat ids, each scored by the
    /// time (Unix milliseconds) its flag expires, its TTL. One key, so every
    /// server resyncs all flags in one read; in the `{hot}` slot with the
    /// scheduler's leader lock, so the tick's script touches one slot.
    pub fn hot_chats(&self) -> String {
        format!("{}:{{hot}}:hotchats", self.prefix)
    }

    /// Pub/sub channel on which the scheduler announces flag changes.
    pub fn hot_changes_channel(&self) -> String {
        format!("{}:hotchat-changes", self.prefix)
    }

    /// The throttle state (GCRA theoretical arrival time) of a hot chat.
    pub fn throttle(&self, chat: &ChatId) -> String {
        format!("{}:{{c:{}}}:throttle", self.prefix, chat.as_str())
    }

    /// The scheduler's leader lock (in the `{hot}` slot, see `hot_chats`).
    pub fn scheduler_leader(&self) -> String {
        format!("{}:{{hot}}:scheduler:leader", self.prefix)
    }

    /// Remembers the message a user posted under a `clientMessageId`, so a
    /// retried POST answers with the original message.
    pub fn client_message(&self, chat: &ChatId, user: &UserId, cmid: &ClientMessageId) -> String {
        format!(
            "{}:{{c:{}}}:cmid:{}:{}",
            self.prefix,
            chat.as_str(),
            user.as_str(),
            cmid.as_str()
        )
    }
}

/// The fetch counts of a second are spread over this many keys (shards),
/// each chat always in the same one.
pub const FETCH_COUNT_SHARDS: u32 = 16;

/// The shard of `chat`'s fetch counts.
pub fn fetch_count_shard(chat: &str) -> u32 {
    crc32(chat.as_bytes()) % FETCH_COUNT_SHARDS
}

/// Joins the two parts of a hash field that names a pair: `userId` and
/// `clientMessageId` in a chat's client ids, `emoji` and `userId` in a
/// message's reacting users. User ids, client message ids and emojis hold
/// no line break. The Lua scripts take it as an argument: it is written
/// only here.
pub const FIELD_SEPARATOR: &str = "\n";

/// The field of `client_ids` for a user's `clientMessageId`.
pub fn client_id_field(user: &UserId, cmid: &ClientMessageId) -> String {
    format!("{}{FIELD_SEPARATOR}{}", user.as_str(), cmid.as_str())
}

/// The Redis keys of one chat's read model. They share one hash tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatKeys {
    /// Sorted set of message ids, scored by Kafka offset: the chat's order.
    pub messages: String,
    /// Hash of message id to the stored message's JSON.
    pub bodies: String,
    /// Hash of `userId\nclientMessageId` to the message id it became, so a
    /// message written twice (a retry after a lost acknowledgement) shows once.
    pub client_ids: String,
    /// Hash with the id and offset of the last event of the chat applied.
    pub head: String,
    /// Hash of message id to its counts as a JSON object (`{"👍":2}`), kept
    /// beside `counts_prefix` so a page of counts is one read.
    pub reactions: String,
    /// Sorted set of the chat's latest events as SSE frames, scored by
    /// offset: what publish-server replays to a client that reconnects.
    pub events: String,
    /// Followed by a message id: hash of emoji to count.
    pub counts_prefix: String,
    /// Followed by a message id: hash whose fields are `emoji\nuserId`, the
    /// users holding each emoji.
    pub users_prefix: String,
    /// Followed by a message id: hash of the reaction changes chat-server
    /// wrote (or is writing) that the read model does not show yet, so
    /// that a change that changes nothing is never written.
    pub changes_prefix: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_s_partition_is_crc32_of_its_id() {
        // CRC-32 check value of "123456789" is 0xcbf43926.
        assert_eq!(
            partition_of("123456789", 1 << 16),
            (0xcbf4_3926u32 % (1 << 16)) as i32
        );
        assert_eq!(partition_of("lobby", 1), 0);
        assert!((0..3).contains(&partition_of("lobby", 3)));
    }

    #[test]
    fn keys_of_one_chat_share_a_hash_tag_and_the_prefix() {
        let keys = Keys::new("t1");
        let chat: ChatId = "lobby".parse().expect("valid chat id");
        let user: UserId = "alice".parse().expect("valid user id");
        let cmid: ClientMessageId = "m-1".parse().expect("valid client message id");
        assert_eq!(
            keys.client_message(&chat, &user, &cmid),
            "t1:{c:lobby}:cmid:alice:m-1"
        );
        assert_eq!(keys.throttle(&chat), "t1:{c:lobby}:throttle");
        let read_model = keys.chat(&chat);
        for key in [
            &read_model.messages,
            &read_model.bodies,
            &read_model.client_ids,
            &read_model.head,
            &read_model.reactions,
            &read_model.events,
            &read_model.counts_prefix,
            &read_model.users_prefix,
        ] {
            assert!(key.starts_with("t1:{c:lobby}:"), "{key}");
        }
    }

    /// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the
    /// first non-empty `{...}`), else of the whole key, mod 16384.
    fn slot(key: &str) -> u16 {
        let bytes = key.as_bytes();
        let tagged = key
            .find('{')
            .and_then(|open| {
                let close = key[open + 1..].find('}')? + open + 1;
                (close > open + 1).then(|| &bytes[open + 1..close])
            })
            .unwrap_or(bytes);
        let mut crc: u16 = 0;
        for &byte in tagged {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % 16384
    }

    /// Every Lua script and pipeline touches one slot: each one's keys,
    /// those it names and those it builds, share a hash tag.
    #[test]
    fn each_script_touches_one_cluster_slot() {
        // The reference values of the Redis Cluster specification.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        let keys = Keys::new("chat");
        let chat: ChatId = "lobby".parse().expect("chat");
        let user: UserId = "alice".parse().expect("user");
        let cmid: ClientMessageId = "m-1".parse().expect("id");
        let read_model = keys.chat(&chat);
        // apply, fetch, replay, counts, lookup, claim, release, gcra.
        let chat_slot = slot(&read_model.messages);
        for key in [
            read_model.bodies.clone(),
            read_model.client_ids.clone(),
            read_model.head.clone(),
            read_model.reactions.clone(),
            read_model.events.clone(),
            format!("{}2-000000000000002a", read_model.counts_prefix),
            format!("{}2-000000000000002a", read_model.users_prefix),
            keys.client_message(&chat, &user, &cmid),
            keys.throttle(&chat),
        ] {
            assert_eq!(slot(&key), chat_slot, "{key}");
        }
        // The scheduler's lock, unlock and tick.
        assert_eq!(slot(&keys.scheduler_leader()), slot(&keys.hot_chats()));
        // The fetch counts of a second spread over the slots, over each
        // third of them (a node each in a cluster of three masters).
        let shards: std::collections::BTreeSet<u16> = (0..FETCH_COUNT_SHARDS)
            .map(|shard| slot(&keys.fetch_counts(1_700_000_000, shard)))
            .collect();
        assert_eq!(shards.len(), FETCH_COUNT_SHARDS as usize, "{shards:?}");
        for third in 0..3 {
            let (low, high) = (third * 5462, (third + 1) * 5462);
            assert!(shards.iter().any(|s| (low..high).contains(s)), "{shards:?}");
        }
        // Chats spread over the shards.
        let used: std::collections::BTreeSet<u32> = (0..200)
            .map(|n| fetch_count_shard(&format!("chat-{n}")))
            .collect();
        assert_eq!(used.len(), FETCH_COUNT_SHARDS as usize);
    }
}
