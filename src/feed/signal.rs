//! How every process learns of commits, whatever its roles: one mechanism.
//!
//! A process that commits announces; every process listens. In the process that commits, the
//! announcement wakes its own readers at once (a watch counter). Across processes a small task
//! sends `NOTIFY` after local commits (coalesced, at most one per [`NOTIFY_GAP`], and outside the
//! committing transaction: a NOTIFY inside it would serialize every commit on PostgreSQL's
//! notification lock), and a listener in every process passes the other processes' notifications
//! to its own readers (its own carry its id and are passed over).
//!
//! Two things are announced: events appended (the command path, anywhere), which wake the
//! feed's readers; and the read models' progress (the projector), which carries the position
//! every read model has passed, so that a process without the projector releases the commands
//! waiting to read their own writes without asking the database ([`crate::feed::progress`]).
//! Readers also poll, so a lost notification only costs latency, never an event.

use std::sync::Arc;
use std::time::Duration;

use approval_feed::Position;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::shutdown::pause;

/// The notification channel; channels are per database, so tests on their own databases never
/// wake each other.
pub const CHANNEL: &str = "approval_ledger_events";

/// The shortest gap between two NOTIFYs from one process.
const NOTIFY_GAP: Duration = Duration::from_millis(5);

/// What is still to be announced to the other processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pending {
    events: bool,
    progress: Option<Position>,
}

/// What one notification says, as its payload spells it: `<origin>[ e][ p <tx_id> <global_id>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Notice<'a> {
    origin: &'a str,
    events: bool,
    progress: Option<Position>,
}

impl Notice<'_> {
    fn payload(origin: &str, pending: Pending) -> String {
        let mut payload = origin.to_owned();
        if pending.events {
            payload.push_str(" e");
        }
        if let Some(p) = pending.progress {
            payload.push_str(&format!(" p {} {}", p.tx_id, p.global_id));
        }
        payload
    }

    /// Reads a payload; a part it does not understand reads as "events", which only wakes.
    fn parse(payload: &str) -> Notice<'_> {
        let mut words = payload.split(' ');
        let origin = words.next().unwrap_or_default();
        let mut notice = Notice {
            origin,
            events: false,
            progress: None,
        };
        while let Some(word) = words.next() {
            match word {
                "e" => notice.events = true,
                "p" => {
                    let tx_id = words.next().and_then(|w| w.parse().ok());
                    let global_id = words.next().and_then(|w| w.parse().ok());
                    match (tx_id, global_id) {
                        (Some(tx_id), Some(global_id)) => {
                            notice.progress = Some(Position { tx_id, global_id })
                        }
                        _ => notice.events = true,
                    }
                }
                _ => notice.events = true,
            }
        }
        // A payload of its origin alone (what an older version sends) says "events".
        if notice.progress.is_none() {
            notice.events |= payload == origin;
        }
        notice
    }
}

/// Announces commits and hears of them.
#[derive(Clone, Debug)]
pub struct CommitSignal {
    /// Bumped for every commit of events, here or elsewhere: what feed readers wait on.
    events: Arc<watch::Sender<u64>>,
    /// The read models' progress as another process announced it.
    progress: Arc<watch::Sender<Position>>,
    /// Bumped when notifications may have been missed (the listener reconnected).
    resync: Arc<watch::Sender<u64>>,
    pending: Arc<watch::Sender<Pending>>,
    /// This process's NOTIFY payloads start with it, so that it does not hear itself.
    origin: Arc<str>,
}

impl Default for CommitSignal {
    fn default() -> Self {
        Self {
            events: Arc::new(watch::channel(0).0),
            progress: Arc::new(watch::channel(Position::START).0),
            resync: Arc::new(watch::channel(0).0),
            pending: Arc::new(watch::channel(Pending::default()).0),
            origin: uuid::Uuid::new_v4().simple().to_string().into(),
        }
    }
}

