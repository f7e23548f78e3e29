//! A many-chat stream's position: per partition of its chats, the offset of
//! the last event it sent. A chat lives in one partition, and a stream
//! sends each partition's events in log order, so one position resumes
//! every chat of the stream: a chat's events after its partition's offset
//! are the ones not sent yet.
//!
//! As text (an SSE `id:`): `partition:next` pairs, partition in decimal
//! and `next` in lower-case hex, the offset after the last event (0 before
//! any), joined by `.`, partitions ascending, then
//! `~` and the stream's chat set (CRC-32 of its sorted chat ids, 8 hex
//! digits), for example `0:1a.2:3f0~0c4f1e2a`. The set tells a reconnect
//! of the same stream (the position covers every chat) from one with a
//! changed set (chats new to it start from their own cursor). It never
//! looks like a one-chat event id (`2-0000000000000012`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Per partition, the offset of the last event sent (or the point the
/// stream started from).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Position {
    /// (partition, offset), partitions ascending: a stream names a few.
    offsets: Vec<(i32, i64)>,
    /// The chat set of the stream the position is of.
    set: Option<u32>,
}

/// Most partitions a position names.
const MAX_PARTITIONS: usize = 1024;

/// The CRC-32 of `chats`, sorted and joined by `,`: a stream's chat set.
pub(crate) fn chat_set<'a>(chats: impl IntoIterator<Item = &'a str>) -> u32 {
    let mut chats: Vec<&str> = chats.into_iter().collect();
    chats.sort_unstable();
    chat_core::names::crc32(chats.join(",").as_bytes())
}

impl Position {
    /// The position of a stream of the chat set `set`, at nothing yet.
    pub(crate) fn of_set(set: u32) -> Self {
        Self {
            offsets: Vec::new(),
            set: Some(set),
        }
    }

    /// The chat set the position is of, when it says.
    pub(crate) fn set(&self) -> Option<u32> {
        self.set
    }

    /// The offset of `partition`, if the position names it.
    pub(crate) fn get(&self, partition: i32) -> Option<i64> {
        self.offsets
            .binary_search_by_key(&partition, |(p, _)| *p)
            .ok()
            .map(|i| self.offsets[i].1)
    }

    /// Puts `partition` at `offset`.
    pub(crate) fn put(&mut self, partition: i32, offset: i64) {
        match self.offsets.binary_search_by_key(&partition, |(p, _)| *p) {
            Ok(i) => self.offsets[i].1 = offset,
            Err(i) => self.offsets.insert(i, (partition, offset)),
        }
    }

    /// Moves `partition` to `offset` unless it is past it already.
    pub(crate) fn advance(&mut self, partition: i32, offset: i64) {
        match self.offsets.binary_search_by_key(&partition, |(p, _)| *p) {
            Ok(i) => self.offsets[i].1 = self.offsets[i].1.max(offset),
            Err(i) => self.offsets.insert(i, (partition, offset)),
        }
    }

    /// Every (partition, offset) pair.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.offsets.iter().copied()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (partition, offset)) in self.offsets.iter().enumerate() {
            if n > 0 {
                f.write_str(".")?;
            }
            // The next offset: never negative, even before any event.
            write!(f, "{partition}:{:x}", offset.saturating_add(1).max(0))?;
        }
        match self.set {
            Some(set) => write!(f, "~{set:08x}"),
            None => Ok(()),
        }
    }
}

/// Why a text is not a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream position: {0}")]
pub(crate) struct Malformed(&'static str);

impl FromStr for Position {
    type Err = Malformed;

    fn from_str(text: &str) -> Result<Self, Malformed> {
        let mut map = BTreeMap::new();
        // Read into a map (duplicates refused), kept as a sorted list.
        let (text, set) = match text.split_once('~') {
            Some((offsets, set)) => {
                let valid = set.len() == 8
                    && set
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
                let set = u32::from_str_radix(set, 16)
                    .ok()
                    .filter(|_| valid)
                    .ok_or(Malformed("the chat set is 8 hex digits"))?;
                (offsets, Some(set))
            }
            None => (text, None),
        };
        if text.is_empty() {
            return Err(Malformed("empty"));
        }
        for pair in text.split('.') {
            if map.len() == MAX_PARTITIONS {
                return Err(Malformed("too many partitions"));
            }
            let (partition, offset) = pair.split_once(':').ok_or(Malformed("a pair has no ':'"))?;
            let digits = |s: &str, radix| {
                !s.is_empty() && s.len() <= 16 && s.chars().all(|c| c.is_digit(radix))
            };
            if !digits(partition, 10)
                || !digits(offset, 16)
                || offset.chars().any(|c| c.is_ascii_uppercase())
            {
                return Err(Malformed("partition:offset in decimal and hex"));
            }
            let partition: i32 = partition
                .parse()
                .map_err(|_| Malformed("partition too large"))?;
            let next =
                i64::from_str_radix(offset, 16).map_err(|_| Malformed("offset too large"))?;
            if map.insert(partition, next - 1).is_some() {
                return Err(Malformed("a partition named twice"));
            }
        }
        Ok(Self {
            offsets: map.into_iter().collect(),
            set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let mut position = Position::of_set(0x0c4f_1e2a);
        position.advance(2, 0x3f0);
        position.advance(0, 26);
        position.advance(2, 5);
        assert_eq!(position.to_string(), "0:1b.2:3f1~0c4f1e2a");
        assert_eq!("0:1b.2:3f1~0c4f1e2a".parse::<Position>(), Ok(position));
        let mut fresh = Position::of_set(1);
        fresh.advance(1, -1);
        assert_eq!(fresh.to_string(), "1:0~00000001", "before any event");
        assert_eq!(
            fresh.to_string().parse::<Position>().map(|p| p.get(1)),
            Ok(Some(-1))
        );
        assert_eq!("0:1a".parse::<Position>().map(|p| p.set()), Ok(None));
    }

    #[test]
    fn a_chat_set_is_the_same_in_any_order() {
        assert_eq!(chat_set(["b", "a", "c"]), chat_set(["c", "b", "a"]));
        assert_ne!(chat_set(["a", "b"]), chat_set(["a", "bc"]));
        assert_ne!(chat_set(["ab"]), chat_set(["a", "b"]));
        // CRC-32 of "123456789".
        assert_eq!(chat_set(["123456789"]), 0xcbf4_3926);
    }

    #[test]
    fn refuses_what_is_not_a_position() {
        for text in [
            "",
            "2-0000000000000012",
            "0:",
            ":1",
            "0:1a.0:2",
            "x:1",
            "0:1G",
            "0:1A",
            "0:1..1:2",
            "0:1~",
            "0:1~123",
            "0:1~0C4F1E2A",
            "~0c4f1e2a",
        ] {
            assert!(text.parse::<Position>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn is_short() {
        let mut three = Position::of_set(1);
        let mut many = Position::of_set(1);
        for p in 0..64 {
            if p < 3 {
                three.advance(p, 1_000_000);
            }
            many.advance(p, 1_000_000);
        }
        // An offset of a million is 5 hex digits; the set 9 characters.
        assert_eq!(three.to_string().len(), 3 * 7 + 2 + 9);
        assert_eq!(many.to_string().len(), 10 * 7 + 54 * 8 + 63 + 9);
    }
}
