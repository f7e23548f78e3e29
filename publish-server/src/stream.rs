//! A stream of one chat's or many chats' events on one connection. A
//! one-chat stream (`/api/chats/{chatId}/events`) is a stream of one chat
//! whose `id:` is the chat's fetch cursor; a many-chat stream
//! (`/api/events?chat=a&chat=b`) names its `id:` by the stream's position.
//!
//! Each chat's events keep their order. Across the chats of one partition,
//! events go out in log order, so one position (per partition, the offset
//! of the last event sent) resumes every chat: see `position`. Frames are
//! taken from the chats' live channels in one cut of the log
//! (`Hubs::atomically`) and written sorted by partition and offset.
//!
//! A chat that cannot be resumed gets a `reset` (naming it on a many-chat
//! stream) and goes on live; the others are untouched. A position that
//! cannot be of this log (a partition not read here, an offset past the
//! end read so far) resets every chat at once, with nothing read from
//! Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_core::id::EventId;
use chat_core::sse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::admission::Admitted;
use crate::fanout::FANOUT_DELAY;
use crate::hub::{Frame, Hub};
use crate::position::Position;
use crate::replay::{Memory, Replayed, ResetReason, replay};

/// Which URL a stream was opened on: what its `id:` lines and resets say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/api/chats/{chatId}/events`: each event's `id:` is the chat's fetch
    /// cursor; a reset names no chat.
    OneChat,
    /// `/api/events?chat=…`: a `subscribed` event first, then each `id:` is
    /// the stream's position; a reset names its chat.
    ManyChats,
}

/// What the client said it saw last.
#[derive(Debug, Clone)]
pub(crate) enum LastSeen {
    Nothing,
    Malformed,
    /// A one-chat stream's event id.
    Id(EventId),
    /// A many-chat stream's position.
    Position(Position),
}

/// Bytes written at once at most: a stream's buffer stays this size
/// whatever its chats (the frames themselves are shared with the hubs).
const WRITE_CHUNK: usize = 64 * 1024;

/// Most times a cut is retaken because a chat fell behind meanwhile.
const MAX_RECUTS: usize = 4;

/// The client went away or stopped reading for longer than allowed.
pub(crate) struct Gone;

/// Writes `bytes` to `out` within `timeout`; a client that takes none of
/// them for that long, or is gone, ends its stream.
async fn write_within(
    out: &mut OwnedWriteHalf,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), Gone> {
    match tokio::time::timeout(timeout, out.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Gone),
    }
}

/// One chat of the stream.
struct Followed {
    hub: Arc<Hub>,
    live: broadcast::Receiver<Arc<Frame>>,
    /// The offset of this chat's last event sent, or where it started:
    /// none of its events at or before it goes out.
    last_sent: i64,
    partition: i32,
}

/// A chat to replay before going live: what its hub held when its live
/// receiver was made, and the offset to replay after.
struct ToReplay {
    index: usize,
    recent: Vec<Arc<Frame>>,
    covers_after: Option<i64>,
    after: i64,
}

/// What a stream does before going live: the chats to replay and the chats
/// to reset.
#[derive(Default)]
struct Prepared {
    replays: Vec<ToReplay>,
    resets: Vec<(usize, ResetReason)>,
}

/// A frame taken for the stream, with the index of its chat.
struct Taken {
    index: usize,
    frame: Arc<Frame>,
}

/// What woke a stream waiting for its chats.
enum Woken {
    /// The only chat's next frame.
    Frame(Arc<Frame>),
    /// The only chat fell behind its live channel.
    Lagged,
    /// A channel closed: the server is stopping.
    Closed,
    /// One of several chats has frames.
    Notified,
}

struct Stream {
    state: AppState,
    kind: Kind,
    /// Woken by every new frame of the stream's chats when it has several;
    /// a stream of one chat waits on that chat's channel itself.
    wake: Option<Arc<Notify>>,
    out: OwnedWriteHalf,
    chats: Vec<Followed>,
    position: Position,
    /// `publish_frames_delivered_total`, looked up once, not per frame.
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
        kind,
        last_seen,
        counted,
        expires_at,
        slots,
    } = admitted;
    let wake = (hubs.len() > 1).then(|| Arc::new(Notify::new()));
    if let Some(wake) = &wake {
        for (hub, _) in &hubs {
            hub.watch(wake);
        }
    }
    let mut stream = Stream {
        state: state.clone(),
        kind,
        wake: wake.clone(),
        out,
        chats: Vec::with_capacity(hubs.len()),
        position: Position::default(),
        delivered: metrics::counter!("publish_frames_delivered_total"),
    };
    wait_for_reader(&state, &hubs, &last_seen).await;
    // Every chat subscribed, and held by the stream, before anything
    // can end it: each hub is left once, below.
    let prepared = stream.prepare(hubs, last_seen);
    until_ended(stream.stream(prepared, &shutdown), &mut input, expires_at).await;
    for chat in &stream.chats {
        if let Some(wake) = &wake {
            chat.hub.unwatch(wake);
        }
        state.hubs().leave(&chat.hub);
    }
    drop(counted);
    drop(slots);
}