impl CommitSignal {
    /// Events were committed here: wake local readers and tell the other processes.
    pub fn committed(&self) {
        self.wake();
        self.pending.send_modify(|p| p.events = true);
    }

    /// Every read model has applied the feed up to `to` here: tell the other processes.
    pub fn progressed(&self, to: Position) {
        self.pending
            .send_modify(|p| p.progress = p.progress.max(Some(to)));
    }

    /// Wakes local feed readers.
    fn wake(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every commit of events after it was made.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// A receiver of the read models' progress announced by other processes.
    pub fn heard_progress(&self) -> watch::Receiver<Position> {
        self.progress.subscribe()
    }

    /// A receiver that changes when notifications may have been lost.
    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
    }

    /// Sends what this process committed to the others until `stop`, at most one NOTIFY per
    /// [`NOTIFY_GAP`].
    pub async fn announce(self, pool: PgPool, stop: CancellationToken) {
        let mut pending = self.pending.subscribe();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = pending.changed() => if changed.is_err() { return },
            }
            let what = self.pending.send_replace(Pending::default());
            pending.borrow_and_update();
            if what == Pending::default() {
                continue;
            }
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(Notice::payload(&self.origin, what))
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "could not send the commit notification");
            }
            pause(&stop, NOTIFY_GAP).await;
        }
    }

    /// Hears the other processes' announcements until `stop`, reconnecting after failures.
    pub async fn listen(self, pool: PgPool, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for commits; readers poll meanwhile");
                    pause(&stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed");
                pause(&stop, backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            self.missed();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    message = listener.try_recv() => match message {
                        Ok(Some(n)) => self.heard(n.payload()),
                        // sqlx reconnected: notifications may have been lost meanwhile.
                        Ok(None) => self.missed(),
                        Err(e) => {
                            tracing::warn!(error = %e, "commit listener lost its connection");
                            break;
                        }
                    }
                }
            }
        }
    }

    fn missed(&self) {
        self.wake();
        self.resync.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn heard(&self, payload: &str) {
        let notice = Notice::parse(payload);
        // This process's own readers heard its commits when they were made.
        if notice.origin == &*self.origin {
            return;
        }
        if notice.events {
            self.wake();
        }
        if let Some(to) = notice.progress {
            self.progress.send_if_modified(|at| {
                let moved = to > *at;
                *at = (*at).max(to);
                moved
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_says_what_was_committed_and_reads_back() {
        let at = Position {
            tx_id: 812,
            global_id: 40,
        };
        let pending = Pending {
            events: true,
            progress: Some(at),
        };
        let payload = Notice::payload("abc", pending);
        assert_eq!(payload, "abc e p 812 40");
        let notice = Notice::parse(&payload);
        assert_eq!(
            (notice.origin, notice.events, notice.progress),
            ("abc", true, Some(at))
        );
        // An older process's payload is its origin alone: it reads as "events", and so does a
        // part this version does not know.
        for other in ["abc", "abc x"] {
            let notice = Notice::parse(other);
            assert!(notice.events && notice.progress.is_none(), "{other}");
        }
    }

    #[tokio::test]
    async fn another_process_is_heard_and_this_one_is_not() {
        let signal = CommitSignal::default();
        let mut events = signal.subscribe();
        let progress = signal.heard_progress();
        signal.heard(&format!("{} e p 9 9", signal.origin));
        assert!(!events.has_changed().unwrap_or(true));
        signal.heard("other p 10 3");
        assert_eq!(
            *progress.borrow(),
            Position {
                tx_id: 10,
                global_id: 3
            }
        );
        assert!(!events.has_changed().unwrap_or(true));
        signal.heard("other e");
        assert!(events.has_changed().unwrap_or(false));
        events.borrow_and_update();
        // Progress never goes back.
        signal.heard("other p 4 1");
        assert_eq!(
            *progress.borrow(),
            Position {
                tx_id: 10,
                global_id: 3
            }
        );
    }
}
