//! The one place that names every Kafka topic and Redis key.
//!
//! Every Redis key starts with a deployment prefix, so several deployments or
//! test runs can share one Redis, and keys of one chat share the hash tag
//! `{c:<chat id>}`, so they land on one Redis Cluster slot.

use crate::validate::{ChatId, ClientMessageId, UserId};

/// The topic that carries every chat event, keyed by chat id.
pub const CHAT_EVENTS_TOPIC: &str = "chat-events";

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

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
