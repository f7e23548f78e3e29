//! Writes chat events to Kafka and reports where they landed.
//!
//! The producer is idempotent with `acks=all`, so an event the broker
//! acknowledged is stored exactly once; a write that is not acknowledged
//! within the delivery timeout fails instead of waiting. A producer that hit a
//! fatal error (which ends an idempotent producer for good), or whose
//! producer id the broker no longer accepts (a broker restarted on a kept log
//! may fence it), is replaced.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chat_core::config::KafkaConfig;
use chat_core::event::ChatEvent;
use chat_core::id::EventId;
use chat_core::names;
use chat_core::validate::ChatId;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{info, warn};

/// How far past the end a partition reports an offset must be to be called
/// made up. Apache Kafka reports the end exactly; Tansu 0.6.0, a
/// Kafka-protocol broker, reports the first offset of the partition's last record batch plus one,
/// so an offset inside that batch looks past the end. A batch holds fewer
/// records than librdkafka's `batch.num.messages` (10,000).
const END_SLACK: i64 = 10_000;

/// Why an event was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProduceError {
    #[error("the Kafka producer's queue is full; retry shortly")]
    QueueFull,
    #[error("Kafka did not acknowledge the event within {0:?}")]
    Timeout(Duration),
    #[error("Kafka refused the event: {0}")]
    Kafka(#[source] KafkaError),
}

impl ProduceError {
    /// Whether the event may be in the log all the same: a write that
    /// timed out may have reached the broker before its answer was lost.
    pub(crate) fn may_be_stored(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Kafka(KafkaError::Canceled))
    }
}

/// The chat events producer.
pub(crate) struct EventProducer {
    /// The live producer; swapped for a new one after a fatal error.
    producer: RwLock<Arc<FutureProducer>>,
    config: KafkaConfig,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("brokers", &self.config.brokers)
            .field("topic", &self.config.topic)
            .finish()
    }
}

