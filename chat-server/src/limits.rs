//! Per-user write limits: messages and reactions per second per user, each
//! with a burst of twice the rate. A rate of 0 turns a limit off.

use std::num::NonZeroU32;

use chat_core::validate::UserId;
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// The write limits of this instance.
pub(crate) struct WriteLimits {
    messages: Option<Limiter>,
    reactions: Option<Limiter>,
}

impl std::fmt::Debug for WriteLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteLimits")
            .field("messages", &self.messages.is_some())
            .field("reactions", &self.reactions.is_some())
            .finish()
    }
}

fn limiter(per_sec: u32) -> Option<Limiter> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(per_sec.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// A write refused by its user's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverLimit {
    /// Seconds until the user may write again, at least 1.
    pub retry_after_secs: u64,
}

fn check(limiter: Option<&Limiter>, user: &UserId) -> Result<(), OverLimit> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check_key(&user.as_str().to_owned())
        .map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            OverLimit {
                retry_after_secs: wait.as_micros().div_ceil(1_000_000).max(1) as u64,
            }
        })
}

impl WriteLimits {
    pub(crate) fn new(messages_per_sec: u32, reactions_per_sec: u32) -> Self {
        Self {
            messages: limiter(messages_per_sec),
            reactions: limiter(reactions_per_sec),
        }
    }

    /// One more message of `user`, unless over the limit.
    pub(crate) fn message(&self, user: &UserId) -> Result<(), OverLimit> {
        check(self.messages.as_ref(), user)
    }

    /// One more reaction change of `user`, unless over the limit.
    pub(crate) fn reaction(&self, user: &UserId) -> Result<(), OverLimit> {
        check(self.reactions.as_ref(), user)
    }

    /// Forgets users back to a full burst.
    pub(crate) fn prune(&self) {
        for limiter in [&self.messages, &self.reactions].into_iter().flatten() {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_twice_the_rate_at_once_then_waits_and_others_are_apart() {
        let limits = WriteLimits::new(2, 0);
        let alice: UserId = "alice".parse().expect("user");
        let bob: UserId = "bob".parse().expect("user");
        for _ in 0..4 {
            assert!(limits.message(&alice).is_ok());
        }
        assert_eq!(
            limits.message(&alice),
            Err(OverLimit {
                retry_after_secs: 1
            })
        );
        assert!(limits.message(&bob).is_ok());
        assert!(
            (0..100).all(|_| limits.reaction(&alice).is_ok()),
            "0 is off"
        );
    }
}
