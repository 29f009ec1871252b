//! Waking the feed's readers when events commit.
//!
//! In one process the command path bumps a counter that every reader watches. Across processes a
//! small task sends `NOTIFY` after local commits (coalesced, and outside the append
//! transaction: a NOTIFY inside it would serialize every commit on PostgreSQL's notification
//! lock), and each process `LISTEN`s and bumps its own counter for the other processes' NOTIFYs
//! (its own carry its id and are passed over: its readers were woken when it committed).
//! Readers also poll, so a lost wake-up only costs latency, never an event.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The notification channel; channels are per database, so tests on their own databases never
/// wake each other.
pub const CHANNEL: &str = "approval_ledger_events";

/// The shortest gap between two NOTIFYs from one process.
const NOTIFY_GAP: Duration = Duration::from_millis(5);

/// Wakes feed readers.
#[derive(Clone, Debug)]
pub struct CommitSignal {
    wake: Arc<watch::Sender<u64>>,
    outbound: Arc<watch::Sender<u64>>,
    /// This process's NOTIFY payload, so that it does not wake itself a second time.
    origin: Arc<str>,
}

impl Default for CommitSignal {
    fn default() -> Self {
        Self {
            wake: Arc::new(watch::channel(0).0),
            outbound: Arc::new(watch::channel(0).0),
            origin: uuid::Uuid::new_v4().simple().to_string().into(),
        }
    }
}

impl CommitSignal {
    /// Events were committed here: wake local readers and tell other processes.
    pub fn committed(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
        self.outbound.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Events were committed elsewhere: wake local readers only.
    pub fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every wake-up after it was made.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Sends a NOTIFY after local commits until `stop`, at most one per [`NOTIFY_GAP`].
    pub async fn notify_other_processes(self, pool: PgPool, stop: CancellationToken) {
        let mut commits = self.outbound.subscribe();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = commits.changed() => if changed.is_err() { return },
            }
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&*self.origin)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "could not send the commit notification");
            }
            tokio::time::sleep(NOTIFY_GAP).await;
        }
    }

    /// Listens for other processes' commits until `stop`, reconnecting after failures.
    pub async fn listen_to_other_processes(self, pool: PgPool, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for commits; readers poll meanwhile");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed");
                continue;
            }
            backoff = Duration::from_millis(100);
            // A reconnect may have missed notifications.
            self.wake();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    message = listener.try_recv() => match message {
                        // This process's own readers were woken when it committed.
                        Ok(Some(n)) if n.payload() == &*self.origin => {}
                        Ok(Some(_)) => self.wake(),
                        Ok(None) => { self.wake(); } // reconnected by sqlx
                        Err(e) => {
                            tracing::warn!(error = %e, "commit listener lost its connection");
                            break;
                        }
                    }
                }
            }
        }
    }
}
