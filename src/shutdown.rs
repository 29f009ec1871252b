//! Stopping: every background task takes the same cancellation token and pauses through
//! [`pause`], so a stop never waits out a backoff.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `how_long`, or less if `stop` is cancelled meanwhile.
pub async fn pause(stop: &CancellationToken, how_long: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(how_long) => {}
    }
}
