//! Stopping. On SIGINT or SIGTERM the service cancels one token (`Application::shutdown`):
//! the HTTP server stops accepting and finishes the requests in flight, and every open
//! `/v1/stream` ends at once; every background task waits on that token wherever it waits, and
//! sleeps through [`pause`], so a stop never waits out a backoff or a poll; the broker's
//! supervisor stops last, so that consumers can still acknowledge what they finished; then the
//! pools close.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `how_long`, or less if `stop` is cancelled meanwhile.
pub async fn pause(stop: &CancellationToken, how_long: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(how_long) => {}
    }
}
