//! One SSE connection: resume from the client's last event id (recent
//! frames in memory, else the Redis replay log, else `reset`), then live
//! frames, merged by id so nothing comes twice or goes missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_core::id::EventId;
use chat_core::sse;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::admission::Admitted;
use crate::fanout::FANOUT_DELAY;
use crate::hub::{Frame, Hub, Start};

/// What the client said it saw last.
#[derive(Debug, Clone)]
pub(crate) enum LastSeen {
    Nothing,
    Malformed,
    /// A one-chat stream's event id.
    Id(EventId),
    /// A many-chat stream's position.
    Position(crate::position::Position),
}

/// Most frames written at once.
const BATCH_FRAMES: usize = 64;

/// The client went away or stopped reading for longer than allowed.
pub(crate) struct Gone;

/// Writes `bytes` to `out` within `timeout`; a client that takes none of
/// them for that long, or is gone, ends its stream.
pub(crate) async fn write_within(
    out: &mut OwnedWriteHalf,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), Gone> {
    match tokio::time::timeout(timeout, out.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Gone),
    }
}

struct Connection {
    state: AppState,
    hub: Arc<Hub>,
    out: OwnedWriteHalf,
    /// The id of the last frame sent: later frames only.
    last_sent: Option<EventId>,
    /// `publish_frames_delivered_total`, looked up once, not per frame.
    delivered: metrics::Counter,
}

/// Streams to `out` until the client leaves (`input` ends) or `shutdown`
/// fires; then closes the connection.
pub(crate) async fn run(
    state: AppState,
    admitted: Admitted,
    mut input: OwnedReadHalf,
    out: OwnedWriteHalf,
    shutdown: CancellationToken,
) {
    let Admitted {
        mut hubs,
        last_seen,
        counted,
        expires_at,
        slots,
        ..
    } = admitted;
    let Some((hub, _)) = hubs.pop() else {
        return;
    };
    let mut connection = Connection {
        state: state.clone(),
        hub: hub.clone(),
        out,
        last_sent: None,
        delivered: metrics::counter!("publish_frames_delivered_total"),
    };
    until_ended(
        connection.stream(last_seen, &shutdown),
        &mut input,
        expires_at,
    )
    .await;
    state.hubs().leave(&hub);
    drop(counted);
    drop(slots);
}

