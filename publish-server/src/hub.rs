//! Hubs: one per chat with subscribers. A hub keeps the chat's recent
//! frames (for replay) and broadcasts new ones; it exists from the first
//! subscribe to the last unsubscribe.
//!
//! In a hot chat, reactions are not broadcast one by one: the hub notes
//! the messages they touched, and the coalescer sends each such message's
//! absolute counts at most once per second (`reactions`). Messages are
//! broadcast at once, hot or not. Every event stays in the recent frames,
//! so a replay is the full log.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use chat_core::hot::HotChats;
use chat_core::id::EventId;
use chat_core::validate::ChatId;
use tokio::sync::{Notify, broadcast};

/// One event, encoded once as its SSE frame.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) id: EventId,
    pub(crate) bytes: Bytes,
    /// For a reaction: the message it is on.
    pub(crate) reaction_of: Option<EventId>,
    /// False for a `reactions` frame: it has no `id:` of its own, is sent
    /// to every live subscriber and does not move their position.
    pub(crate) ordered: bool,
    /// When it was handed to its hub (`publish_fanout_delay_seconds`).
    pub(crate) made: Instant,
}

impl Frame {
    /// A frame of one event of the log.
    pub(crate) fn event(id: EventId, bytes: Bytes, reaction_of: Option<EventId>) -> Self {
        Self {
            id,
            bytes,
            reaction_of,
            ordered: true,
            made: Instant::now(),
        }
    }
}

/// Most messages with coalesced reactions waiting per hot chat; a
/// reaction on one more message goes out by itself.
const MAX_PENDING_MESSAGES: usize = 4096;

/// Most frames the live channel holds for a subscriber that has not read
/// them yet. The channel allocates all of its slots up front (about 32
/// bytes each) for every chat with a subscriber, so it is kept well below
/// the recent window: a subscriber that falls further behind than this
/// catches up from the recent window in memory (`Hub::start`) before it
/// needs the replay log in Redis.
const LIVE_CAPACITY: usize = 128;

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("this server streams {0} chats already, its limit")]
    TooManyChats(usize),
}

/// How much the recent windows may hold: per hub in frames and bytes, and
/// over all hubs in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) frames: usize,
    pub(crate) bytes_per_hub: usize,
    pub(crate) bytes_total: usize,
}

/// The bytes of every hub's recent window together.
#[derive(Debug, Default)]
struct Held(AtomicUsize);

impl Held {
    fn add(&self, n: usize) -> usize {
        let now = self.0.fetch_add(n, Ordering::AcqRel) + n;
        metrics::gauge!(chat_core::metrics::name::PUBLISH_HUB_BUFFER_BYTES).set(now as f64);
        now
    }

