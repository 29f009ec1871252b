//! How far each read model has read the feed, so that a command's caller can read their own
//! write: the command path waits, bounded, until every read model has passed its event.
//!
//! Where the read models run in this process, their runner reports here directly. Where they run
//! in another (`serve --role api`), [`Progress::follow`] takes the position the runner announces
//! after each batch ([`crate::feed::signal`]), and reads the checkpoints themselves only when an
//! announcement may have been missed and now and then.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use approval_feed::Position;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::feed::checkpoints;
use crate::feed::signal::CommitSignal;

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

    /// Every read model has applied everything up to `to`.
    pub fn advance_all(&self, to: Position) {
        for name in self.positions.keys() {
            self.advance(name, to);
        }
    }

    /// Keeps the positions current in a process that does not run the read models, until
    /// `stop`: from the positions `signal` hears announced, and from the checkpoints table when
    /// an announcement may have been missed (the listener reconnected), every `poll` while a
    /// command waits, and every ten times that otherwise.
    pub async fn follow(
        self,
        signal: CommitSignal,
        pool: PgPool,
        poll: Duration,
        stop: CancellationToken,
    ) {
        let mut heard = signal.heard_progress();
        let mut resyncs = signal.resyncs();
        loop {
            match checkpoints::all(&pool).await {
                Ok(rows) => {
                    for (name, position) in rows {
                        self.advance(&name, position);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the read models' checkpoints"),
            }
            let read_again = tokio::time::sleep(if self.waiting.load(Ordering::Relaxed) > 0 {
                poll
            } else {
                poll * 10
            });
            tokio::pin!(read_again);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = &mut read_again => break,
                    _ = resyncs.changed() => break,
                    changed = heard.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let to = *heard.borrow_and_update();
                        self.advance_all(to);
                    }
                }
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
    }

    #[test]
    fn positions_never_go_back() {
        let progress = Progress::new(&["a"]);
        progress.advance("a", at(10, 5));
        progress.advance("a", at(9, 7));
    }
}