impl EventProducer {
    /// A producer for `config`'s brokers and topic. Connecting happens in the
    /// background: this fails only on invalid settings.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer = config.producer_config("chat-server").create()?;
        Ok(Self {
            producer: RwLock::new(Arc::new(producer)),
            config: config.clone(),
        })
    }

    fn current(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes `event` keyed by its chat id and returns its id once Kafka
    /// acknowledged it.
    pub(crate) async fn send(&self, event: &ChatEvent) -> Result<EventId, ProduceError> {
        let producer = self.current();
        let payload = event.to_json();
        let record = FutureRecord::to(&self.config.topic)
            .key(event.chat_id().as_str())
            .payload(&payload);
        let started = Instant::now();
        let result = match producer.send_result(record) {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(ProduceError::QueueFull)
            }
            Err((error, _)) => Err(ProduceError::Kafka(error)),
            Ok(delivery) => {
                // The POST's bound: librdkafka goes on trying the write for
                // the message timeout (longer), and the answer says it may
                // have been stored.
                let limit = self.config.delivery_timeout() + Duration::from_secs(1);
                match tokio::time::timeout(limit, delivery).await {
                    Ok(Ok(Ok(delivery))) => Ok(EventId::new(delivery.partition, delivery.offset)),
                    Ok(Ok(Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
                        _,
                    )))) => Err(ProduceError::Timeout(self.config.delivery_timeout())),
                    Ok(Ok(Err((error, _)))) => Err(ProduceError::Kafka(error)),
                    Ok(Err(_canceled)) => Err(ProduceError::Kafka(KafkaError::Canceled)),
                    Err(_elapsed) => Err(ProduceError::Timeout(self.config.delivery_timeout())),
                }
            }
        };
        metrics::histogram!("kafka_produce_duration_seconds").record(started.elapsed());
        if let Err(error) = &result {
            let reason = match error {
                ProduceError::QueueFull => "queue_full",
                ProduceError::Timeout(_) => "timeout",
                ProduceError::Kafka(_) => "refused",
            };
            metrics::counter!("kafka_produce_errors_total", "reason" => reason).increment(1);
            warn!(%error, "produce failed");
            let fenced = match error {
                ProduceError::Kafka(KafkaError::MessageProduction(code)) => {
                    identity_refused(*code).then(|| (*code, error.to_string()))
                }
                _ => None,
            };
            self.replace_if_dead(&producer, fenced);
        }
        result
    }

    /// An idempotent producer that hit a fatal error, or whose producer id
    /// the broker refuses (`refused`), fails every later write; start a fresh
    /// one, which asks the broker for a new producer id (once, however many
    /// writes saw the error).
    fn replace_if_dead(
        &self,
        failed: &Arc<FutureProducer>,
        refused: Option<(RDKafkaErrorCode, String)>,
    ) {
        let Some((code, reason)) = failed.client().fatal_error().or(refused) else {
            return;
        };
        let mut slot = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&slot, failed) {
            return;
        }
        match self.config.producer_config("chat-server").create() {
            Ok(fresh) => {
                warn!(?code, %reason, "Kafka producer can no longer write; replaced it");
                *slot = Arc::new(fresh);
            }
            Err(error) => warn!(%error, "cannot replace the failed Kafka producer"),
        }
    }

    /// Asks Kafka, through the live producer, what `ask` wants to know of
    /// the topic: on a blocking thread, as librdkafka's metadata calls block.
    async fn ask_kafka<T: Send + 'static>(
        &self,
        ask: impl FnOnce(&FutureProducer, &str) -> Result<T, CheckError> + Send + 'static,
    ) -> Result<T, CheckError> {
        let producer = self.current();
        let topic = self.config.topic.clone();
        tokio::task::spawn_blocking(move || ask(&producer, &topic))
            .await
            .map_err(|_| CheckError::Panicked)?
    }

    /// Checks that Kafka answers and the topic has partitions.
    pub(crate) async fn check(&self) -> Result<(), CheckError> {
        self.ask_kafka(|producer, topic| {
            topic_partitions(producer.client(), topic, Duration::from_secs(2)).map(drop)
        })
        .await
    }

    /// The end of `chat`'s partition as Kafka reports it (the offset the
    /// next record will get), or `None` when `partition` is not the chat's.
    /// An error: Kafka did not say.
    pub(crate) async fn chat_log_end(
        &self,
        chat: &ChatId,
        partition: i32,
    ) -> Result<Option<i64>, CheckError> {
        let (chat_partition, end) = self.chat_partition_end(chat).await?;
        Ok((chat_partition == partition).then_some(end))
    }

    /// How long librdkafka tries a write.
    pub(crate) fn message_timeout(&self) -> Duration {
        self.config.message_timeout()
    }

    /// `chat`'s partition and that partition's end (the offset the next
    /// event will get), as Kafka tells it now.
    pub(crate) async fn chat_partition_end(&self, chat: &ChatId) -> Result<(i32, i64), CheckError> {
        let chat = chat.as_str().to_owned();
        self.ask_kafka(move |producer, topic| {
            let client = producer.client();
            let limit = Duration::from_secs(2);
            let partition = names::partition_of(&chat, topic_partitions(client, topic, limit)?);
            let (_, end) = client.fetch_watermarks(topic, partition, limit)?;
            Ok((partition, end))
        })
        .await
    }

    /// Whether `message` can be an event of `chat`'s log: its partition is
    /// the chat's, and its offset is not far past that partition's end (see
    /// `END_SLACK`). False means no projector will ever find it; an error,
    /// that Kafka did not say.
    pub(crate) async fn may_hold(
        &self,
        chat: &ChatId,
        message: EventId,
    ) -> Result<bool, CheckError> {
        let end = self.chat_log_end(chat, message.partition).await?;
        Ok(end.is_some_and(|end| message.offset < end.saturating_add(END_SLACK)))
    }

    /// Creates the topic unless it exists.
    pub(crate) async fn ensure_topic(&self) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> =
            self.config.client_config("chat-server-admin").create()?;
        let topic = NewTopic::new(
            &self.config.topic,
            self.config.topic_partitions,
            TopicReplication::Fixed(self.config.topic_replication),
        );
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(5)))
            .request_timeout(Some(Duration::from_secs(5)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(name) => {
                    info!(topic = %name, partitions = self.config.topic_partitions, "created Kafka topic")
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::AdminOp(code))
                        .inspect_err(|_| warn!(topic = %name, ?code, "cannot create Kafka topic"));
                }
            }
        }
        Ok(())
    }

    /// Waits up to `limit` for queued writes to be acknowledged.
    pub(crate) async fn flush(&self, limit: Duration) {
        let producer = self.current();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(limit)).await;
        if let Ok(Err(error)) = flushed {
            warn!(%error, "writes still unacknowledged at shutdown");
        }
    }
}

/// How many partitions `topic` has, as the broker says (blocking); an
/// error when the broker does not answer or has no such topic.
fn topic_partitions(
    client: &rdkafka::client::Client<impl rdkafka::ClientContext>,
    topic: &str,
    limit: Duration,
) -> Result<usize, CheckError> {
    let metadata = client.fetch_metadata(Some(topic), limit)?;
    match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        _ => Err(CheckError::NoTopic(topic.to_owned())),
    }
}

/// Whether a write failed because the broker no longer accepts the
/// producer's id or epoch: every later write of that producer fails the same
/// way, and the write was not stored.
fn identity_refused(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::InvalidProducerIdMapping
    )
}

/// Why Kafka is not ready for writes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("Kafka metadata: {0}")]
    Metadata(#[from] KafkaError),
    #[error("topic {0:?} does not exist")]
    NoTopic(String),
    #[error("the metadata request failed")]
    Panicked,
}