    fn sub(&self, n: usize) {
        let now = self.0.fetch_sub(n, Ordering::AcqRel) - n;
        metrics::gauge!(chat_core::metrics::name::PUBLISH_HUB_BUFFER_BYTES).set(now as f64);
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct HubState {
    /// The latest frames, oldest first, within the budget.
    recent: VecDeque<Arc<Frame>>,
    /// The bytes of `recent`.
    recent_bytes: usize,
    /// Per partition: every event after this offset went through the hub
    /// (the reader's position when the hub was made).
    complete_after: HashMap<i32, i64>,
    /// The highest offset dropped from `recent`.
    evicted_upto: Option<i64>,
    subscribers: usize,
    /// Messages whose reactions were held back (hot chat): their counts
    /// go out with the next `reactions` flush.
    pending: BTreeSet<EventId>,
    /// The offset of the last reaction held back.
    pending_upto: i64,
    /// Messages taken for a flush that has not ended: they count toward
    /// `MAX_PENDING_MESSAGES`, since a failed flush puts them back.
    in_flight: usize,
    /// Many-chat streams following the chat: woken by each new frame (they
    /// take frames with `try_recv`, so they hold no waiting future per
    /// chat).
    watchers: Vec<Arc<Notify>>,
}

/// Messages whose counts a hot chat's subscribers are owed.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) messages: Vec<EventId>,
    /// The counts sent must include every event up to this offset.
    pub(crate) upto: i64,
}

/// The hub of one chat.
#[derive(Debug)]
pub(crate) struct Hub {
    chat: ChatId,
    live: broadcast::Sender<Arc<Frame>>,
    state: Mutex<HubState>,
    budget: Budget,
    /// Shared by every hub of the server.
    held: Arc<Held>,
}

/// What a subscriber starts from: live frames from `live`, and the recent
/// frames taken at the same instant, so nothing falls between the two.
#[derive(Debug)]
pub(crate) struct Start {
    pub(crate) live: broadcast::Receiver<Arc<Frame>>,
    pub(crate) recent: Vec<Arc<Frame>>,
    /// The hub holds every event of the chat's partition after this offset
    /// (`None`: the reader had not started when the hub was made).
    pub(crate) covers_after: Option<i64>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to live frames and takes the recent ones atomically.
    pub(crate) fn start(&self, partition: Option<i32>) -> Start {
        let state = self.lock();
        let live = self.live.subscribe();
        let recent: Vec<Arc<Frame>> = state.recent.iter().cloned().collect();
        let partition = partition.or_else(|| recent.first().map(|f| f.id.partition));
        let covers_after = partition
            .and_then(|p| state.complete_after.get(&p).copied())
            .map(|after| after.max(state.evicted_upto.unwrap_or(-1)));
        Start {
            live,
            recent,
            covers_after,
        }
    }

    /// Keeps `frame` and broadcasts it, unless it is a reaction in a hot
    /// chat: then its message is noted for the next `reactions` flush.
    /// Answers whether the hub now owes a flush.
    fn push(&self, frame: Arc<Frame>, hot: bool) -> bool {
        let mut state = self.lock();
        let size = frame.bytes.len();
        state.recent.push_back(frame.clone());
        state.recent_bytes += size;
        let mut total = self.held.add(size);
        // The oldest frames go while the window is over its own budget, or
        // the server's windows together are over theirs: then this hub,
        // the one growing, gives back, down to nothing if need be (a
        // subscriber that falls behind then replays from Redis).
        while state.recent.len() > self.budget.frames
            || state.recent_bytes > self.budget.bytes_per_hub
            || total > self.budget.bytes_total
        {
            let Some(old) = state.recent.pop_front() else {
                break;
            };
            state.recent_bytes -= old.bytes.len();
            self.held.sub(old.bytes.len());
            total = self.held.get();
            state.evicted_upto = Some(state.evicted_upto.unwrap_or(-1).max(old.id.offset));
        }
        if hot
            && let Some(message) = frame.reaction_of
            && (state.pending.len() + state.in_flight < MAX_PENDING_MESSAGES
                || state.pending.contains(&message))
        {
            state.pending.insert(message);
            state.pending_upto = frame.id.offset;
            return true;
        }
        // No receiver is fine: the last subscriber may be leaving.
        let _ = self.live.send(frame);
        for watcher in &state.watchers {
            watcher.notify_one();
        }
        false
    }

    /// Wakes `watcher` at every new frame from now on.
    pub(crate) fn watch(&self, watcher: &Arc<Notify>) {
        self.lock().watchers.push(watcher.clone());
    }

    /// Stops waking `watcher`.
    pub(crate) fn unwatch(&self, watcher: &Arc<Notify>) {
        self.lock().watchers.retain(|w| !Arc::ptr_eq(w, watcher));
    }

    /// Takes the messages whose counts are owed.
    pub(crate) fn take_pending(&self) -> Option<Pending> {
        let mut state = self.lock();
        if state.pending.is_empty() {
            return None;
        }
        let messages: Vec<EventId> = std::mem::take(&mut state.pending).into_iter().collect();
        state.in_flight = messages.len();
        Some(Pending {
            messages,
            upto: state.pending_upto,
        })
    }

