//! A latency histogram in microseconds: exact below 128 µs, then 64
//! buckets per power of two (at most 1.6 % off), shared by the tasks of one
//! process and mergeable across processes.

use std::sync::atomic::{AtomicU64, Ordering};

const LINEAR: u64 = 128;
const PER_OCTAVE: u64 = 64;
/// Values are capped at 2^36 µs (about 19 hours).
const TOP_EXPONENT: u64 = 36;
const BUCKETS: usize = (LINEAR + (TOP_EXPONENT - 6) * PER_OCTAVE) as usize;

fn index(micros: u64) -> usize {
    let v = micros.min((1 << TOP_EXPONENT) - 1);
    if v < LINEAR {
        return v as usize;
    }
    let exponent = 63 - u64::from(v.leading_zeros()); // >= 7
    let mantissa = v >> (exponent - 6); // 64..128
    (LINEAR + (exponent - 7) * PER_OCTAVE + (mantissa - PER_OCTAVE)) as usize
}

/// The middle of bucket `index`.
fn value(index: usize) -> u64 {
    let i = index as u64;
    if i < LINEAR {
        return i;
    }
    let k = i - LINEAR;
    let exponent = 7 + k / PER_OCTAVE;
    let mantissa = PER_OCTAVE + k % PER_OCTAVE;
    let width = 1 << (exponent - 6);
    (mantissa << (exponent - 6)) + width / 2
}

/// Counts per bucket.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn record(&self, micros: u64) {
        self.buckets[index(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The non-empty buckets as `(index, count)`.
    pub(crate) fn export(&self) -> Vec<(usize, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    pub(crate) fn merge(&self, exported: &[(usize, u64)]) {
        for &(i, n) in exported {
            if let Some(bucket) = self.buckets.get(i) {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The value at quantile `q` (0..=1), in µs; 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return value(i);
            }
        }
        value(BUCKETS - 1)
    }

    /// The largest recorded value's bucket, in µs.
    pub(crate) fn max(&self) -> u64 {
        self.buckets
            .iter()
            .rposition(|b| b.load(Ordering::Relaxed) > 0)
            .map_or(0, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_within_two_percent() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(7).chain([1 << 30, 1 << 35]) {
            let i = index(v);
            assert!(i >= last, "bucket order at {v}");
            last = i;
            let got = value(i) as f64;
            assert!(
                (got - v as f64).abs() <= (v as f64 * 0.016).max(0.5),
                "{v} read back as {got}"
            );
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_of_a_known_spread() {
        let h = Histogram::new();
        for v in 1..=1000 {
            h.record(v * 10);
        }
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.02;
        assert!(near(h.quantile(0.5), 5000), "{}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 9900), "{}", h.quantile(0.99));
        assert!(near(h.max(), 10_000));
        let other = Histogram::new();
        other.merge(&h.export());
        assert_eq!(other.count(), 1000);
        assert_eq!(other.quantile(0.5), h.quantile(0.5));
    }
}
