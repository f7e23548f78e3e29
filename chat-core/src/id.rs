//! Event ids: the position of an event in the Kafka log.
//!
//! A chat is one Kafka key, so all of its events sit in one partition, in the
//! order the broker appended them. An id is that partition and offset,
//! written `<partition>-<offset as 16 lowercase hex digits>` (for example
//! `2-000000000000002a`; a partition has at most 9 digits, more than Kafka
//! ever gives a topic). Within a chat the partition part is constant and the
//! offset part has a fixed width, so ids increase both as numbers and as
//! strings. Messages, reactions, the fetch API's cursor and the SSE `id:`
//! all use this one id space.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::Invalid;

/// The position of one event in the `chat-events` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId {
    /// The topic partition the event's chat maps to.
    pub partition: i32,
    /// The event's offset in that partition.
    pub offset: i64,
}

impl EventId {
    /// The id of the event at `offset` of `partition`.
    ///
    /// # Panics
    /// When either is negative: Kafka never gives such a position.
    pub fn new(partition: i32, offset: i64) -> Self {
        assert!(partition >= 0 && offset >= 0, "negative Kafka position");
        Self { partition, offset }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016x}", self.partition, self.offset)
    }
}

impl FromStr for EventId {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        let invalid = || Invalid {
            field: "messageId",
            reason: format!("{s:?} is not a message id (expected e.g. 0-000000000000002a)"),
        };
        let (partition, offset) = s.split_once('-').ok_or_else(invalid)?;
        let digits_only = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(partition)
            || partition.len() > 9
            || (partition.len() > 1 && partition.starts_with('0'))
        {
            return Err(invalid());
        }
        if offset.len() != 16
            || !offset
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid());
        }
        let partition: i32 = partition.parse().map_err(|_| invalid())?;
        let offset = i64::from_str_radix(offset, 16).map_err(|_| invalid())?;
        Ok(Self { partition, offset })
    }
}

impl TryFrom<String> for EventId {
    type Error = Invalid;

    fn try_from(s: String) -> Result<Self, Invalid> {
        s.parse()
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        for (p, o) in [(0, 0), (2, 42), (11, i64::MAX), (999_999_999, 1)] {
            let id = EventId::new(p, o);
            assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        }
        assert_eq!(EventId::new(2, 42).to_string(), "2-000000000000002a");
    }

    #[test]
    fn ids_of_one_partition_sort_as_strings_like_their_offsets() {
        let mut offsets = [0, 9, 10, 15, 16, 255, 256, 1 << 40, i64::MAX];
        let mut texts: Vec<String> = offsets
            .iter()
            .map(|&o| EventId::new(3, o).to_string())
            .collect();
        texts.sort();
        offsets.sort();
        let parsed: Vec<i64> = texts
            .iter()
            .map(|t| t.parse::<EventId>().map(|id| id.offset).expect("valid"))
            .collect();
        assert_eq!(parsed, offsets);
    }

    /// The id pattern of the OpenAPI document accepts exactly what parses.
    #[test]
    fn the_documented_pattern_is_the_check() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../chat-server/openapi.json")).expect("JSON");
        let pattern = doc["components"]["schemas"]["EventId"]["pattern"]
            .as_str()
            .expect("pattern");
        assert_eq!(pattern, "^(0|[1-9][0-9]{0,8})-[0-7][0-9a-f]{15}$");
        assert!("999999999-7fffffffffffffff".parse::<EventId>().is_ok());
        assert!("1000000000-0000000000000000".parse::<EventId>().is_err());
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "42",
            "-000000000000002a",
            "0-2a",
            "0-000000000000002A",
            "01-000000000000002a",
            "0-000000000000002g",
            "0-8000000000000000",
            "99999999999-0000000000000000",
            "1000000000-0000000000000000",
            "184005075-b109b0b9cce046b9",
            "0-000000000000002a-",
            "x-000000000000002a",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} should be refused");
        }
    }
}
