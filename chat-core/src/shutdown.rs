//! The shutdown signal: SIGINT (Ctrl-C) or SIGTERM cancels a token that every
//! server and background loop is handed.

use tokio_util::sync::CancellationToken;

/// A token that is cancelled when the process receives SIGINT or SIGTERM.
///
/// Call it inside a Tokio runtime; the listener lives until the signal.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        fire.cancel();
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A periodic loop's clock: ticks every `every` (a late tick delays the
/// next rather than bursting) until a token is cancelled.
#[derive(Debug)]
pub struct Ticks {
    interval: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl Ticks {
    /// Ticks every `every` until `shutdown`; the first tick is at once.
    pub fn every(every: std::time::Duration, shutdown: &CancellationToken) -> Self {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            interval,
            shutdown: shutdown.clone(),
        }
    }

    /// Waits for the next tick: `true`, or `false` once the token is
    /// cancelled (at once, even between ticks).
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            _ = self.interval.tick() => true,
        }
    }
}
