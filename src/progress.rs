//! How far each projection has read the feed, so that a command's caller can read their own
//! write: the command path waits, bounded, until every projection has passed its event.
//!
//! Where the projections run in this process they report here directly. Where they run in
//! another (`serve --role api`), [`Progress::follow_checkpoints`] reads their checkpoints from the
//! database, quickly while someone waits and lazily otherwise.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use approval_projections::Position;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::checkpoints;

/// Each projection's position.
#[derive(Clone, Debug)]
pub struct Progress {
    positions: Arc<BTreeMap<&'static str, watch::Sender<Position>>>,
    waiting: Arc<AtomicUsize>,
}

impl Progress {
    /// Progress of the projections named.
    pub fn new(names: &[&'static str]) -> Self {
        Self {
            positions: Arc::new(
                names
                    .iter()
                    .map(|n| (*n, watch::channel(Position::START).0))
                    .collect(),
            ),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Projection `name` has applied everything up to `to`.
    pub fn advance(&self, name: &str, to: Position) {
        if let Some(sender) = self.positions.get(name) {
            sender.send_if_modified(|at| {
                let moved = to > *at;
                if moved {
                    *at = to;
                }
                moved
            });
        }
    }

    /// The slowest projection's position.
    pub fn slowest(&self) -> Position {
        self.positions
            .values()
            .map(|s| *s.borrow())
            .min()
            .unwrap_or(Position::START)
    }

    /// Waits until every projection has applied the event at `position`, at most `timeout`.
    /// Returns whether they did.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let all = async {
            for sender in self.positions.values() {
                let mut rx = sender.subscribe();
                if rx.wait_for(|at| *at >= position).await.is_err() {
                    return false;
                }
            }
            true
        };
        let seen = tokio::time::timeout(timeout, all).await.unwrap_or(false);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        seen
    }

    /// Keeps the positions current from the checkpoints table until `stop`: every few
    /// milliseconds while a command waits, every `idle` otherwise.
    pub async fn follow_checkpoints(self, pool: PgPool, idle: Duration, stop: CancellationToken) {
        let busy = Duration::from_millis(3);
        loop {
            match checkpoints::all(&pool).await {
                Ok(rows) => {
                    for (name, position) in rows {
                        self.advance(&name, position);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the projections' checkpoints"),
            }
            let pause = if self.waiting.load(Ordering::Relaxed) > 0 {
                busy
            } else {
                idle
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tx_id: i64, global_id: i64) -> Position {
        Position { tx_id, global_id }
    }

    #[tokio::test]
    async fn a_waiter_is_released_when_every_projection_passes_its_event() {
        let progress = Progress::new(&["a", "b"]);
        progress.advance("a", at(10, 5));
        assert!(
            !progress
                .wait_for(at(10, 5), Duration::from_millis(20))
                .await
        );
        progress.advance("b", at(11, 1));
        assert!(
            progress
                .wait_for(at(10, 5), Duration::from_millis(20))
                .await
        );
        assert_eq!(progress.slowest(), at(10, 5));
    }

    #[test]
    fn positions_never_go_back() {
        let progress = Progress::new(&["a"]);
        progress.advance("a", at(10, 5));
        progress.advance("a", at(9, 7));
        assert_eq!(progress.slowest(), at(10, 5));
    }
}
