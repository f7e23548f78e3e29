//! Gives memory back to the system after many connections closed. glibc's
//! allocator keeps freed memory in its heaps: after 10,000 streams end at
//! once, the process would keep most of what they used. When the number of
//! open connections has fallen by `DROP` from its peak and stopped falling,
//! the heaps are trimmed once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Connections that must have closed since the last look for a trim.
const DROP: usize = 1000;
/// How often the count is looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Trims the allocator's heaps whenever `open` has fallen by `DROP` or
/// more and then held still for one look (the closing is over, so what
/// the connections used is free), until `shutdown`.
pub(crate) async fn run(open: Arc<AtomicUsize>, shutdown: CancellationToken) {
    let mut peak = open.load(Ordering::Relaxed);
    let mut last = peak;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(bytes) = heap_in_use() {
            metrics::gauge!("publish_heap_in_use_bytes").set(bytes as f64);
        }
        let now = open.load(Ordering::Relaxed);
        if now + DROP <= peak && now >= last {
            trim();
            metrics::counter!("publish_memory_trims_total").increment(1);
            peak = now;
        } else {
            peak = peak.max(now);
        }
        last = now;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim only walks and shrinks the allocator's own heaps;
    // it takes the allocator's locks and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Bytes the program holds allocated (glibc's count; the heaps themselves
/// may be larger, with freed memory the allocator keeps).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn heap_in_use() -> Option<usize> {
    // SAFETY: mallinfo2 only reads the allocator's statistics under its
    // locks and returns them by value.
    let info = unsafe { libc::mallinfo2() };
    Some(info.uordblks + info.hblkhd)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<usize> {
    None
}
