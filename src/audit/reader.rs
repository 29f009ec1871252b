//! The audit reader: a feed reader of the worker role that folds every event's stored hash into
//! one running hash over the global feed, records the last event it saw of each request, and
//! writes a checkpoint of the running hash every `audit.checkpoint_interval_secs`.
//!
//! It runs like a projection (`crate::projector`): its state moves in the same transaction as
//! its feed checkpoint, so each event is folded exactly once. Unlike the read models it is never
//! rebuilt: folding a tampered store afresh would bless the tampering. Commands do not wait for
//! it (it is not among the projections of read-your-writes).

use std::collections::HashMap;

use approval_projections::{LoadedStates, Projection, ProjectionError};

use crate::feed::FeedEvent;
use sqlx::PgConnection;

use crate::audit::chain;
use crate::config::AuditSettings;
use crate::store::audit::{self as sql, Head};

/// The audit reader.
#[derive(Debug, Clone)]
pub struct AuditReader {
    checkpoint_interval_secs: u64,
}

impl AuditReader {
    /// Its name: the key of its feed checkpoint.
    pub const NAME: &'static str = "audit";

    /// The reader with the checkpoint interval of `settings`.
    pub fn new(settings: &AuditSettings) -> Self {
        Self {
            checkpoint_interval_secs: settings.checkpoint_interval_secs,
        }
    }
}

impl Projection for AuditReader {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_chain", "audit_heads", "audit_checkpoints"]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[FeedEvent],
        _states: Option<LoadedStates>,
    ) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
        let stored = sql::heads_of_events(conn, &ids).await?;
        let mut state = sql::chain(conn).await?;
        let mut heads: Vec<Head> = Vec::new();
        let mut slot_of: HashMap<(&str, &str), usize> = HashMap::new();
        for e in events {
            let head = stored.get(&e.event_id).ok_or_else(|| {
                ProjectionError::Inconsistent(format!(
                    "event {} (request {} sequence {}) was delivered by the feed but is not \
                     in the store",
                    e.event_id, e.request_id, e.sequence
                ))
            })?;
            state.running_hash =
                chain::running_hash(&state.running_hash, e.position, &head.hash).to_vec();
            state.event_count += 1;
            state.position = e.position;
            let key = (head.aggregate_type.as_str(), head.aggregate_id.as_str());
            match slot_of.get(&key) {
                Some(&slot) => heads[slot] = head.clone(),
                None => {
                    slot_of.insert(key, heads.len());
                    heads.push(head.clone());
                }
            }
        }
        sql::save_heads(conn, &heads).await?;
        sql::advance(conn, &state, self.checkpoint_interval_secs).await?;
        Ok(())
    }
}
