//! The floor Kafka sets: a plain consumer of the topic, beside the
//! subscribers and with publish-server's fetch settings, timing each
//! benchmark post from its send to its receipt. Nothing between a producer
//! and a reader of the log can do better than this.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::hist::Histogram;
use crate::{Failure, now_micros, sse};

pub(crate) struct Floor {
    histogram: Arc<Histogram>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Floor {
    /// Starts reading every partition of `topic` from its end, each fetch
    /// waiting at the broker for at most `fetch_wait_ms`.
    pub(crate) fn start(brokers: &str, topic: &str, fetch_wait_ms: u64) -> Result<Self, Failure> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "sse-bench-floor")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
            .create()
            .map_err(|e| format!("floor consumer: {e}"))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("floor consumer metadata: {e}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(format!("floor consumer: topic {topic} has no partitions").into());
        }
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition as i32, Offset::End)
                .map_err(Failure::from)?;
        }
        consumer.assign(&assignment).map_err(Failure::from)?;
        let histogram = Arc::new(Histogram::new());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (histogram, stop) = (histogram.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Ok(record)) = consumer.poll(Duration::from_millis(100))
                        && let Some((_, sent)) = record.payload().and_then(sse::parse_marker)
                    {
                        histogram.record(now_micros().saturating_sub(sent));
                    }
                }
            }
        });
        Ok(Self {
            histogram,
            stop,
            thread,
        })
    }

    /// Stops reading: the posts timed, and their p50 and p99 in µs.
    pub(crate) fn finish(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let h = &self.histogram;
        (h.count(), h.quantile(0.5), h.quantile(0.99))
    }
}
