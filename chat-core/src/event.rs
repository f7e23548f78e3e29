//! The events written to Kafka and the views the API answers with.
//!
//! A Kafka record's key is the chat id and its value is one [`ChatEvent`] as
//! JSON, tagged by `type`. An event carries no id of its own: its id is its
//! position in the log ([`EventId`]), known once the broker acknowledged it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::id::EventId;
use crate::validate::{ChatId, ClientMessageId, Emoji, UserId};

/// One event of the `chat-events` topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ChatEvent {
    /// A user posted a message.
    Message(MessagePosted),
    /// A user added or removed a reaction on a message.
    Reaction(ReactionChanged),
}

impl ChatEvent {
    /// The chat the event belongs to (also the record's key).
    pub fn chat_id(&self) -> &ChatId {
        match self {
            ChatEvent::Message(m) => &m.chat_id,
            ChatEvent::Reaction(r) => &r.chat_id,
        }
    }

    /// The event of a Kafka record, from its key and value. A record
    /// without a value, with a value that is not an event, or with a key
    /// other than the event's chat id is malformed: the reason comes back.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, DecodeError> {
        let value = value.ok_or(DecodeError::NoValue)?;
        let event: Self = serde_json::from_slice(value).map_err(DecodeError::NotAnEvent)?;
        if let Some(key) = key
            && key != event.chat_id().as_str().as_bytes()
        {
            return Err(DecodeError::KeyMismatch(
                String::from_utf8_lossy(key).into_owned(),
            ));
        }
        Ok(event)
    }

    /// The event as the JSON value of a Kafka record.
    pub fn to_json(&self) -> Vec<u8> {
        // An event is made of strings and a timestamp only: it always encodes.
        serde_json::to_vec(self).unwrap_or_else(|e| unreachable!("event encodes: {e}"))
    }
}

/// Why a Kafka record is not a chat event (it is skipped, counted and
/// logged).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    NoValue,
    #[error("{0}")]
    NotAnEvent(#[source] serde_json::Error),
    #[error("key {0:?} is not the event's chat id")]
    KeyMismatch(String),
}

/// The body of a `message` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagePosted {
    pub chat_id: ChatId,
    pub user_id: UserId,
    pub text: String,
    /// The client's own id of the message, kept so the log alone can tell a
    /// retried post from a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<ClientMessageId>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// Whether a reaction was added or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReactionAction {
    Add,
    Remove,
}

/// The body of a `reaction` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionChanged {
    pub chat_id: ChatId,
    /// The message the reaction is on.
    pub message_id: EventId,
    pub user_id: UserId,
    pub emoji: Emoji,
    pub action: ReactionAction,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A stored message, as the API answers with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: EventId,
    pub chat_id: ChatId,
    pub user_id: UserId,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<ClientMessageId>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// The message that `event` became once stored at `id`.
    pub fn stored(id: EventId, event: MessagePosted) -> Self {
        Self {
            id,
            chat_id: event.chat_id,
            user_id: event.user_id,
            text: event.text,
            client_message_id: event.client_message_id,
            created_at: event.created_at,
        }
    }
}

/// A stored reaction change, as the API answers with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    pub id: EventId,
    #[serde(flatten)]
    pub change: ReactionChanged,
}

/// Timestamps as RFC 3339 in UTC with millisecond precision
/// (`2026-11-21T09:30:00.123Z`).
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, SubsecRound as _, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        // Cut to the millisecond the wire format keeps, so a decoded event
        // is what every later encoding of it (frame, fetch body) says.
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc).trunc_subsecs(3))
            .map_err(serde::de::Error::custom)
    }
}

/// The current time, cut to the millisecond the wire format keeps, so an
/// event compares equal to itself after a round trip.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::parse_from_rfc3339(&now.to_rfc3339_opts(SecondsFormat::Millis, true))
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn created_at_is_kept_to_the_millisecond() {
        let json = r#"{"type":"message","chatId":"lobby","userId":"alice","text":"hi","createdAt":"2026-11-22T10:00:00.123456789Z"}"#;
        let event = ChatEvent::decode(None, Some(json.as_bytes())).expect("decodes");
        assert_eq!(
            ChatEvent::decode(None, Some(&event.to_json())).expect("decodes again"),
            event
        );
        let again: serde_json::Value = serde_json::from_slice(&event.to_json()).expect("JSON");
        assert_eq!(again["createdAt"], "2026-11-22T10:00:00.123Z");
    }

    use super::*;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T09:30:00.123Z")
            .expect("valid time")
            .with_timezone(&Utc)
    }

    /// Alice's `text` in chat lobby, posted at 2026-11-21T09:30:00.123Z.
    pub(crate) fn alice_in_lobby(text: &str) -> ChatEvent {
        ChatEvent::Message(MessagePosted {
            chat_id: "lobby".parse().expect("chat"),
            user_id: "alice".parse().expect("user"),
            text: text.into(),
            client_message_id: None,
            created_at: at(),
        })
    }

    #[test]
    fn message_event_has_the_documented_envelope() {
        let event = alice_in_lobby("hi");
        let value: serde_json::Value = serde_json::from_slice(&event.to_json()).expect("json");
        assert_eq!(
            value,
            json!({"type": "message", "chatId": "lobby", "userId": "alice", "text": "hi",
                   "createdAt": "2026-11-21T09:30:00.123Z"})
        );
        let back: ChatEvent = serde_json::from_value(value).expect("decodes");
        assert_eq!(back, event);
    }

    #[test]
    fn reaction_event_round_trips() {
        let event = ChatEvent::Reaction(ReactionChanged {
            chat_id: "lobby".parse().expect("chat"),
            message_id: EventId::new(1, 7),
            user_id: "bob".parse().expect("user"),
            emoji: "👍".parse().expect("emoji"),
            action: ReactionAction::Remove,
            created_at: at(),
        });
        let value: serde_json::Value = serde_json::from_slice(&event.to_json()).expect("json");
        assert_eq!(
            value,
            json!({"type": "reaction", "chatId": "lobby", "messageId": "1-0000000000000007",
                   "userId": "bob", "emoji": "👍", "action": "remove",
                   "createdAt": "2026-11-21T09:30:00.123Z"})
        );
        assert_eq!(
            serde_json::from_value::<ChatEvent>(value).expect("decodes"),
            event
        );
    }

    #[test]
    fn events_with_invalid_fields_do_not_decode() {
        let bad = json!({"type": "message", "chatId": "no spaces", "userId": "a", "text": "x",
                         "createdAt": "2026-11-21T09:30:00Z"});
        assert!(serde_json::from_value::<ChatEvent>(bad).is_err());
        let unknown = json!({"type": "typing", "chatId": "lobby"});
        assert!(serde_json::from_value::<ChatEvent>(unknown).is_err());
    }

    #[test]
    fn now_survives_the_wire_format() {
        let t = now();
        let s = serde_json::to_value(Message {
            id: EventId::new(0, 0),
            chat_id: "c".parse().expect("chat"),
            user_id: "u".parse().expect("user"),
            text: "t".into(),
            client_message_id: None,
            created_at: t,
        })
        .expect("encodes");
        let back: Message = serde_json::from_value(s).expect("decodes");
        assert_eq!(back.created_at, t);
    }
}