/// Runs `stream` until it ends, the client leaves, or its token expires.
pub(crate) async fn until_ended<T>(
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

impl Connection {
    async fn stream(
        &mut self,
        last_seen: LastSeen,
        shutdown: &CancellationToken,
    ) -> Result<(), Gone> {
        // A position that cannot be in this chat's log is malformed: a
        // reset at once, with nothing read from Redis.
        let last_seen = match last_seen {
            LastSeen::Id(id) if !self.state.hubs().may_hold(self.hub.chat(), id) => {
                LastSeen::Malformed
            }
            other => other,
        };
        // Subscribed before the first byte goes out: a client that saw the
        // stream open misses no event posted after that.
        let mut live = match last_seen {
            LastSeen::Nothing => self.hub.start(None).live,
            LastSeen::Malformed | LastSeen::Position(_) => {
                let live = self.hub.start(None).live;
                self.send(Bytes::from_static(sse::RETRY.as_bytes())).await?;
                self.reset("malformed Last-Event-ID").await?;
                live
            }
            LastSeen::Id(id) => {
                self.send(Bytes::from_static(sse::RETRY.as_bytes())).await?;
                self.resume(id).await?
            }
        };
        if matches!(last_seen, LastSeen::Nothing) {
            self.send(Bytes::from_static(sse::RETRY.as_bytes())).await?;
        }
        let mut heartbeat = tokio::time::interval(self.state.heartbeat());
        heartbeat.tick().await;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                received = live.recv() => match received {
                    Ok(frame) => {
                        // Whatever else is waiting goes out in the same write.
                        let mut batch = vec![frame];
                        let mut lagged = false;
                        while batch.len() < BATCH_FRAMES {
                            match live.try_recv() {
                                Ok(frame) => batch.push(frame),
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                    lagged = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.forward_batch(&batch).await?;
                        if lagged {
                            live = self.catch_up().await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => live = self.catch_up().await?,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = heartbeat.tick() => self.send(Bytes::from_static(sse::HEARTBEAT.as_bytes())).await?,
            }
        }
    }

    /// The subscriber fell further behind than the hub keeps: replays what
    /// it missed, or sends `reset`; answers the live receiver to go on with.
    async fn catch_up(&mut self) -> Result<broadcast::Receiver<Arc<Frame>>, Gone> {
        metrics::counter!("publish_slow_subscriber_catchups_total").increment(1);
        tracing::debug!(chat = %self.hub.chat(), "subscriber fell behind");
        match self.last_sent {
            Some(id) => self.resume(id).await,
            None => {
                self.reset("fell behind").await?;
                Ok(self.hub.start(None).live)
            }
        }
    }

    /// Sends the frames of `batch` the client does not have yet, in one write.
    async fn forward_batch(&mut self, batch: &[Arc<Frame>]) -> Result<(), Gone> {
        let mut last = self.last_sent;
        let fresh: Vec<&Frame> = batch
            .iter()
            .filter(|frame| {
                if !frame.ordered {
                    return true;
                }
                let new = last.is_none_or(|last| frame.id.offset > last.offset);
                if new {
                    last = Some(frame.id);
                }
                new
            })
            .map(|frame| &**frame)
            .collect();
        let bytes = match fresh.as_slice() {
            [] => return Ok(()),
            [one] => one.bytes.clone(),
            many => {
                let mut joined = Vec::with_capacity(many.iter().map(|f| f.bytes.len()).sum());
                for frame in many {
                    joined.extend_from_slice(&frame.bytes);
                }
                Bytes::from(joined)
            }
        };
        self.send(bytes).await?;
        let now = Instant::now();
        for frame in &fresh {
            FANOUT_DELAY.record(now.saturating_duration_since(frame.made));
        }
        self.delivered.increment(fresh.len() as u64);
        self.last_sent = last;
        Ok(())
    }

    /// Sends `frame` unless the client has it already.
    async fn forward(&mut self, frame: &Frame) -> Result<(), Gone> {
        if self
            .last_sent
            .is_some_and(|last| frame.id.offset <= last.offset)
        {
            return Ok(());
        }
        self.send(frame.bytes.clone()).await?;
        self.delivered.increment(1);
        self.last_sent = Some(frame.id);
        Ok(())
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), Gone> {
        write_within(&mut self.out, &bytes, self.state.send_timeout()).await
    }

    async fn reset(&mut self, reason: &'static str) -> Result<(), Gone> {
        metrics::counter!("publish_resets_total", "reason" => reason).increment(1);
        self.last_sent = None;
        self.send(Bytes::from(sse::reset(reason))).await
    }

    /// Replays what came after `after` and answers the live receiver to go
    /// on with. The receiver is made before anything is replayed.
    async fn resume(&mut self, after: EventId) -> Result<broadcast::Receiver<Arc<Frame>>, Gone> {
        let start = self.hub.start(Some(after.partition));
        self.last_sent = Some(after);
        match replay(&self.state, &self.hub, &start.memory(), after).await {
            Replayed::Frames(frames) => {
                for frame in &frames {
                    self.forward(frame).await?;
                }
            }
            Replayed::Reset(reason) => self.reset(reason).await?,
        }
        Ok(start.live)
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
    Reset(&'static str),
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
        metrics::counter!("publish_replays_total", "source" => "memory").increment(1);
        return Replayed::Frames(recent().collect());
    }
    let most = state.replay_max();
    let give_up = Instant::now() + state.replay_wait();
    let (replay, reaches_memory) = loop {
        let read = state
            .read_model()
            .replay(
                state.redis(),
                hub.chat(),
                after,
                most + 1,
                state.replay_max_bytes(),
            )
            .await;
        let replay = match read {
            Ok(replay) => replay,
            Err(error) => {
                tracing::warn!(%error, "replay from Redis failed");
                return Replayed::Reset("replay unavailable");
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
        return Replayed::Reset("too old to replay");
    }
    if replay.frames.len() > most as usize {
        return Replayed::Reset("too many events missed");
    }
    if replay.over_bytes {
        return Replayed::Reset("too many bytes missed");
    }
    if !reaches_memory {
        return Replayed::Reset("replay not available yet");
    }
    metrics::counter!("publish_replays_total", "source" => "redis").increment(1);
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
