//! Expires pending requests whose due time has passed. The aggregate decides (`Expire` is refused
//! unless the request is pending and due), so several workers running this at once are harmless.

use std::time::Duration;

use approval_aggregates::{ApprovalCommand, RequestId};
use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::ledger::{CommandMeta, Ledger, LedgerError};

/// Requests expired per round.
const ROUND: i64 = 200;

/// Looks for overdue requests every `every` until `stop`.
pub async fn run(ledger: Ledger, pool: PgPool, every: Duration, stop: CancellationToken) {
    let meta = CommandMeta {
        system: Some("approval-ledger:expiry".into()),
        ..CommandMeta::default()
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = Utc::now();
        let due = match approval_projections::requests::overdue(&pool, now, ROUND).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for overdue requests");
                continue;
            }
        };
        for id in due {
            match ledger
                .execute_unseen(RequestId(id), ApprovalCommand::Expire { at: now }, &meta)
                .await
            {
                Ok(_) => tracing::info!(request = %id, "expired an overdue request"),
                Err(LedgerError::Domain(_) | LedgerError::Conflict(_)) => {}
                Err(e) => tracing::warn!(request = %id, error = %e, "could not expire a request"),
            }
        }
    }
}
