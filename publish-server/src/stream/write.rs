//! A stream's writes: one cut of its chats' live channels, catching up a
//! chat that fell behind, resets, and the frames in log order.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_core::sse;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::broadcast::error::TryRecvError;

use super::prepare::after_offset;
use super::{Gone, Kind, Stream, Taken};
use crate::fanout::FANOUT_DELAY;
use crate::replay::{Replayed, ResetReason, replay};

/// Bytes written at once at most: a stream's buffer stays this size
/// whatever its chats (the frames themselves are shared with the hubs).
const WRITE_CHUNK: usize = 64 * 1024;

/// Most times a cut is retaken because a chat fell behind meanwhile.
const MAX_RECUTS: usize = 4;

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

impl Stream {
    /// Takes what every chat's live channel holds, in one cut of the log;
    /// a chat that fell behind its channel catches up first, and the cut is
    /// taken again after it.
    /// Answers whether a chat's channel closed (the server is stopping).
    pub(super) async fn take_cut(&mut self, taken: &mut Vec<Taken>) -> Result<bool, Gone> {
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
                self.state.hubs.atomically(take)
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
    pub(super) async fn catch_up(
        &mut self,
        index: usize,
        taken: &mut Vec<Taken>,
    ) -> Result<(), Gone> {
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
    pub(super) async fn reset(&mut self, index: usize, reason: ResetReason) -> Result<(), Gone> {
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
    pub(super) async fn write(&mut self, mut taken: Vec<Taken>) -> Result<(), Gone> {
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

    pub(super) async fn send(&mut self, bytes: Bytes) -> Result<(), Gone> {
        write_within(&mut self.out, &bytes, self.state.config.send_timeout()).await
    }
}
