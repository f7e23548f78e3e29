//! What a stream waits for besides its chats: this server's reader
//! reaching the points its client names, the client leaving, and its
//! token's expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::id::EventId;
use tokio::io::AsyncReadExt as _;
use tokio::net::tcp::OwnedReadHalf;

use super::LastSeen;
use crate::AppState;
use crate::hub::Hub;

/// How long a stream waits for this server's reader to reach the points
/// its client names before it takes them as not of this log.
const READER_GRACE: Duration = Duration::from_millis(300);

/// Waits, at most `READER_GRACE`, until the reader has read every point
/// the client named (its `Last-Event-ID`, its chats' cursors). A fetch's
/// cursor can be a few milliseconds ahead of this server's reader: the
/// projector read that far first. A point the reader does not reach in
/// that time is malformed (`prepare`).
pub(super) async fn wait_for_reader(
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
            .any(|&(partition, offset)| state.hubs.plausible(partition, offset) == Some(false))
    };
    let give_up = Instant::now() + READER_GRACE;
    while ahead() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `stream` until it ends, the client leaves, or its token expires.
pub(super) async fn until_ended<T>(
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
pub(super) async fn token_expiry(expires_at: Option<i64>) {
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
pub(super) async fn client_gone(input: &mut OwnedReadHalf) {
    let mut sink = [0u8; 64];
    while let Ok(n) = input.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}
