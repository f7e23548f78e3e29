//! The projector: a Kafka consumer group member that applies `chat-events`
//! to the Redis read model, in batches, and commits offsets only after Redis
//! holds the writes. While Redis is down it retries with backoff and reads
//! nothing new; after a crash the uncommitted events are read again and the
//! read model skips what it already applied.

use std::collections::HashMap;
use std::sync::Arc;
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

/// Runs the projector until `shutdown` fires.
pub(crate) async fn run(
    kafka: KafkaConfig,
    group: String,
    read_model: Arc<ReadModel>,
    redis: Arc<RedisConn>,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let consumer: StreamConsumer = kafka
        .client_config("chat-projector")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // A member that died hands its partitions over within 10 s.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        // Brokers that do not answer a waiting fetch when data arrives (the
        // embedded mock broker, for one) hold each new event for the whole
        // wait: short by default, at the cost of idle fetches.
        .set("fetch.wait.max.ms", kafka.fetch_wait_ms.to_string())
        .create()?;
    consumer.subscribe(&[&kafka.topic])?;
    let consumer = Arc::new(consumer);
    info!(topic = %kafka.topic, %group, "projector started");
    let lag = tokio::spawn(measure_lag(
        consumer.clone(),
        kafka.topic.clone(),
        shutdown.clone(),
    ));

    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
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
        if !apply_until_stored(&read_model, &redis, &batch.events, &shutdown).await {
            break;
        }
        metrics::counter!("projector_events_applied_total").increment(batch.events.len() as u64);
        if let Some(millis) = batch.newest_timestamp {
            let lag = (chrono::Utc::now().timestamp_millis() - millis).max(0) as f64 / 1000.0;
            metrics::gauge!("projector_lag_seconds").set(lag);
        }
        commit(&consumer, &kafka.topic, &batch.next_offsets);
    }
    lag.abort();
    info!("projector stopped");
    Ok(())
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
            Ok(()) => return true,
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

fn decode(record: &rdkafka::message::BorrowedMessage<'_>) -> Result<ChatEvent, String> {
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
                metrics::gauge!("projector_lag_seconds").set(0.0);
            }
        }
    }
}
