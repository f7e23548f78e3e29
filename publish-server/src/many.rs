//! A stream of many chats on one connection (`/api/events?chat=a&chat=b`).
//!
//! Each chat's events keep their order. Across the chats of one partition,
//! events go out in log order, so one position (per partition, the offset
//! of the last event sent) resumes every chat: see `position`. Frames are
//! taken from the chats' live channels in one cut of the log
//! (`Hubs::atomically`) and written sorted by partition and offset; each
//! `id:` is the stream's position after its frame.
//!
//! A chat that cannot be resumed gets a `reset` naming it, and goes on
//! live; the others are untouched. A position that cannot be of this log
//! (a partition not read here, an offset past the end read so far) resets
//! every chat at once, with nothing read from Redis.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chat_core::id::EventId;
use chat_core::sse;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::admission::Admitted;
use crate::fanout::FANOUT_DELAY;
use crate::hub::{Frame, Hub};
use crate::position::Position;
use crate::stream::{Gone, LastSeen, Replayed, replay, until_ended, write_within};

/// Bytes written at once at most: a stream's buffer stays this size
/// whatever its chats (the frames themselves are shared with the hubs).
const WRITE_CHUNK: usize = 64 * 1024;

/// Most times a cut is retaken because a chat fell behind meanwhile.
const MAX_RECUTS: usize = 4;

/// One chat of the stream.
struct Followed {
    hub: Arc<Hub>,
    live: broadcast::Receiver<Arc<Frame>>,
    /// The offset of this chat's last event sent, or where it started:
    /// none of its events at or before it goes out.
    last_sent: i64,
}

/// A chat to replay: its index, the hub's recent frames and how far back
/// they reach (taken with its live receiver), and the offset to replay
/// after.
type ToReplay = (usize, Vec<Arc<Frame>>, Option<i64>, i64);

/// What a stream does before going live: the chats to replay and the chats
/// to reset.
struct Prepared {
    replays: Vec<ToReplay>,
    resets: Vec<(usize, &'static str)>,
}

struct Many {
    state: AppState,
    /// The partitions of the log: a chat's is computed from its id when
    /// needed, not kept per chat.
    partitions: usize,
    /// Woken by every new frame of the stream's chats.
    wake: Arc<tokio::sync::Notify>,
    out: OwnedWriteHalf,
    chats: Vec<Followed>,
    position: Position,
    delivered: metrics::Counter,
}

/// Streams the admitted chats to `out` until the client leaves, its token
/// expires or `shutdown` fires; then leaves their hubs.
pub(crate) async fn run(
    state: AppState,
    admitted: Admitted,
    mut input: OwnedReadHalf,
    out: OwnedWriteHalf,
    shutdown: CancellationToken,
) {
    let Admitted {
        hubs,
        last_seen,
        counted,
        expires_at,
        slots,
        ..
    } = admitted;
    let wake = Arc::new(tokio::sync::Notify::new());
    for (hub, _) in &hubs {
        hub.watch(&wake);
    }
    let mut many = Many {
        partitions: state.hubs().partitions().unwrap_or(1),
        state: state.clone(),
        wake: wake.clone(),
        out,
        chats: Vec::with_capacity(hubs.len()),
        position: Position::default(),
        delivered: metrics::counter!("publish_frames_delivered_total"),
    };
    // Every chat subscribed, and held by the stream, before anything
    // can end it: each hub is left once, below.
    let prepared = many.prepare(hubs, last_seen);
    until_ended(many.stream(prepared, &shutdown), &mut input, expires_at).await;
    for chat in &many.chats {
        chat.hub.unwatch(&wake);
        state.hubs().leave(&chat.hub);
    }
    drop(counted);
    drop(slots);
}

/// The point after `offset` of `partition` to replay from; -1: from the
/// partition's start (a position taken before any event).
fn after_offset(partition: i32, offset: i64) -> EventId {
    EventId {
        partition,
        offset: offset.max(-1),
    }
}

/// A frame taken for the stream, with the index of its chat.
type Taken = (usize, Arc<Frame>);

impl Many {
    /// Subscribes every chat and finds where each starts: the stream's
    /// position for its partition (for a chat with a cursor, only on a
    /// reconnect of the same set); else its cursor; else live. Takes no
    /// time: the replays come in `stream`.
    fn prepare(&mut self, hubs: Vec<(Arc<Hub>, Option<EventId>)>, last_seen: LastSeen) -> Prepared {
        let state = self.state.clone();
        let hubs_of_server = state.hubs();
        let partitions = self.partitions;
        let (given, malformed) = match last_seen {
            LastSeen::Position(position) => {
                let plausible = position
                    .iter()
                    .all(|(p, offset)| hubs_of_server.plausible(p, offset) == Some(true));
                if plausible {
                    (Some(position), false)
                } else {
                    (None, true)
                }
            }
            LastSeen::Malformed => (None, true),
            LastSeen::Nothing | LastSeen::Id(_) => (None, false),
        };
        let set = crate::position::chat_set(hubs.iter().map(|(hub, _)| hub.chat().as_str()));
        self.position = Position::of_set(set);
        // A reconnect of the same stream: the position covers every chat.
        // A changed set: a chat given a cursor is new to the stream and
        // starts from it.
        let same_set = given.as_ref().is_some_and(|given| given.set() == Some(set));
        let mut prepared = Prepared {
            replays: Vec::new(),
            resets: Vec::new(),
        };
        self.chats.reserve_exact(hubs.len());
        for (index, (hub, cursor)) in hubs.into_iter().enumerate() {
            let partition = chat_core::names::partition_of(hub.chat().as_str(), partitions);
            let cursor = cursor.filter(|c| {
                c.partition == partition
                    && hubs_of_server.plausible(partition, c.offset) == Some(true)
            });
            let covered = given.as_ref().and_then(|given| given.get(partition));
            let from = match cursor {
                Some(cursor) if !same_set => Some(cursor.offset),
                _ => covered.or(cursor.map(|c| c.offset)),
            };
            let (live, start_at) = match from {
                Some(after) => {
                    let start = hub.start(Some(partition));
                    prepared
                        .replays
                        .push((index, start.recent, start.covers_after, after));
                    (start.live, after)
                }
                None => {
                    let (start, at) = hubs_of_server.start_live(&hub, partition);
                    if malformed {
                        prepared.resets.push((index, "malformed Last-Event-ID"));
                    }
                    (start.live, at)
                }
            };
            // The position starts where the first chat of each partition
            // does.
            if self.position.get(partition).is_none_or(|at| start_at < at) {
                self.position.put(partition, start_at);
            }
            self.chats.push(Followed {
                hub,
                live,
                last_sent: start_at,
            });
        }
        prepared
    }

