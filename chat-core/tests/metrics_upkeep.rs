//! The metrics recorder must not hold on to histogram samples when nobody
//! scrapes `/metrics`: every request and every event records one, so a
//! server left unscraped would otherwise grow with its traffic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counter
// only observes sizes. An allocator is the only way to see the heap.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Samples recorded per second of the test's traffic.
const PER_SECOND: u32 = 100_000;

/// Seconds of traffic: three upkeep periods.
const SECONDS: usize = 15;

#[test]
fn histogram_samples_are_released_without_a_scrape() {
    let _handle = chat_core::metrics::handle();
    let histogram = metrics::histogram!("upkeep_test_seconds");
    histogram.record(0.001);
    let before = LIVE.load(Ordering::Relaxed);

    // Steady traffic, no one calling render(): what an unscraped server sees.
    let started = Instant::now();
    let mut one_second = 0;
    for second in 0..SECONDS {
        for i in 0..PER_SECOND {
            histogram.record(f64::from(i % 1000) / 1e6);
        }
        if second == 0 {
            one_second = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        }
        let next = started + Duration::from_secs(second as u64 + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);

    assert!(
        one_second > 1_000_000,
        "a second of samples should be held until the next upkeep: {one_second} bytes"
    );
    // The upkeep every 5 s leaves at most about 5 s of samples (plus blocks
    // waiting to be freed), never all 15 s of them.
    assert!(
        held < 8 * one_second,
        "after {SECONDS} s of traffic {held} bytes of samples are held, {} s worth",
        held / one_second
    );
}