    /// Puts owed messages back (the counts could not be read yet). With
    /// the ones noted meanwhile they stay within `MAX_PENDING_MESSAGES`.
    pub(crate) fn restore_pending(&self, pending: Pending) {
        let mut state = self.lock();
        state.in_flight = 0;
        state.pending.extend(pending.messages);
        state.pending_upto = state.pending_upto.max(pending.upto);
    }

    /// The messages taken were flushed (or need no flush).
    pub(crate) fn flushed(&self) {
        self.lock().in_flight = 0;
    }

    /// Sends `frame` (coalesced counts) to every live subscriber.
    pub(crate) fn broadcast(&self, frame: Arc<Frame>) {
        let state = self.lock();
        let _ = self.live.send(frame);
        for watcher in &state.watchers {
            watcher.notify_one();
        }
    }

    pub(crate) fn chat(&self) -> &ChatId {
        &self.chat
    }
}

#[derive(Debug, Default)]
struct Registry {
    hubs: HashMap<ChatId, Arc<Hub>>,
    /// Per partition, the offset of the last record the reader handled.
    positions: HashMap<i32, i64>,
    /// Chats whose hubs owe a `reactions` flush.
    owing: HashSet<ChatId>,
}

impl Drop for Hub {
    /// A hub's window stops counting toward the server's when it goes.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.held.sub(state.recent_bytes);
    }
}

/// All hubs of this server.
#[derive(Debug)]
pub(crate) struct Hubs {
    registry: Mutex<Registry>,
    /// What each hub keeps for replay and for subscribers that fall behind
    /// the live channel, and what they keep together.
    budget: Budget,
    held: Arc<Held>,
    max_chats: usize,
    /// Which chats are hot: their reactions are coalesced.
    hot: Arc<HotChats>,
}

impl Hubs {
    pub(crate) fn new(budget: Budget, max_chats: usize, hot: Arc<HotChats>) -> Self {
        Self {
            registry: Mutex::new(Registry::default()),
            budget,
            held: Arc::default(),
            max_chats,
            hot,
        }
    }

    /// The hubs that owe a `reactions` flush, each once.
    pub(crate) fn take_owing(&self) -> Vec<Arc<Hub>> {
        let mut registry = self.lock();
        let owing = std::mem::take(&mut registry.owing);
        owing
            .into_iter()
            .filter_map(|chat| registry.hubs.get(&chat).cloned())
            .collect()
    }

