//! Coalesced reactions of hot chats: once per second, each hub that held
//! reactions back gets, per message touched, one `reactions` event with the
//! message's absolute counts from the read model, as of a point of the log
//! at or past the last reaction held back. A second's events travel as one
//! frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::AppState;
use crate::hub::Frame;

/// Flushes owed counts every `every` until `shutdown`.
pub(crate) async fn run(state: AppState, every: Duration, shutdown: CancellationToken) {
    let mut ticks = chat_core::shutdown::Ticks::every(every, &shutdown);
    while ticks.next().await {
        for hub in state.hubs.take_owing() {
            let Some(pending) = hub.take_pending() else {
                continue;
            };
            let read = state
                .read_model
                .counts(&state.redis, hub.chat(), &pending.messages)
                .await;
            let counts = match read {
                Ok(counts) if counts.head.is_some_and(|head| head.offset >= pending.upto) => counts,
                Ok(_) => {
                    // The projector has not applied the reactions yet: the
                    // counts would miss them. Next second.
                    debug!(chat = %hub.chat(), "counts not projected yet");
                    hub.restore_pending(pending);
                    state.hubs.still_owing(&hub);
                    continue;
                }
                Err(error) => {
                    warn!(%error, chat = %hub.chat(), "cannot read reaction counts; retrying");
                    hub.restore_pending(pending);
                    state.hubs.still_owing(&hub);
                    continue;
                }
            };
            hub.flushed();
            let Some(as_of) = counts.head else { continue };
            // One frame for every message's counts: however many messages
            // changed, it takes one place in the hub's live channel, so no
            // subscriber falls behind because of it.
            let mut bytes = Vec::new();
            for (&message, counts) in pending.messages.iter().zip(&counts.counts) {
                bytes.extend_from_slice(
                    chat_core::sse::reactions(hub.chat().as_str(), message, counts, as_of)
                        .as_bytes(),
                );
            }
            metrics::counter!("publish_coalesced_frames_total")
                .increment(pending.messages.len() as u64);
            hub.broadcast(Arc::new(Frame {
                id: as_of,
                bytes: Bytes::from(bytes),
                reaction_of: None,
                ordered: false,
                made: Instant::now(),
            }));
        }
    }
}
