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

use bytes::Bytes;
use chat_core::id::EventId;
use chat_core::sse;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::admission::Admitted;
use crate::hub::{Frame, Hub};
use crate::position::Position;
use crate::replay::{Memory, Replayed, ResetReason, replay};

mod prepare;
mod wait;
mod write;

use prepare::after_offset;
use wait::{until_ended, wait_for_reader};

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

/// The client went away or stopped reading for longer than allowed.
pub(crate) struct Gone;

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
        state.hubs.leave(&chat.hub);
    }
    drop(counted);
    drop(slots);
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

        let mut heartbeat = tokio::time::interval(self.state.config.heartbeat());
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
}
