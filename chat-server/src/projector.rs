//! The projector: a Kafka consumer group member that applies `chat-events`
//! to the Redis read model, in batches, and commits offsets only after Redis
//! holds the writes. While Redis is down it retries with backoff and reads
//! nothing new; after a crash the uncommitted events are read again and the
//! read model skips what it already applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_core::config::KafkaConfig;
use chat_core::event::ChatEvent;
use chat_core::id::EventId;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use chat_core::read_model::ReadModel;
use chat_core::redis_conn::RedisConn;

/// The most records applied in one Redis round trip.
const MAX_BATCH: usize = 500;
/// The longest pause between retries of a failed Redis write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the lag in records is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// How often a member that has not settled in its group looks again.
const SETTLE_EVERY: Duration = Duration::from_millis(250);

/// Runs the projector until `shutdown` fires. `settled` is set once the
/// member's group has settled (see `Settling`), and cleared while it
/// rejoins: until then the instance is not ready.
pub(crate) async fn run(
    kafka: KafkaConfig,
    group: String,
    read_model: Arc<ReadModel>,
    redis: Arc<RedisConn>,
    settled: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    loop {
        settled.store(false, Ordering::Release);
        let consumer = Arc::new(member(&kafka, &group)?);
        info!(topic = %kafka.topic, %group, "projector joined its group");
        let outcome = project(
            &consumer,
            &kafka.topic,
            &read_model,
            &redis,
            &settled,
            &shutdown,
        )
        .await;
        leave(consumer).await;
        match outcome {
            Outcome::Stopped => break,
            Outcome::Stalled => {
                // Dropping the member leaves the group; a fresh one joins.
                warn!(%group, "the projector's group gave no member the unread partitions for {STALL_AFTER:?}; rejoining");
                metrics::counter!("projector_rejoins_total").increment(1);
            }
        }
    }
    info!("projector stopped");
    Ok(())
}

/// Longest a member waits to leave its group: the coordinator's answer to
/// the leave (and the final commit) never comes while Kafka is away, and
/// shutdown must not wait for it.
const LEAVE_LIMIT: Duration = Duration::from_secs(5);

/// Closes a member (librdkafka's consumer close, which polls until the
/// coordinator answered, with no bound) on a thread of its own, waiting
/// for it at most `LEAVE_LIMIT`. Not on tokio's blocking pool: a runtime
/// waits for its blocking threads as it shuts down, so a close that never
/// ends would hold the process. A member that could not leave is dropped by
/// the group once its session times out.
async fn leave(consumer: Arc<StreamConsumer>) {
    let (closed, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("projector-leave".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
    if let Err(error) = spawned {
        warn!(%error, "no thread to leave the projector's group on");
        return;
    }
    if tokio::time::timeout(LEAVE_LIMIT, done).await.is_err() {
        warn!(
            "the projector left its group without the coordinator's answer within {LEAVE_LIMIT:?}"
        );
    }
}

/// A member of the projector's group, subscribed to the topic.
fn member(kafka: &KafkaConfig, group: &str) -> Result<StreamConsumer, KafkaError> {
    let consumer: StreamConsumer = kafka
        .consumer_config("chat-projector", Some(group))
        .create()?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok(consumer)
}

/// Why one member stopped projecting.
enum Outcome {
    Stopped,
    /// The group left the log unread with this member idle.
    Stalled,
}

/// Applies what `consumer` reads until shutdown, or until the group has
/// stalled: this member owns no partition and the group's committed offsets
/// stayed behind the end of the log, unmoved, for `STALL_AFTER`. A broker
/// can leave a group so after a member died (Tansu 0.6.0, a Kafka-protocol
/// broker, did; Apache Kafka evicts the dead member after its session); a
/// member that is merely spare (more members than partitions) sees the
/// others' commits move, and stays.
async fn project(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    read_model: &ReadModel,
    redis: &RedisConn,
    settled: &AtomicBool,
    shutdown: &CancellationToken,
) -> Outcome {
    let lag = tokio::spawn(measure_lag(
        consumer.clone(),
        topic.to_owned(),
        shutdown.clone(),
    ));
    let mut watch = tokio::time::interval(LAG_EVERY);
    let mut stall = StallWatch::default();
    let mut settle = tokio::time::interval(SETTLE_EVERY);
    let settling = Settling::new(std::time::Instant::now());
    let outcome = loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break Outcome::Stopped,
            _ = settle.tick(), if !settled.load(Ordering::Acquire) => {
                let owns = owns_partitions(consumer).await;
                if settling.observe(owns, std::time::Instant::now()) {
                    info!("projector settled in its group");
                    settled.store(true, Ordering::Release);
                }
                continue;
            }
            _ = watch.tick() => {
                let sample = group_progress(consumer, topic).await;
                if stall.observe(sample, std::time::Instant::now()) {
                    break Outcome::Stalled;
                }
                continue;
            }
            received = consumer.recv() => received,
        };
        let mut batch = Batch::default();
        batch.add(first);
        // Whatever else is already waiting joins the batch.
        while batch.records < MAX_BATCH {
            match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                Ok(received) => batch.add(received),
                Err(_) => break,
            }
        }
        if !apply_until_stored(read_model, redis, &batch.events, shutdown).await {
            break Outcome::Stopped;
        }
        metrics::counter!("projector_events_applied_total").increment(batch.events.len() as u64);
        if let Some(millis) = batch.newest_timestamp {
            let lag = (chrono::Utc::now().timestamp_millis() - millis).max(0) as f64 / 1000.0;
            metrics::gauge!(chat_core::metrics::name::PROJECTOR_LAG_SECONDS).set(lag);
        }
        commit(consumer, topic, &batch.next_offsets);
    };
    lag.abort();
    outcome
}