    async fn stream(
        &mut self,
        prepared: Prepared,
        shutdown: &CancellationToken,
    ) -> Result<(), Gone> {
        let state = self.state.clone();
        self.send(Bytes::from_static(sse::RETRY.as_bytes())).await?;
        let Prepared {
            replays,
            mut resets,
        } = prepared;
        let mut taken: Vec<Taken> = Vec::new();
        for (index, recent, covers_after, after) in replays {
            let hub = self.chats[index].hub.clone();
            let partition = self.partition(index);
            let memory = crate::stream::Memory {
                recent: &recent,
                covers_after,
            };
            match replay(&state, &hub, &memory, after_offset(partition, after)).await {
                Replayed::Frames(frames) => {
                    taken.extend(frames.into_iter().map(|frame| (index, frame)));
                }
                Replayed::Reset(reason) => resets.push((index, reason)),
            }
        }
        let names: Vec<&str> = self.chats.iter().map(|c| c.hub.chat().as_str()).collect();
        let hello = sse::subscribed(&self.position.to_string(), &names);
        self.send(Bytes::from(hello)).await?;
        for (index, reason) in resets {
            let chat = self.chats[index].hub.chat().as_str();
            metrics::counter!("publish_resets_total", "reason" => reason).increment(1);
            self.send(Bytes::from(sse::reset_chat(chat, reason)))
                .await?;
        }
        // What came live while the replays were read, in one cut with them.
        if self.take_cut(&mut taken).await? {
            return Ok(());
        }
        self.write(taken).await?;

        let mut heartbeat = tokio::time::interval(self.state.heartbeat());
        heartbeat.tick().await;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = self.wake.notified() => {}
                _ = heartbeat.tick() => {
                    self.send(Bytes::from_static(sse::HEARTBEAT.as_bytes())).await?;
                    continue;
                }
            }
            let mut taken = Vec::new();
            if self.take_cut(&mut taken).await? {
                return Ok(());
            }
            self.write(taken).await?;
        }
    }

    /// Takes what every chat's live channel holds, in one cut of the log;
    /// a chat that fell behind its channel catches up first, and the cut is
    /// taken again after it.
    /// Answers whether a chat's channel closed (the server is stopping).
    async fn take_cut(&mut self, taken: &mut Vec<Taken>) -> Result<bool, Gone> {
        for _ in 0..MAX_RECUTS {
            let chats = &mut self.chats;
            let (lagged, closed) = self.state.hubs().atomically(|| {
                let mut lagged = Vec::new();
                let mut closed = false;
                // Everything each channel holds: at most its capacity (128
                // frames), else it lagged. A cut that left frames behind
                // could not keep each partition in order.
                for (index, chat) in chats.iter_mut().enumerate() {
                    loop {
                        match chat.live.try_recv() {
                            Ok(frame) => taken.push((index, frame)),
                            Err(TryRecvError::Lagged(_)) => {
                                lagged.push(index);
                                break;
                            }
                            Err(TryRecvError::Closed) => {
                                closed = true;
                                break;
                            }
                            Err(TryRecvError::Empty) => break,
                        }
                    }
                }
                (lagged, closed)
            });
            if closed {
                return Ok(true);
            }
            if lagged.is_empty() {
                return Ok(false);
            }
            for index in lagged {
                self.catch_up(index, taken).await?;
            }
        }
        Ok(false)
    }

    /// Chat `index` fell further behind than its live channel holds: takes
    /// what it missed from memory or the replay log, or resets it.
    async fn catch_up(&mut self, index: usize, taken: &mut Vec<Taken>) -> Result<(), Gone> {
        metrics::counter!("publish_slow_subscriber_catchups_total").increment(1);
        let partition = self.partition(index);
        let chat = &mut self.chats[index];
        let start = chat.hub.start(Some(partition));
        let after = chat.last_sent;
        let replayed = replay(
            &self.state,
            &chat.hub,
            &start.memory(),
            after_offset(partition, after),
        )
        .await;
        chat.live = start.live;
        match replayed {
            Replayed::Frames(frames) => {
                taken.extend(frames.into_iter().map(|frame| (index, frame)));
                Ok(())
            }
            Replayed::Reset(reason) => {
                metrics::counter!("publish_resets_total", "reason" => reason).increment(1);
                let reset = sse::reset_chat(chat.hub.chat().as_str(), reason);
                self.send(Bytes::from(reset)).await
            }
        }
    }

    /// The partition of chat `index`.
    fn partition(&self, index: usize) -> i32 {
        chat_core::names::partition_of(self.chats[index].hub.chat().as_str(), self.partitions)
    }

    /// Writes the frames not sent yet, each partition's in log order, each
    /// with the stream's position after it as its `id:`, in one write.
    async fn write(&mut self, mut taken: Vec<Taken>) -> Result<(), Gone> {
        // Ordered frames by (partition, offset); `reactions` frames after.
        taken.sort_by_key(|(_, frame)| (!frame.ordered, frame.id.partition, frame.id.offset));
        let mut bytes = Vec::new();
        let mut sent: Vec<Instant> = Vec::with_capacity(taken.len());
        for (index, frame) in &taken {
            let chat = &mut self.chats[*index];
            if frame.ordered {
                if frame.id.offset <= chat.last_sent {
                    continue;
                }
                chat.last_sent = frame.id.offset;
                self.position.advance(frame.id.partition, frame.id.offset);
                // The frame's own `id:` line gives way to the position.
                let body = frame
                    .bytes
                    .iter()
                    .position(|&b| b == b'\n')
                    .filter(|_| frame.bytes.starts_with(b"id: "))
                    .map_or(&frame.bytes[..], |end| &frame.bytes[end + 1..]);
                bytes.extend_from_slice(b"id: ");
                bytes.extend_from_slice(self.position.to_string().as_bytes());
                bytes.push(b'\n');
                bytes.extend_from_slice(body);
            } else {
                bytes.extend_from_slice(&frame.bytes);
            }
            sent.push(frame.made);
            if bytes.len() >= WRITE_CHUNK {
                self.send(Bytes::from(std::mem::take(&mut bytes))).await?;
            }
        }
        if !bytes.is_empty() {
            self.send(Bytes::from(bytes)).await?;
        }
        let now = Instant::now();
        for made in &sent {
            FANOUT_DELAY.record(now.saturating_duration_since(*made));
        }
        self.delivered.increment(sent.len() as u64);
        Ok(())
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), Gone> {
        write_within(&mut self.out, &bytes, self.state.send_timeout()).await
    }
}
