//! The timer loop (worker role): every `[sla] tick`, or sooner when the earliest timer falls
//! due within it, it fires the timers that fell due
//! (reminders, overdue notices, escalations, expiries) by sending each one's command through the
//! command path, so the appended event is the record that it fired.
//!
//! The timers come from a read model (`rm_timers`, see `approval_projections::timers`), claimed
//! with `FOR UPDATE SKIP LOCKED` and deleted in the transaction that claimed them, once fired:
//! two workers never hold the same timer, and a worker killed mid-round leaves its timers to the
//! next round. Should a timer fire twice all the same (the read model had not yet seen the first
//! firing), the aggregate refuses the second: the step is no longer current, the reminder was
//! sent, the request is final.

use std::sync::Arc;
use std::time::Duration;

use approval_aggregates::{DomainError, RequestId, TimerKind};
use approval_projections::timers::{self, DueTimer};
use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::SlaSettings;
use crate::ledger::{CommandMeta, Ledger, LedgerError};
use crate::metrics::Metrics;

/// The shortest wait between rounds: timers falling due within it fire in one round, so the
/// rounds stay few however many moments the timers name.
const GATHER: Duration = Duration::from_millis(20);

/// How many requests' timers one round fires at once.
const FIRING_AT_ONCE: usize = 16;

/// What the timer loop needs.
pub struct TimerLoop {
    /// The command path.
    pub ledger: Ledger,
    /// The database, for the timers table.
    pub pool: PgPool,
    /// The tick and the batch.
    pub settings: SlaSettings,
    /// Fired timers, their lag, overdue steps.
    pub metrics: Arc<Metrics>,
}

/// What became of one due timer.
enum Fired {
    /// Its event was appended, or the request refused it: either way it is done.
    Done,
    /// It could not be fired now (the database, a race still running): the next round tries.
    Later,
}

impl TimerLoop {
    /// Fires due timers every tick until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let tick = self.settings.tick.to_std().max(Duration::from_millis(100));
        let mut wait = tick;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // A full round may have left more due: go on at once until one is not full. A round
            // whose timers must wait (a race still running) waits for the next tick instead.
            loop {
                match self.round().await {
                    Ok(done) if done >= self.settings.batch && !stop.is_cancelled() => {}
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fire the due timers");
                        break;
                    }
                }
            }
            // Wake when the next timer falls due, if that is within the tick, so a timer fires
            // moments after it is due rather than up to a tick later. Ones due already that
            // this round left (they must wait) are tried again then, or after the tick: no spin.
            let now = Utc::now();
            wait = tick;
            match timers::overdue_steps_and_next(&self.pool, now).await {
                Ok((count, next)) => {
                    self.metrics.overdue_steps.set(count);
                    if let Some(until) = next.and_then(|at| (at - now).to_std().ok()) {
                        wait = wait.min(until.max(GATHER));
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot count the overdue steps"),
            }
        }
    }

    /// One round: claims due timers, fires each, deletes the ones done. Returns how many were
    /// done.
    async fn round(&self) -> Result<i64, approval_projections::ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let due = timers::claim_due(&mut tx, Utc::now(), self.settings.batch).await?;
        if due.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        // A request's timers in their order (one command after the other), different requests'
        // at once: the round's transaction holds its timers' row locks and, like every open
        // transaction, the feed's horizon (every feed reader waits for it), so it must be short.
        let mut requests: Vec<Vec<&DueTimer>> = vec![];
        for timer in &due {
            match requests
                .iter_mut()
                .find(|r| r[0].request_id == timer.request_id)
            {
                Some(timers) => timers.push(timer),
                None => requests.push(vec![timer]),
            }
        }
        let mut done: Vec<&DueTimer> = Vec::with_capacity(due.len());
        for some in requests.chunks(FIRING_AT_ONCE) {
            let fired = futures_util::future::join_all(
                some.iter().map(|timers| self.fire_in_order(timers)),
            )
            .await;
            done.extend(fired.into_iter().flatten());
        }
        timers::delete(&mut tx, &done).await?;
        tx.commit().await?;
        Ok(i64::try_from(done.len()).unwrap_or(i64::MAX))
    }

    /// Fires `timers`, one request's, in their order; the ones done. A timer that must wait
    /// holds back the later ones.
    async fn fire_in_order<'a>(&self, timers: &[&'a DueTimer]) -> Vec<&'a DueTimer> {
        let mut done = Vec::with_capacity(timers.len());
        for &timer in timers {
            match self.fire(timer).await {
                Fired::Done => done.push(timer),
                Fired::Later => break,
            }
        }
        done
    }

    /// Sends `due`'s command to its request.
    async fn fire(&self, due: &DueTimer) -> Fired {
        let Some(timer) = due.timer.as_ref() else {
            tracing::warn!(request = %due.request_id, timer = %due.key, "an unknown timer is dropped");
            return Fired::Done;
        };
        let kind = timer.kind.name();
        let meta = CommandMeta {
            system: Some(match timer.kind {
                TimerKind::Expiry => "approval-ledger:expiry".into(),
                _ => "approval-ledger:timers".into(),
            }),
            ..CommandMeta::default()
        };
        let now = Utc::now();
        let command = timer.command(now);
        match self
            .ledger
            .execute_unseen(RequestId(due.request_id), command, &meta)
            .await
        {
            Ok(executed) if executed.written => {
                let lag = (now - timer.fire_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                self.metrics.timer(kind, Some(lag));
                tracing::info!(request = %due.request_id, timer = kind, lag_s = lag, "a timer fired");
                Fired::Done
            }
            Ok(_) => Fired::Done,
            // Due by the table but not by the request: a clock read apart; try again.
            Err(LedgerError::Domain(DomainError::NotDue)) => Fired::Later,
            Err(LedgerError::Domain(refusal)) => {
                self.metrics.timer(kind, None);
                tracing::debug!(request = %due.request_id, timer = kind, reason = %refusal, "a timer no longer applies");
                Fired::Done
            }
            // Another command kept winning the race; the next round sees where it ended.
            Err(LedgerError::Conflict(_)) => Fired::Later,
            Err(e) => {
                tracing::warn!(request = %due.request_id, timer = kind, error = %e, "a timer could not fire; it will again");
                Fired::Later
            }
        }
    }
}