/// How long a stream waits for this server's reader to reach the points
/// its client names before it takes them as not of this log.
const READER_GRACE: Duration = Duration::from_millis(300);

/// Waits, at most `READER_GRACE`, until the reader has read every point
/// the client named (its `Last-Event-ID`, its chats' cursors). A fetch's
/// cursor can be a few milliseconds ahead of this server's reader: the
/// projector read that far first. A point the reader does not reach in
/// that time is malformed (`prepare`).
async fn wait_for_reader(
    state: &AppState,
    hubs: &[(Arc<Hub>, Option<EventId>)],
    last_seen: &LastSeen,
) {
    let mut named: Vec<(i32, i64)> = hubs
        .iter()
        .filter_map(|(_, cursor)| cursor.map(|c| (c.partition, c.offset)))
        .collect();
    match last_seen {
        LastSeen::Id(id) => named.push((id.partition, id.offset)),
        LastSeen::Position(position) => named.extend(position.iter()),
        LastSeen::Nothing | LastSeen::Malformed => {}
    }
    let ahead = || {
        named
            .iter()
            .any(|&(partition, offset)| state.hubs().plausible(partition, offset) == Some(false))
    };
    let give_up = Instant::now() + READER_GRACE;
    while ahead() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `stream` until it ends, the client leaves, or its token expires.
async fn until_ended<T>(
    stream: impl Future<Output = T>,
    input: &mut OwnedReadHalf,
    expires_at: Option<i64>,
) {
    tokio::select! {
        _ = stream => {}
        () = client_gone(input) => {}
        () = token_expiry(expires_at) => {}
    }
}

/// Returns when the token expires (never without one): the stream ends
/// then, and the client reconnects with a fresh token.
async fn token_expiry(expires_at: Option<i64>) {
    match expires_at {
        Some(at) => {
            let left = (at - chrono::Utc::now().timestamp()).max(0) as u64;
            tokio::time::sleep(Duration::from_secs(left)).await;
        }
        None => std::future::pending().await,
    }
}

/// Returns when the client closes its side (or the connection fails);
/// anything it sends after its request is ignored.
async fn client_gone(input: &mut OwnedReadHalf) {
    let mut sink = [0u8; 64];
    while let Ok(n) = input.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

/// The point after `offset` of `partition` to replay from; -1: from the
/// partition's start (a position taken before any event).
fn after_offset(partition: i32, offset: i64) -> EventId {
    EventId {
        partition,
        offset: offset.max(-1),
    }
}

/// Waits for the next frame of the stream's chats: on the only chat's
/// channel, or for the notice that one of several chats has frames.
async fn next(chats: &mut [Followed], wake: Option<&Notify>) -> Woken {
    match (chats, wake) {
        ([only], _) => match only.live.recv().await {
            Ok(frame) => Woken::Frame(frame),
            Err(RecvError::Lagged(_)) => Woken::Lagged,
            Err(RecvError::Closed) => Woken::Closed,
        },
        (_, Some(wake)) => {
            wake.notified().await;
            Woken::Notified
        }
        (_, None) => std::future::pending().await,
    }
}

impl Stream {
    /// Subscribes every chat and finds where each starts: for a one-chat
    /// stream, its `Last-Event-ID`; for a many-chat stream, the stream's
    /// position for its partition (for a chat with a cursor, only on a
    /// reconnect of the same set), else its cursor; else live. Takes no
    /// time: the replays come in `stream`.
    fn prepare(
        &mut self,
        mut hubs: Vec<(Arc<Hub>, Option<EventId>)>,
        last_seen: LastSeen,
    ) -> Prepared {
        let state = self.state.clone();
        let hubs_of_server = state.hubs();
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
        for ToReplay {
            index,
            recent,
            covers_after,
            after,
        } in replays
        {
            let chat = &self.chats[index];
            let memory = Memory {
                recent: &recent,
                covers_after,
            };
            // Boxed, as below: a replay's Redis read is large and rare, and would
            // otherwise be held in every stream's task.
            match Box::pin(replay(
                &state,
                &chat.hub,
                &memory,
                after_offset(chat.partition, after),
            ))
            .await
            {
                Replayed::Frames(frames) => {
                    taken.extend(frames.into_iter().map(|frame| Taken { index, frame }));
                }
                Replayed::Reset(reason) => resets.push((index, reason)),
            }
        }
        if self.kind == Kind::ManyChats {
            let names: Vec<&str> = self.chats.iter().map(|c| c.hub.chat().as_str()).collect();
            let hello = sse::subscribed(&self.position.to_string(), &names);
            self.send(Bytes::from(hello)).await?;
        }
        for (index, reason) in resets {
            self.reset(index, reason).await?;
        }
        // What came live while the replays were read, in one cut with them.
        if self.take_cut(&mut taken).await? {
            return Ok(());
        }
        self.write(taken).await?;

        let mut heartbeat = tokio::time::interval(self.state.heartbeat());
        heartbeat.tick().await;
        loop {
            let mut taken = Vec::new();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                woken = next(&mut self.chats, self.wake.as_deref()) => match woken {
                    Woken::Frame(frame) => taken.push(Taken { index: 0, frame }),
                    Woken::Lagged => self.catch_up(0, &mut taken).await?,
                    Woken::Closed => return Ok(()),
                    Woken::Notified => {}
                },
                _ = heartbeat.tick() => {
                    self.send(Bytes::from_static(sse::HEARTBEAT.as_bytes())).await?;
                    continue;
                }
            }
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
            let mut take = || {
                let mut lagged = Vec::new();
                let mut closed = false;
                // Everything each channel holds: at most its capacity (128
                // frames), else it lagged. A cut that left frames behind
                // could not keep each partition in order.
                for (index, chat) in chats.iter_mut().enumerate() {
                    loop {
                        match chat.live.try_recv() {
                            Ok(frame) => taken.push(Taken { index, frame }),
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
            };
            // One chat's channel alone is a cut already.
            let (lagged, closed) = if self.wake.is_some() {
                self.state.hubs().atomically(take)
            } else {
                take()
            };
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
        let chat = &mut self.chats[index];
        tracing::debug!(chat = %chat.hub.chat(), "subscriber fell behind");
        let start = chat.hub.start(Some(chat.partition));
        let after = after_offset(chat.partition, chat.last_sent);
        let replayed = Box::pin(replay(&self.state, &chat.hub, &start.memory(), after)).await;
        chat.live = start.live;
        match replayed {
            Replayed::Frames(frames) => {
                taken.extend(frames.into_iter().map(|frame| Taken { index, frame }));
                Ok(())
            }
            Replayed::Reset(reason) => self.reset(index, reason).await,
        }
    }

    /// Tells the client that chat `index` cannot be resumed (it refetches
    /// the chat), and counts it.
    async fn reset(&mut self, index: usize, reason: ResetReason) -> Result<(), Gone> {
        reason.count();
        let frame = match self.kind {
            Kind::OneChat => sse::reset(reason.as_str()),
            Kind::ManyChats => {
                sse::reset_chat(self.chats[index].hub.chat().as_str(), reason.as_str())
            }
        };
        self.send(Bytes::from(frame)).await
    }

    /// Writes the frames not sent yet, each partition's in log order, in as
    /// few writes as fit `WRITE_CHUNK`. On a many-chat stream each event's
    /// `id:` is the stream's position after it.
    async fn write(&mut self, mut taken: Vec<Taken>) -> Result<(), Gone> {
        // Ordered frames by (partition, offset); `reactions` frames after.
        taken.sort_by_key(|t| (!t.frame.ordered, t.frame.id.partition, t.frame.id.offset));
        let mut bytes = Vec::new();
        let mut sent: Vec<Instant> = Vec::with_capacity(taken.len());
        for Taken { index, frame } in &taken {
            let chat = &mut self.chats[*index];
            if frame.ordered {
                if frame.id.offset <= chat.last_sent {
                    continue;
                }
                chat.last_sent = frame.id.offset;
            }
            sent.push(frame.made);
            match self.kind {
                Kind::ManyChats if frame.ordered => {
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
                }
                // The most common write, one frame as the hub encoded it,
                // goes out without a copy.
                _ if bytes.is_empty() && taken.len() == 1 => {
                    self.send(frame.bytes.clone()).await?;
                }
                _ => bytes.extend_from_slice(&frame.bytes),
            }
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
