//! Upkeep that runs on a period until shutdown: the outbox's gauges, pruning and vacuum,
//! the consumers' pruning.

use std::{future::Future, time::Duration};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Runs `work` in a task of its own every `period`, the first time at once, until
/// `shutdown`; `missed` says what a tick that comes late (a slow run) does.
pub(crate) fn every<F, Fut>(
    period: Duration,
    missed: MissedTickBehavior,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(missed);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            work().await;
        }
    });
}