/// One look at the group: whether this member owns partitions, and the
/// group's committed offsets and the log's end over every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    owns_partitions: bool,
    committed: i64,
    end: i64,
}

/// Whether this member owns partitions; `None` when librdkafka cannot say.
async fn owns_partitions(consumer: &Arc<StreamConsumer>) -> Option<bool> {
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || Some(consumer.assignment().ok()?.count() > 0))
        .await
        .ok()
        .flatten()
}

/// Reads the group's progress; `None` when the broker did not answer.
async fn group_progress(consumer: &Arc<StreamConsumer>, topic: &str) -> Option<Progress> {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(2);
        let owns_partitions = consumer.assignment().ok()?.count() > 0;
        let metadata = consumer.fetch_metadata(Some(&topic), timeout).ok()?;
        let partitions: Vec<i32> = metadata
            .topics()
            .first()?
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut wanted = TopicPartitionList::new();
        let mut end = 0;
        for &partition in &partitions {
            wanted.add_partition(&topic, partition);
            end += consumer
                .fetch_watermarks(&topic, partition, timeout)
                .ok()?
                .1;
        }
        let committed = consumer
            .committed_offsets(wanted, timeout)
            .ok()?
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        Some(Progress {
            owns_partitions,
            committed,
            end,
        })
    })
    .await
    .ok()
    .flatten()
}

/// Tells when a member has settled in its group, so that what is posted
/// is applied: once it owns partitions. A member that owns none for
/// `SPARE_AFTER` since it joined is taken for a spare (more members than
/// partitions), and is ready too: it serves the API, and the stall watch
/// rejoins it should the group have left the log unread.
#[derive(Debug)]
struct Settling {
    joined: std::time::Instant,
}

/// How long a member that owns no partition waits before it is called a
/// spare: a rebalance that gives it partitions ends well within this.
const SPARE_AFTER: Duration = Duration::from_secs(10);

impl Settling {
    fn new(joined: std::time::Instant) -> Self {
        Self { joined }
    }

    fn observe(&self, owns_partitions: Option<bool>, now: std::time::Instant) -> bool {
        owns_partitions == Some(true) || now.duration_since(self.joined) >= SPARE_AFTER
    }
}

/// The longest a group may leave the log unread with this member idle.
const STALL_AFTER: Duration = Duration::from_secs(30);

/// Tells a stalled group from a busy or idle one, sample by sample.
#[derive(Debug, Default)]
struct StallWatch {
    /// Since when, and at which committed total, the group looks stalled.
    since: Option<(std::time::Instant, i64)>,
}

impl StallWatch {
    /// True once the group has looked stalled for `STALL_AFTER`: this member
    /// owns nothing, something is unread, and no commit moved meanwhile.
    fn observe(&mut self, sample: Option<Progress>, now: std::time::Instant) -> bool {
        let Some(p) = sample else {
            // No answer from the broker: a broker outage, not a stall.
            self.since = None;
            return false;
        };
        if p.owns_partitions || p.committed >= p.end {
            self.since = None;
            return false;
        }
        match self.since {
            Some((_, committed)) if committed != p.committed => {
                self.since = Some((now, p.committed));
                false
            }
            Some((since, _)) => now.duration_since(since) >= STALL_AFTER,
            None => {
                self.since = Some((now, p.committed));
                false
            }
        }
    }
}

/// Records read together and applied in one Redis round trip.
#[derive(Default)]
struct Batch {
    events: Vec<(EventId, ChatEvent)>,
    /// Per partition, the offset to commit once the events are stored.
    next_offsets: HashMap<i32, i64>,
    /// Records read, malformed ones included.
    records: usize,
    /// When the newest record was written, for the lag in seconds.
    newest_timestamp: Option<i64>,
}

impl Batch {
    fn add(&mut self, received: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>) {
        let record = match received {
            Ok(record) => record,
            Err(error) => {
                warn!(%error, "projector read failed");
                return;
            }
        };
        self.records += 1;
        self.next_offsets
            .insert(record.partition(), record.offset() + 1);
        self.newest_timestamp = record.timestamp().to_millis().or(self.newest_timestamp);
        match decode(&record) {
            Ok(event) => self
                .events
                .push((EventId::new(record.partition(), record.offset()), event)),
            Err(error) => {
                metrics::counter!("projector_malformed_records_total").increment(1);
                warn!(partition = record.partition(), offset = record.offset(), %error,
                    "skipped a malformed record");
            }
        }
    }
}

