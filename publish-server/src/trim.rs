//! Gives memory back to the system. glibc's allocator keeps freed memory in
//! its heaps: after 10,000 streams end at once, the process would keep most
//! of what they used, and memory freed bit by bit (streams leaving one at a
//! time, buffers the reader let go) stays resident the same way. Once a
//! second this looks at the open connections and at the resident memory the
//! allocator does not have in use, and trims the heaps
//! - when the number of open connections has fallen by `DROP` from its
//!   peak and stopped falling (a mass close is over), or
//! - when resident memory not in use has grown by `SLACK_MIN`, or by an
//!   eighth of the heap in use if that is more, since just after the last
//!   trim (what the last trim could not give back is not asked for again),
//!   and the connections are not falling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Connections that must have closed since the last look for a trim.
const DROP: usize = 1000;
/// How often the counts are looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Growth of resident memory not in use that is trimmed whatever the
/// heap's size.
const SLACK_MIN: usize = 1 << 20;

/// What one look saw.
#[derive(Debug, Clone, Copy)]
struct Look {
    /// Open connections.
    open: usize,
    /// Bytes the allocator has handed out, if known.
    in_use: Option<usize>,
    /// Anonymous resident bytes (heaps, stacks), if known.
    resident: Option<usize>,
}

impl Look {
    /// Resident bytes the program does not have in use: freed memory the
    /// allocator keeps, and stacks.
    fn idle(&self) -> Option<usize> {
        Some(self.resident?.saturating_sub(self.in_use?))
    }
}

/// Why the heaps are trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// The open connections fell by `DROP` or more and held still.
    Closed,
    /// Resident memory not in use grew past the slack.
    Idle,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle",
        }
    }
}

/// The decision, apart from the allocator and the clock.
#[derive(Debug, Default)]
struct Trimmer {
    /// The most connections open since the last trim.
    peak: usize,
    /// Connections open at the last look.
    last: usize,
    /// Resident memory not in use, seen at the first look after the last
    /// trim (or the first look of all); `None` until that look.
    floor: Option<usize>,
}

impl Trimmer {
    /// Whether to trim now, after `look`.
    fn look(&mut self, look: Look) -> Option<Reason> {
        let idle = look.idle();
        if self.floor.is_none() {
            self.floor = idle;
        }
        // Trims wait for closing to stop: what is being freed is then free.
        let reason = if look.open < self.last {
            None
        } else if look.open + DROP <= self.peak {
            Some(Reason::Closed)
        } else {
            match (idle, self.floor, look.in_use) {
                (Some(idle), Some(floor), Some(in_use))
                    if idle > floor.saturating_add(SLACK_MIN.max(in_use / 8)) =>
                {
                    Some(Reason::Idle)
                }
                _ => None,
            }
        };
        if reason.is_some() {
            self.peak = look.open;
            self.floor = None;
        } else {
            self.peak = self.peak.max(look.open);
        }
        self.last = look.open;
        reason
    }
}

/// Looks every `EVERY` and trims the allocator's heaps when `Trimmer`
/// says so, until `shutdown`.
pub(crate) async fn run(open: Arc<AtomicUsize>, shutdown: CancellationToken) {
    if cfg!(feature = "jemalloc") {
        // jemalloc purges on its own; glibc's heaps hold little then.
        return;
    }
    let mut trimmer = Trimmer::default();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let in_use = heap_in_use();
        if let Some(bytes) = in_use {
            metrics::gauge!("publish_heap_in_use_bytes").set(bytes as f64);
        }
        let look = Look {
            open: open.load(Ordering::Relaxed),
            in_use,
            resident: resident_anonymous(),
        };
        if let Some(reason) = trimmer.look(look) {
            // The allocator's locks are held while it trims: its time is
            // time other threads may wait to allocate.
            let started = Instant::now();
            trim();
            let took = started.elapsed();
            metrics::counter!("publish_memory_trims_total", "reason" => reason.label())
                .increment(1);
            metrics::histogram!("publish_memory_trim_seconds").record(took.as_secs_f64());
            tracing::debug!(reason = reason.label(), ?took, ?look, "heaps trimmed");
        }
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

/// Resident bytes not backed by a file (the heaps and stacks): resident
/// minus shared pages in `/proc/self/statm`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn resident_anonymous() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_ascii_whitespace().skip(1);
    let resident: usize = fields.next()?.parse().ok()?;
    let shared: usize = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(resident.saturating_sub(shared) * usize::try_from(page).ok()?)
}