    /// Marks `hub` as owing a flush again.
    pub(crate) fn still_owing(&self, hub: &Hub) {
        self.lock().owing.insert(hub.chat.clone());
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader starts partition `partition` after `offset`.
    pub(crate) fn started(&self, partition: i32, offset: i64) {
        self.lock().positions.insert(partition, offset);
    }

    /// Runs `take` while no event is handed to any hub: what it takes from
    /// several hubs' live channels is one cut of the log, in which each
    /// partition's events are a prefix of its events.
    pub(crate) fn atomically<T>(&self, take: impl FnOnce() -> T) -> T {
        let _registry = self.lock();
        take()
    }

    /// How many partitions the reader reads; `None` until it started.
    pub(crate) fn partitions(&self) -> Option<usize> {
        let registry = self.lock();
        (!registry.positions.is_empty()).then(|| registry.positions.len())
    }

    /// Whether an event at (`partition`, `offset`) can exist: the partition
    /// is read here and the offset is not past the last record read.
    /// `None` until the reader started.
    pub(crate) fn plausible(&self, partition: i32, offset: i64) -> Option<bool> {
        let registry = self.lock();
        if registry.positions.is_empty() {
            return None;
        }
        Some(
            registry
                .positions
                .get(&partition)
                .is_some_and(|&read| offset <= read),
        )
    }

    /// Whether `id` can be an event of `chat`: in the chat's partition and
    /// not past the end of the log read so far (true until the reader
    /// started: then nothing can be told).
    pub(crate) fn may_hold(&self, chat: &ChatId, id: EventId) -> bool {
        let Some(partitions) = self.partitions() else {
            return true;
        };
        id.partition == chat_core::names::partition_of(chat.as_str(), partitions)
            && self.plausible(id.partition, id.offset) == Some(true)
    }

    /// Subscribes to `hub`'s live frames and answers, with the same
    /// instant's recent frames, the offset of the last record of
    /// `partition` the reader handled: every later event of the chat
    /// reaches the receiver.
    pub(crate) fn start_live(&self, hub: &Hub, partition: i32) -> (Start, i64) {
        let registry = self.lock();
        let start = hub.start(Some(partition));
        let at = registry.positions.get(&partition).copied().unwrap_or(-1);
        (start, at)
    }

    /// Hands an event to its chat's hub, if the chat has one; `encode` runs
    /// only then, once.
    pub(crate) fn publish(
        &self,
        id: EventId,
        chat: &ChatId,
        reaction_of: Option<EventId>,
        encode: impl FnOnce() -> String,
    ) -> bool {
        let mut registry = self.lock();
        registry.positions.insert(id.partition, id.offset);
        let Some(hub) = registry.hubs.get(chat).cloned() else {
            return false;
        };
        let hot = reaction_of.is_some() && self.hot.is_hot(chat);
        let frame = Frame::event(id, Bytes::from(encode()), reaction_of);
        if hub.push(Arc::new(frame), hot) {
            registry.owing.insert(chat.clone());
        }
        true
    }

    /// Joins `chat`'s hub, making it if needed.
    pub(crate) fn join(&self, chat: &ChatId) -> Result<Arc<Hub>, Refused> {
        let mut registry = self.lock();
        let hub = match registry.hubs.get(chat) {
            Some(hub) => hub.clone(),
            None => {
                if registry.hubs.len() >= self.max_chats {
                    return Err(Refused::TooManyChats(self.max_chats));
                }
                let hub = Arc::new(Hub {
                    chat: chat.clone(),
                    live: broadcast::channel(self.budget.frames.clamp(1, LIVE_CAPACITY)).0,
                    state: Mutex::new(HubState {
                        recent: VecDeque::with_capacity(self.budget.frames.min(64)),
                        recent_bytes: 0,
                        complete_after: registry.positions.clone(),
                        evicted_upto: None,
                        subscribers: 0,
                        pending: BTreeSet::new(),
                        pending_upto: -1,
                        in_flight: 0,
                        watchers: Vec::new(),
                    }),
                    budget: self.budget,
                    held: self.held.clone(),
                });
                registry.hubs.insert(chat.clone(), hub.clone());
                metrics::gauge!(chat_core::metrics::name::PUBLISH_HUBS)
                    .set(registry.hubs.len() as f64);
                hub
            }
        };
        hub.lock().subscribers += 1;
        Ok(hub)
    }

    /// Leaves a hub; the last to leave drops it.
    pub(crate) fn leave(&self, hub: &Arc<Hub>) {
        let mut registry = self.lock();
        let mut state = hub.lock();
        state.subscribers -= 1;
        if state.subscribers == 0
            && registry
                .hubs
                .get(&hub.chat)
                .is_some_and(|h| Arc::ptr_eq(h, hub))
        {
            registry.hubs.remove(&hub.chat);
            metrics::gauge!(chat_core::metrics::name::PUBLISH_HUBS).set(registry.hubs.len() as f64);
        }
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.lock().hubs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(name: &str) -> ChatId {
        name.parse().expect("chat id")
    }

    /// Hubs of 8 frames each, with chat `lobby` hot.
    fn hot_lobby_hubs() -> Hubs {
        let hot = HotChats::new();
        hot.set_store_up(true);
        hot.apply(&chat_core::hot::HotChange {
            chat: chat("lobby"),
            hot: true,
            until: i64::MAX,
            second: 0,
        });
        Hubs::new(frames(8), 10, hot)
    }

    /// A budget of `n` frames per hub, with no byte limit.
    fn frames(n: usize) -> Budget {
        Budget {
            frames: n,
            bytes_per_hub: usize::MAX,
            bytes_total: usize::MAX,
        }
    }

    #[test]
    fn windows_keep_to_their_byte_budgets_each_and_together() {
        let hubs = Hubs::new(
            Budget {
                frames: 1000,
                bytes_per_hub: 100,
                bytes_total: 150,
            },
            10,
            HotChats::new(),
        );
        hubs.started(0, -1);
        let (a, b) = (chat("a"), chat("b"));
        let hub_a = hubs.join(&a).expect("join");
        let hub_b = hubs.join(&b).expect("join");
        let frame = |n: usize| move || "x".repeat(n);
        // Per hub: four 30-byte frames are 120 bytes; the oldest goes.
        for offset in 0..4 {
            hubs.publish(EventId::new(0, offset), &a, None, frame(30));
        }
        let start = hub_a.start(Some(0));
        assert_eq!(start.recent.len(), 3);
        assert_eq!(
            start.covers_after,
            Some(0),
            "what is left covers after offset 0"
        );
        assert_eq!(hubs.held.get(), 90);
        // Together: b's 80 bytes take the total over 150; b gives back.
        hubs.publish(EventId::new(0, 4), &b, None, frame(40));
        hubs.publish(EventId::new(0, 5), &b, None, frame(40));
        assert!(hubs.held.get() <= 150, "{} bytes held", hubs.held.get());
        let start_b = hub_b.start(Some(0));
        assert_eq!(
            start_b
                .recent
                .iter()
                .map(|f| f.id.offset)
                .collect::<Vec<_>>(),
            [5]
        );
        assert_eq!(start_b.covers_after, Some(4));
        // A frame larger than a whole window is broadcast, and kept by no one.
        let mut live = hub_a.start(Some(0)).live;
        hubs.publish(EventId::new(0, 6), &a, None, frame(500));
        assert_eq!(live.try_recv().expect("live").id.offset, 6);
        assert!(hub_a.start(Some(0)).recent.is_empty());
        // A hub that goes gives its bytes back.
        hubs.leave(&hub_b);
        drop((start_b, hub_b));
        hubs.leave(&hub_a);
        drop((start, hub_a));
        assert_eq!(hubs.held.get(), 0);
    }

    #[test]
    fn a_subscriber_sees_each_frame_once_across_recent_and_live() {
        let hubs = Hubs::new(frames(4), 10, HotChats::new());
        hubs.started(0, 9);
        let lobby = chat("lobby");
        let first = hubs.join(&lobby).expect("join");
        assert!(hubs.publish(EventId::new(0, 10), &lobby, None, || "a".into()));
        assert!(
            !hubs.publish(EventId::new(0, 11), &chat("other"), None, || unreachable!(
                "not encoded"
            ))
        );
        let mut start = first.start(Some(0));
        assert_eq!(start.covers_after, Some(9));
        assert_eq!(
            start.recent.iter().map(|f| f.id.offset).collect::<Vec<_>>(),
            [10]
        );
        hubs.publish(EventId::new(0, 12), &lobby, None, || "b".into());
        assert_eq!(start.live.try_recv().expect("live").id.offset, 12);
    }

    #[test]
    fn the_recent_window_is_bounded_and_says_what_it_dropped() {
        let hubs = Hubs::new(frames(2), 10, HotChats::new());
        hubs.started(0, -1);
        let lobby = chat("lobby");
        let hub = hubs.join(&lobby).expect("join");
        for offset in 0..5 {
            hubs.publish(EventId::new(0, offset), &lobby, None, || {
                format!("{offset}")
            });
        }
        let start = hub.start(Some(0));
        assert_eq!(start.recent.len(), 2);
        assert_eq!(start.covers_after, Some(2), "offsets 0..=2 were dropped");
    }

    #[test]
    fn a_subscriber_behind_the_live_channel_finds_the_rest_in_memory() {
        let hubs = Hubs::new(frames(1024), 10, HotChats::new());
        hubs.started(0, -1);
        let lobby = chat("lobby");
        let hub = hubs.join(&lobby).expect("join");
        let mut live = hub.start(Some(0)).live;
        let published = LIVE_CAPACITY as i64 * 2;
        for offset in 0..published {
            hubs.publish(EventId::new(0, offset), &lobby, None, || {
                format!("{offset}")
            });
        }
        assert!(matches!(
            live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        let start = hub.start(Some(0));
        assert_eq!(start.covers_after, Some(-1));
        assert_eq!(
            start.recent.iter().map(|f| f.id.offset).collect::<Vec<_>>(),
            (0..published).collect::<Vec<_>>()
        );
    }

    #[test]
    fn owed_messages_stay_bounded_however_often_a_flush_fails() {
        let hubs = hot_lobby_hubs();
        hubs.started(0, -1);
        let lobby = chat("lobby");
        let hub = hubs.join(&lobby).expect("join");
        let mut offset = 0;
        // Every second, reactions on new messages; every flush fails (the
        // projector lags) and puts its messages back.
        for _second in 0..5 {
            for _ in 0..MAX_PENDING_MESSAGES {
                let message = EventId::new(0, 1_000_000 + offset);
                hubs.publish(EventId::new(0, offset), &lobby, Some(message), || {
                    "r".into()
                });
                offset += 1;
            }
            let pending = hub.take_pending().expect("pending");
            assert!(pending.messages.len() <= MAX_PENDING_MESSAGES);
            for _ in 0..100 {
                let message = EventId::new(0, 1_000_000 + offset);
                hubs.publish(EventId::new(0, offset), &lobby, Some(message), || {
                    "r".into()
                });
                offset += 1;
            }
            hub.restore_pending(pending);
            assert!(hub.lock().pending.len() <= MAX_PENDING_MESSAGES);
        }
        hub.take_pending().expect("pending");
        hub.flushed();
        assert_eq!(hub.lock().in_flight, 0);
    }

    #[test]
    fn a_hot_chat_holds_reactions_back_and_lets_messages_through() {
        let hubs = hot_lobby_hubs();
        hubs.started(0, -1);
        let lobby = chat("lobby");
        let hub = hubs.join(&lobby).expect("join");
        let mut live = hub.start(Some(0)).live;
        let message = EventId::new(0, 0);
        hubs.publish(message, &lobby, None, || "m".into());
        hubs.publish(EventId::new(0, 1), &lobby, Some(message), || "r1".into());
        hubs.publish(EventId::new(0, 2), &lobby, Some(message), || "r2".into());
        assert_eq!(live.try_recv().expect("the message").id, message);
        assert!(live.try_recv().is_err(), "reactions held back");
        let owing = hubs.take_owing();
        assert_eq!(owing.len(), 1);
        let pending = owing[0].take_pending().expect("pending");
        assert_eq!(pending.messages, [message]);
        assert_eq!(pending.upto, 2);
        assert_eq!(
            hub.start(Some(0)).recent.len(),
            3,
            "replay keeps every event"
        );
        assert!(hubs.take_owing().is_empty(), "taken once");
    }

    #[test]
    fn hubs_are_dropped_with_their_last_subscriber_and_bounded_in_number() {
        let hubs = Hubs::new(frames(2), 1, HotChats::new());
        let a = hubs.join(&chat("a")).expect("join");
        let a2 = hubs.join(&chat("a")).expect("second join");
        assert!(matches!(
            hubs.join(&chat("b")),
            Err(Refused::TooManyChats(1))
        ));
        hubs.leave(&a);
        assert_eq!(hubs.count(), 1);
        hubs.leave(&a2);
        assert_eq!(hubs.count(), 0);
        assert!(hubs.join(&chat("b")).is_ok());
    }
}