/// Applies a batch, retrying with backoff until Redis holds it. False when
/// shutdown came first (nothing is committed then; the events are read again).
async fn apply_until_stored(
    read_model: &ReadModel,
    redis: &RedisConn,
    batch: &[(EventId, ChatEvent)],
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        match read_model.apply(redis, batch).await {
            Ok(refused) => {
                if refused > 0 {
                    metrics::counter!("projector_reactions_refused_total", "reason" => "emoji_cap")
                        .increment(refused);
                    warn!(
                        refused,
                        max = read_model.max_emojis(),
                        "reaction adds dropped: their message already holds the most distinct emojis"
                    );
                }
                return true;
            }
            Err(error) => {
                metrics::counter!("projector_redis_errors_total").increment(1);
                warn!(%error, retry_in = ?backoff, events = batch.len(), "projector cannot write to Redis");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn decode(
    record: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<ChatEvent, chat_core::event::DecodeError> {
    ChatEvent::decode(record.key(), record.payload())
}

fn commit(consumer: &StreamConsumer, topic: &str, next_offsets: &HashMap<i32, i64>) {
    let mut offsets = TopicPartitionList::new();
    for (&partition, &offset) in next_offsets {
        if let Err(error) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            warn!(%error, "cannot build the offsets to commit");
            return;
        }
    }
    // A commit that fails (a rebalance took the partition away) only means
    // the next owner reads these events again, and skips them.
    if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
        debug!(%error, "offset commit failed");
    }
}

/// Sets `projector_lag_records`: for the partitions this member owns, how
/// far the committed position is behind the end of the log.
async fn measure_lag(consumer: Arc<StreamConsumer>, topic: String, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
        let consumer = consumer.clone();
        let topic = topic.clone();
        let lag = tokio::task::spawn_blocking(move || -> Option<i64> {
            let positions = consumer.position().ok()?;
            let mut total = 0;
            for element in positions.elements_for_topic(&topic) {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, element.partition(), Duration::from_secs(1))
                    .ok()?;
                let position = match element.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                total += (high - position).max(0);
            }
            Some(total)
        })
        .await;
        if let Ok(Some(lag)) = lag {
            metrics::gauge!("projector_lag_records").set(lag as f64);
            if lag == 0 {
                metrics::gauge!(chat_core::metrics::name::PROJECTOR_LAG_SECONDS).set(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_member_settles_once_it_owns_partitions_or_is_taken_for_a_spare() {
        let joined = std::time::Instant::now();
        let settling = Settling::new(joined);
        assert!(settling.observe(Some(true), joined));
        assert!(!settling.observe(Some(false), joined + Duration::from_secs(3)));
        assert!(!settling.observe(None, joined + Duration::from_secs(3)));
        assert!(
            settling.observe(Some(false), joined + SPARE_AFTER),
            "a spare"
        );
    }

    fn idle(committed: i64, end: i64) -> Option<Progress> {
        Some(Progress {
            owns_partitions: false,
            committed,
            end,
        })
    }

    #[test]
    fn an_idle_member_of_a_group_that_leaves_the_log_unread_rejoins_after_the_limit() {
        let mut watch = StallWatch::default();
        let t0 = Instant::now();
        assert!(!watch.observe(idle(5, 9), t0));
        assert!(!watch.observe(idle(5, 12), t0 + Duration::from_secs(29)));
        assert!(watch.observe(idle(5, 12), t0 + STALL_AFTER));
    }

    #[test]
    fn a_spare_member_stays_while_the_others_commit_or_nothing_is_unread() {
        let mut watch = StallWatch::default();
        let t0 = Instant::now();
        // Others commit: the clock starts again at every move.
        for i in 0..10 {
            let at = t0 + Duration::from_secs(20 * i);
            assert!(!watch.observe(idle(i as i64, 100), at));
        }
        // Everything read: never stalled, however long.
        let mut caught_up = StallWatch::default();
        for i in 0..10 {
            assert!(!caught_up.observe(idle(100, 100), t0 + Duration::from_secs(60 * i)));
        }
    }

    #[test]
    fn owning_partitions_or_a_silent_broker_is_no_stall() {
        let mut watch = StallWatch::default();
        let t0 = Instant::now();
        assert!(!watch.observe(idle(0, 10), t0));
        let owner = Some(Progress {
            owns_partitions: true,
            committed: 0,
            end: 10,
        });
        assert!(!watch.observe(owner, t0 + Duration::from_secs(40)));
        assert!(!watch.observe(idle(0, 10), t0 + Duration::from_secs(41)));
        assert!(!watch.observe(None, t0 + Duration::from_secs(80)));
        assert!(!watch.observe(idle(0, 10), t0 + Duration::from_secs(81)));
        assert!(watch.observe(idle(0, 10), t0 + Duration::from_secs(111)));
    }
}
