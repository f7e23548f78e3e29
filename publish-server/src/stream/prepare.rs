//! A stream's start: every chat subscribed, and where each resumes.

use std::sync::Arc;

use chat_core::id::EventId;

use super::{Followed, Kind, LastSeen, Prepared, Stream, ToReplay};
use crate::hub::Hub;
use crate::position::Position;
use crate::replay::ResetReason;

/// The point after `offset` of `partition` to replay from; -1: from the
/// partition's start (a position taken before any event).
pub(super) fn after_offset(partition: i32, offset: i64) -> EventId {
    EventId {
        partition,
        offset: offset.max(-1),
    }
}

impl Stream {
    /// Subscribes every chat and finds where each starts: for a one-chat
    /// stream, its `Last-Event-ID`; for a many-chat stream, the stream's
    /// position for its partition (for a chat with a cursor, only on a
    /// reconnect of the same set), else its cursor; else live. Takes no
    /// time: the replays come in `stream`.
    pub(super) fn prepare(
        &mut self,
        mut hubs: Vec<(Arc<Hub>, Option<EventId>)>,
        last_seen: LastSeen,
    ) -> Prepared {
        let state = self.state.clone();
        let hubs_of_server = &state.hubs;
        let partitions = hubs_of_server.partitions();
        let mut malformed = false;
        let mut given = None;
        match last_seen {
            LastSeen::Position(position) => {
                if position
                    .iter()
                    .all(|(p, offset)| hubs_of_server.plausible(p, offset) == Some(true))
                {
                    given = Some(position);
                } else {
                    malformed = true;
                }
            }
            // A one-chat stream's id is its chat's cursor; one that cannot
            // be in the chat's log is malformed.
            LastSeen::Id(id) => match hubs.as_mut_slice() {
                [(hub, cursor)] if hubs_of_server.may_hold(hub.chat(), id) => *cursor = Some(id),
                _ => malformed = true,
            },
            LastSeen::Malformed => malformed = true,
            LastSeen::Nothing => {}
        }
        let set = match self.kind {
            Kind::OneChat => None,
            Kind::ManyChats => Some(crate::position::chat_set(
                hubs.iter().map(|(hub, _)| hub.chat().as_str()),
            )),
        };
        if let Some(set) = set {
            self.position = Position::of_set(set);
        }
        // A reconnect of the same stream: the position covers every chat.
        // A changed set: a chat given a cursor is new to the stream and
        // starts from it.
        let same_set = given.as_ref().is_some_and(|given| given.set() == set);
        let mut prepared = Prepared::default();
        for (index, (hub, cursor)) in hubs.into_iter().enumerate() {
            let cursor = cursor.filter(|c| hubs_of_server.may_hold(hub.chat(), *c));
            // Before the reader started, a one-chat stream's partition is
            // the one its id names.
            let partition = match partitions {
                Some(partitions) => chat_core::names::partition_of(hub.chat().as_str(), partitions),
                None => cursor.map_or(0, |c| c.partition),
            };
            let covered = given.as_ref().and_then(|given| given.get(partition));
            let from = match cursor {
                Some(cursor) if !same_set => Some(cursor.offset),
                _ => covered.or(cursor.map(|c| c.offset)),
            };
            let (live, start_at) = match from {
                Some(after) => {
                    let start = hub.start(Some(partition));
                    prepared.replays.push(ToReplay {
                        index,
                        recent: start.recent,
                        covers_after: start.covers_after,
                        after,
                    });
                    (start.live, after)
                }
                None => {
                    let (start, at) = hubs_of_server.start_live(&hub, partition);
                    if malformed {
                        prepared.resets.push((index, ResetReason::Malformed));
                    }
                    (start.live, at)
                }
            };
            // The position starts where the first chat of each partition
            // does.
            if set.is_some() && self.position.get(partition).is_none_or(|at| start_at < at) {
                self.position.put(partition, start_at);
            }
            self.chats.push(Followed {
                hub,
                live,
                last_sent: start_at,
                partition,
            });
        }
        prepared
    }
}