#[cfg(not(target_os = "linux"))]
fn resident_anonymous() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn look(open: usize, in_use: usize, resident: usize) -> Look {
        Look {
            open,
            in_use: Some(in_use),
            resident: Some(resident),
        }
    }

    #[test]
    fn a_mass_close_is_trimmed_once_it_stops_falling() {
        let mut trimmer = Trimmer::default();
        assert_eq!(trimmer.look(look(10_000, 50 * MIB, 60 * MIB)), None);
        // Still falling: not yet.
        assert_eq!(trimmer.look(look(4_000, 20 * MIB, 60 * MIB)), None);
        assert_eq!(
            trimmer.look(look(0, MIB, 60 * MIB)),
            None,
            "fell since the last look"
        );
        assert_eq!(trimmer.look(look(0, MIB, 60 * MIB)), Some(Reason::Closed));
        // Done: nothing more to trim while nothing changes.
        assert_eq!(trimmer.look(look(0, MIB, 4 * MIB)), None);
        assert_eq!(trimmer.look(look(0, MIB, 4 * MIB)), None);
    }

    #[test]
    fn fewer_than_drop_closing_is_trimmed_if_it_left_memory_idle() {
        let mut trimmer = Trimmer::default();
        trimmer.look(look(999, 4 * MIB, 8 * MIB));
        assert_eq!(trimmer.look(look(0, 2 * MIB, 8 * MIB)), None, "falling");
        assert_eq!(trimmer.look(look(0, 2 * MIB, 8 * MIB)), Some(Reason::Idle));
        // The same close where the allocator gave the memory back itself.
        let mut trimmer = Trimmer::default();
        trimmer.look(look(999, 4 * MIB, 8 * MIB));
        assert_eq!(trimmer.look(look(0, 2 * MIB, 6 * MIB)), None);
        assert_eq!(trimmer.look(look(0, 2 * MIB, 6 * MIB)), None);
    }

    #[test]
    fn memory_freed_after_the_last_trim_is_trimmed_when_it_passes_the_slack() {
        let mut trimmer = Trimmer::default();
        // Idle 3 MiB at the start: the floor.
        assert_eq!(trimmer.look(look(10, MIB, 4 * MIB)), None);
        // Up by exactly the slack: not yet.
        assert_eq!(trimmer.look(look(10, MIB, 5 * MIB)), None);
        assert_eq!(trimmer.look(look(10, MIB, 5 * MIB + 1)), Some(Reason::Idle));
        // The trim gave back only half: the new floor is what is left, and
        // it is not asked for again.
        assert_eq!(trimmer.look(look(10, MIB, 4 * MIB + MIB / 2)), None);
        assert_eq!(trimmer.look(look(10, MIB, 4 * MIB + MIB / 2)), None);
        assert_eq!(trimmer.look(look(10, MIB, 5 * MIB + MIB / 2)), None);
        assert_eq!(trimmer.look(look(10, MIB, 6 * MIB)), Some(Reason::Idle));
    }

    #[test]
    fn the_slack_grows_with_the_heap() {
        let mut trimmer = Trimmer::default();
        // 800 MiB in use: the slack is 100 MiB, not 1 MiB.
        assert_eq!(trimmer.look(look(50_000, 800 * MIB, 900 * MIB)), None);
        assert_eq!(trimmer.look(look(50_000, 800 * MIB, 950 * MIB)), None);
        assert_eq!(
            trimmer.look(look(50_000, 800 * MIB, 1001 * MIB)),
            Some(Reason::Idle)
        );
    }

    #[test]
    fn without_memory_figures_only_closes_trim() {
        let mut trimmer = Trimmer::default();
        let blind = |open| Look {
            open,
            in_use: None,
            resident: None,
        };
        assert_eq!(trimmer.look(blind(5_000)), None);
        assert_eq!(trimmer.look(blind(5_000)), None);
        assert_eq!(trimmer.look(blind(1_000)), None);
        assert_eq!(trimmer.look(blind(1_000)), Some(Reason::Closed));
    }
}
