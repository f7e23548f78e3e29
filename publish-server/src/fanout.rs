//! `publish_fanout_delay_seconds`: publish-server's own share of an event's
//! delay, from the reader handing it to its chat's hub to a live
//! subscriber's socket taking its frame. One sample per delivery, so it is
//! kept as fixed atomic bucket counts (the metrics recorder would hold
//! every sample until its next upkeep: tens of MB at 500,000 deliveries per
//! second). With `publish_event_delay_seconds` (the Kafka hop) it tells
//! whether a slow event was slow in the broker or here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: 50 µs to 10 s.
const BOUNDS_MICROS: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Cumulative-on-render bucket counts of one histogram.
#[derive(Debug)]
pub(crate) struct DelayHistogram {
    /// Per bucket (the last one is `+Inf`), samples that fell in it.
    counts: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// The process's fan-out delays.
pub(crate) static FANOUT_DELAY: DelayHistogram = DelayHistogram::new();

impl DelayHistogram {
    const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BOUNDS_MICROS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one delivery that took `delay`.
    pub(crate) fn record(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Appends the histogram in Prometheus' text exposition format.
    pub(crate) fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match BOUNDS_MICROS.get(i) {
                Some(&bound) => {
                    let le = bound as f64 / 1e6;
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(histogram: &DelayHistogram) -> Vec<(String, u64)> {
        let mut out = String::new();
        histogram.render("d_seconds", "test", &mut out);
        out.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').unwrap();
                (name.to_owned(), value.parse::<f64>().unwrap() as u64)
            })
            .collect()
    }

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let histogram = DelayHistogram::new();
        histogram.record(Duration::from_micros(30));
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(60));
        let lines = rendered(&histogram);
        let get = |key: &str| lines.iter().find(|(k, _)| k == key).unwrap().1;
        assert_eq!(get("d_seconds_bucket{le=\"0.00005\"}"), 1);
        assert_eq!(get("d_seconds_bucket{le=\"0.0001\"}"), 3);
        assert_eq!(get("d_seconds_bucket{le=\"0.0025\"}"), 3);
        assert_eq!(get("d_seconds_bucket{le=\"0.005\"}"), 4);
        assert_eq!(get("d_seconds_bucket{le=\"10\"}"), 4);
        assert_eq!(get("d_seconds_bucket{le=\"+Inf\"}"), 5);
        assert_eq!(get("d_seconds_count"), 5);
        // 30 + 200 + 3,000 + 60,000,000 µs.
        assert_eq!(get("d_seconds_sum"), 60);
    }

    #[test]
    fn an_empty_histogram_renders_zeroes() {
        let lines = rendered(&DelayHistogram::new());
        assert_eq!(lines.len(), BOUNDS_MICROS.len() + 3);
        assert!(lines.iter().all(|(_, v)| *v == 0));
    }
}
