//! When the next tick runs: just after each wall-clock second, for the
//! second that just ended.

/// The next tick after a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The wall-clock second (Unix time) whose counters the tick reads.
    pub second: i64,
    /// When the tick is due (Unix milliseconds).
    pub due_ms: i64,
    /// How long to wait from now until it is due.
    pub wait_ms: i64,
}

/// The first tick due after `now_ms`: at `offset_ms` past the next
/// second boundary (or this one, if that is still ahead). Always computed
/// from the current time, so a late or slow tick never causes a backlog.
pub fn next_tick(now_ms: i64, offset_ms: i64) -> Tick {
    let this_second = now_ms.div_euclid(1000);
    let mut due_ms = this_second * 1000 + offset_ms;
    if due_ms <= now_ms {
        due_ms += 1000;
    }
    Tick {
        second: due_ms.div_euclid(1000) - 1,
        due_ms,
        wait_ms: due_ms - now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_just_after_each_second_for_the_second_that_ended() {
        assert_eq!(
            next_tick(10_000, 250),
            Tick {
                second: 9,
                due_ms: 10_250,
                wait_ms: 250
            }
        );
        assert_eq!(next_tick(10_249, 250).second, 9);
        assert_eq!(
            next_tick(10_250, 250),
            Tick {
                second: 10,
                due_ms: 11_250,
                wait_ms: 1000
            }
        );
        assert_eq!(next_tick(10_999, 250).due_ms, 11_250);
    }

    /// A loop driven by tokio's paused clock: ticks land on the schedule,
    /// and one tick that overruns by 2.5 s skips the seconds it missed
    /// instead of running them back to back.
    #[tokio::test(start_paused = true)]
    async fn a_slow_tick_skips_ahead_instead_of_piling_up() {
        let start = tokio::time::Instant::now();
        let base_ms = 1_000_000_i64 + 600;
        let wall = move || base_ms + start.elapsed().as_millis() as i64;
        let mut seen = Vec::new();
        for n in 0..5 {
            let tick = next_tick(wall(), 250);
            tokio::time::sleep(std::time::Duration::from_millis(tick.wait_ms as u64)).await;
            assert_eq!(wall(), tick.due_ms, "woke on time");
            seen.push(tick.second);
            if n == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
            }
        }
        assert_eq!(seen, [1000, 1001, 1004, 1005, 1006]);
    }
}
