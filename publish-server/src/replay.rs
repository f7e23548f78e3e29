//! Resuming a chat after a point of its log: from the hub's recent frames
//! in memory, else from the replay log in Redis, else a `reset` that says
//! why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_core::id::EventId;

use crate::AppState;
use crate::hub::{Frame, Hub, Start};

/// Why a chat cannot be resumed: the `reason` of its `reset` event, and
/// the label of `publish_resets_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetReason {
    /// The client's `Last-Event-ID` cannot be of this log.
    Malformed,
    /// The replay log could not be read.
    ReplayUnavailable,
    /// The point is older than the replay log keeps.
    TooOld,
    /// More events were missed than a replay sends.
    TooManyEvents,
    /// More bytes were missed than a replay sends.
    TooManyBytes,
    /// The projector has not reached the point where memory takes over.
    NotAvailableYet,
}

impl ResetReason {
    /// The text clients read.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed Last-Event-ID",
            Self::ReplayUnavailable => "replay unavailable",
            Self::TooOld => "too old to replay",
            Self::TooManyEvents => "too many events missed",
            Self::TooManyBytes => "too many bytes missed",
            Self::NotAvailableYet => "replay not available yet",
        }
    }

    /// Counts one reset for this reason (`publish_resets_total`).
    pub(crate) fn count(self) {
        metrics::counter!("publish_resets_total", "reason" => self.as_str()).increment(1);
    }
}

/// What a hub held when a subscriber's live receiver was made: its recent
/// frames and how far back they reach (from `Start`).
pub(crate) struct Memory<'a> {
    pub(crate) recent: &'a [Arc<Frame>],
    pub(crate) covers_after: Option<i64>,
}

impl Start {
    /// The memory part of a start, for `replay`.
    pub(crate) fn memory(&self) -> Memory<'_> {
        Memory {
            recent: &self.recent,
            covers_after: self.covers_after,
        }
    }
}

/// What a resume after a position finds for one chat.
pub(crate) enum Replayed {
    /// The chat's frames of the position's partition, oldest first; some
    /// may be at or before the position (the caller skips those).
    Frames(Vec<Arc<Frame>>),
    /// They cannot be had: the client gets a `reset` saying why.
    Reset(ResetReason),
}

/// The frames of `hub`'s chat after `after`: from memory (`start`, taken
/// with the live receiver), else from the replay log in Redis once the
/// projector has reached the point from which memory takes over.
pub(crate) async fn replay(
    state: &AppState,
    hub: &Hub,
    start: &Memory<'_>,
    after: EventId,
) -> Replayed {
    let recent = || {
        start
            .recent
            .iter()
            .filter(|frame| frame.id.partition == after.partition)
            .cloned()
    };
    if start
        .covers_after
        .is_some_and(|covered| after.offset >= covered)
    {
        metrics::counter!(chat_core::metrics::name::PUBLISH_REPLAYS_TOTAL, "source" => "memory")
            .increment(1);
        return Replayed::Frames(recent().collect());
    }
    let most = state.config.replay_max;
    let give_up = Instant::now() + state.config.replay_wait();
    let (replay, reaches_memory) = loop {
        let read = state
            .read_model
            .replay(
                &state.redis,
                hub.chat(),
                after,
                most + 1,
                state.config.replay_max_bytes,
            )
            .await;
        let replay = match read {
            Ok(replay) => replay,
            Err(error) => {
                tracing::warn!(%error, "replay from Redis failed");
                return Replayed::Reset(ResetReason::ReplayUnavailable);
            }
        };
        // The log and memory join up once the projector has applied the
        // partition as far as memory's coverage starts.
        let reaches_memory = match (replay.projected, start.covers_after) {
            (Some(projected), Some(covered)) => projected >= covered,
            _ => false,
        };
        if reaches_memory || Instant::now() >= give_up {
            break (replay, reaches_memory);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if replay.trimmed.is_some_and(|trimmed| after.offset < trimmed) {
        return Replayed::Reset(ResetReason::TooOld);
    }
    if replay.frames.len() > most as usize {
        return Replayed::Reset(ResetReason::TooManyEvents);
    }
    if replay.over_bytes {
        return Replayed::Reset(ResetReason::TooManyBytes);
    }
    if !reaches_memory {
        return Replayed::Reset(ResetReason::NotAvailableYet);
    }
    metrics::counter!(chat_core::metrics::name::PUBLISH_REPLAYS_TOTAL, "source" => "redis")
        .increment(1);
    let mut frames: Vec<Arc<Frame>> = replay
        .frames
        .into_iter()
        .map(|(offset, frame)| {
            let id = EventId::new(after.partition, offset);
            Arc::new(Frame::event(id, Bytes::from(frame), None))
        })
        .collect();
    frames.extend(recent());
    Replayed::Frames(frames)
}
