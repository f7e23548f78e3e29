//! Reads every partition of the topic, without a consumer group (each
//! publish-server sees every event), from the end of the log, and hands
//! each event to its chat's hub.

use std::sync::Arc;
use std::time::Duration;

use chat_core::config::KafkaConfig;
use chat_core::event::ChatEvent;
use chat_core::id::EventId;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::hub::Hubs;

/// Runs until `shutdown` fires. `ready` is set once partitions are
/// assigned (readiness).
pub(crate) async fn run(
    kafka: KafkaConfig,
    hubs: Arc<Hubs>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let consumer: StreamConsumer = kafka.consumer_config("publish-server", None).create()?;
    let consumer = Arc::new(consumer);

    // Wait for the topic, then start every partition at its end.
    let assignment = loop {
        let probe = consumer.clone();
        let topic = kafka.topic.clone();
        let found = tokio::task::spawn_blocking(move || start_positions(&probe, &topic)).await;
        match found {
            Ok(Ok(assignment)) => break assignment,
            Ok(Err(error)) => {
                warn!(%error, topic = %kafka.topic, "cannot read the topic yet; retrying")
            }
            Err(error) => warn!(%error, "metadata task failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let mut partitions = TopicPartitionList::new();
    for &(partition, next) in &assignment {
        hubs.started(partition, next - 1);
        partitions.add_partition_offset(&kafka.topic, partition, Offset::Offset(next))?;
    }
    consumer.assign(&partitions)?;
    ready.store(true, std::sync::atomic::Ordering::Release);
    info!(topic = %kafka.topic, partitions = assignment.len(), "reading from the end of every partition");

    let mut handled: u32 = 0;
    loop {
        // A fetch brings hundreds of records at once: let the subscribers
        // forward what they got before more arrive, so that a burst does
        // not overrun a chat's buffer while its readers wait their turn.
        handled = handled.wrapping_add(1);
        if handled % 32 == 0 {
            tokio::task::yield_now().await;
        }
        let record = tokio::select! {
            () = shutdown.cancelled() => break,
            record = consumer.recv() => record,
        };
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                warn!(%error, "read failed");
                continue;
            }
        };
        metrics::counter!("publish_events_in_total").increment(1);
        if let Some(millis) = record.timestamp().to_millis() {
            let lag = (chrono::Utc::now().timestamp_millis() - millis).max(0) as f64 / 1000.0;
            metrics::gauge!("publish_consumer_lag_seconds").set(lag);
            // The Kafka hop of each event: from its producer to this reader.
            metrics::histogram!("publish_event_delay_seconds").record(lag);
        }
        let id = EventId::new(record.partition(), record.offset());
        let event = ChatEvent::decode(record.key(), record.payload());
        match event {
            Ok(event) => {
                let reaction_of = match &event {
                    ChatEvent::Reaction(change) => Some(change.message_id),
                    ChatEvent::Message(_) => None,
                };
                hubs.publish(id, event.chat_id(), reaction_of, || {
                    chat_core::sse::frame(id, &event)
                });
            }
            Err(error) => {
                metrics::counter!("publish_malformed_records_total").increment(1);
                warn!(partition = id.partition, offset = id.offset, %error, "skipped a malformed record");
            }
        }
    }
    info!("reader stopped");
    Ok(())
}

/// Every partition of `topic` with the offset its next record will get.
fn start_positions(consumer: &StreamConsumer, topic: &str) -> Result<Vec<(i32, i64)>, StartError> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(StartError::NoPartitions(topic.to_owned()));
    }
    partitions
        .into_iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|(_, high)| (p, high))
                .map_err(StartError::from)
        })
        .collect()
}

/// Why the reader cannot learn where the log ends.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}
