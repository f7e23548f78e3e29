//! Admission: whether a parsed request for a chat's events may open a
//! stream. It checks the token, takes the stream's places in the per-user,
//! per-address and per-server counts, and joins the chat's hub; or it says
//! why not, as an answer of the error catalogue.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use chat_core::auth::TokenSource;
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::validate::ChatId;

use crate::AppState;
use crate::hub::Hub;
use crate::stream::{Kind, LastSeen};

/// One chat of a stream, and, on the many-chat stream, the fetch cursor to
/// start after when the stream's position does not cover it.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) chat: ChatId,
    pub(crate) cursor: Option<EventId>,
}

/// A request for chats' events, parsed from its head.
#[derive(Debug)]
pub(crate) struct EventsRequest {
    /// One chat (`/api/chats/{chatId}/events`), or several
    /// (`/api/events`), each once.
    pub(crate) chats: Vec<Subscription>,
    /// Which URL: what the stream's ids and resets say.
    pub(crate) kind: Kind,
    pub(crate) last_seen: LastSeen,
    pub(crate) token: TokenSource,
    /// The client's address, for the per-address stream limit.
    pub(crate) peer: Option<IpAddr>,
}

/// Counts an open stream; uncounts it when dropped.
#[derive(Debug)]
pub(crate) struct Counted(AppState);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.connections.fetch_sub(1, Ordering::AcqRel);
        // Added and taken away, never set: concurrent opens and closes
        // cannot leave it at a stale count.
        metrics::gauge!(chat_core::metrics::name::PUBLISH_CONNECTIONS).decrement(1.0);
    }
}

/// Open streams per key (a user, an address).
pub(crate) type Counts<K> = Arc<Mutex<HashMap<K, usize>>>;

/// Holds one place in a per-key count of open streams; frees it when dropped.
pub(crate) struct Slot<K: Hash + Eq + Clone> {
    counts: Counts<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for Slot<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl<K: Hash + Eq + Clone> Slot<K> {
    /// Takes a place under `key` unless `limit` (0: none) are taken; 429
    /// naming `whose` places they are otherwise.
    fn take(
        counts: &Counts<K>,
        key: K,
        limit: usize,
        whose: &'static str,
    ) -> Result<Self, ApiError> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(key.clone()).or_insert(0);
        if limit > 0 && *open >= limit {
            return Err(ApiError::TooManyStreams { whose, limit });
        }
        *open += 1;
        Ok(Self {
            counts: counts.clone(),
            key,
        })
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// A stream allowed to start: its chats' hubs joined, its place counted.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Each chat's hub, with the cursor asked for it.
    pub(crate) hubs: Vec<(Arc<Hub>, Option<EventId>)>,
    pub(crate) kind: Kind,
    pub(crate) last_seen: LastSeen,
    pub(crate) counted: Counted,
    /// When the token expires (Unix seconds): the stream ends then.
    pub(crate) expires_at: Option<i64>,
    pub(crate) slots: (Option<Slot<String>>, Option<Slot<IpAddr>>),
}

/// Decides a request for chats' events: joins their hubs, or says why
/// not. A stream takes one place in the per-user and per-address counts,
/// whatever its chats.
pub(crate) fn admit(state: &AppState, request: EventsRequest) -> Result<Admitted, ApiError> {
    let config = &state.config;
    if request.kind == Kind::ManyChats && state.hubs.partitions().is_none() {
        return Err(ApiError::unavailable(
            "this server has not started reading the log yet; retry",
        ));
    }
    let identity = match &state.auth {
        None => None,
        Some(auth) => {
            let identity = auth.verify(request.token.token()?)?;
            for subscription in &request.chats {
                identity.allow(&subscription.chat)?;
            }
            Some(identity)
        }
    };
    let user_slot = identity
        .as_ref()
        .map(|identity| {
            Slot::take(
                &state.per_user,
                identity.user.as_str().to_owned(),
                config.max_streams_per_user,
                "this user",
            )
        })
        .transpose()?;
    let address_slot = request
        .peer
        .map(|peer| {
            Slot::take(
                &state.per_address,
                chat_core::client_ip::limit_key(peer),
                config.max_streams_per_address,
                "this address",
            )
        })
        .transpose()?;
    let open = state.connections.fetch_add(1, Ordering::AcqRel) + 1;
    metrics::gauge!(chat_core::metrics::name::PUBLISH_CONNECTIONS).increment(1.0);
    let counted = Counted(state.clone());
    if open > config.max_connections {
        return Err(ApiError::unavailable(format!(
            "this server holds {} streams, its limit; retry on another",
            config.max_connections
        )));
    }
    let mut hubs: Vec<(Arc<Hub>, Option<EventId>)> = Vec::with_capacity(request.chats.len());
    for subscription in &request.chats {
        match state.hubs.join(&subscription.chat) {
            Ok(hub) => hubs.push((hub, subscription.cursor)),
            Err(refused) => {
                for (hub, _) in &hubs {
                    state.hubs.leave(hub);
                }
                return Err(ApiError::unavailable(refused));
            }
        }
    }
    Ok(Admitted {
        hubs,
        kind: request.kind,
        last_seen: request.last_seen,
        counted,
        expires_at: identity.map(|i| i.expires_at),
        slots: (user_slot, address_slot),
    })
}
