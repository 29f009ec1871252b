//! The command path of people's absences, and the look-up of whom a decision's actor stands
//! in for. Absences are appended like requests' events (one statement, the same table, the same
//! feed) but are few: they are loaded every time, never cached.
//!
//! Whom an approver stands in for is resolved only when a decision is refused because the
//! actor has no place of their own (not an approver, already decided, or the request is not
//! theirs to see): a plain approver's decision costs no look-up.

use approval_aggregates::{
    absences_id, AbsenceCommand, Absences, ApprovalCommand, Decision, DomainError, UserId,
};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, EventStore as _};

use crate::feed::Position;
use crate::ledger::{sql_error, storage_error, CommandMeta, Executed, Ledger, LedgerError};
use crate::store;
use crate::store::events::AppendError;

/// What an absence command did.
#[derive(Debug, Clone)]
pub struct AbsenceExecuted {
    /// The person's absences after the command.
    pub absences: Absences,
    /// The feed position of the appended event, if one was.
    pub position: Option<Position>,
}

impl Ledger {
    /// When `decision` was refused because its actor has no place of their own, the same
    /// decision with the people the actor stands in for now (if any): what to try next.
    pub(crate) async fn as_deputy(
        &self,
        mut decision: Decision,
        result: &Result<Executed, LedgerError>,
    ) -> Result<Option<ApprovalCommand>, LedgerError> {
        let refused_for_want_of_a_place = matches!(
            result,
            Err(LedgerError::Domain(
                DomainError::NotAnApprover | DomainError::AlreadyDecided | DomainError::NotFound
            ))
        );
        if !refused_for_want_of_a_place || decision.authority.principals.is_some() {
            return Ok(None);
        }
        let principals = self
            .principals_of(&decision.actor.user, decision.at)
            .await?;
        if principals.is_empty() {
            return Ok(None);
        }
        decision.authority.principals = Some(principals);
        Ok(Some(ApprovalCommand::Decide(decision)))
    }

    /// The people `user` stands in for at `at`, nearest first.
    pub async fn principals_of(
        &self,
        user: &UserId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<UserId>, LedgerError> {
        approval_projections::absences::principals(&self.pool, user.as_str(), at)
            .await
            .map_err(|e| match e {
                approval_projections::ProjectionError::Database(db) => sql_error(db),
                other => LedgerError::Internal(other.to_string()),
            })
    }

    /// Executes `command` on `person`'s absences and waits until the read models show it.
    pub async fn execute_absence(
        &self,
        person: &UserId,
        command: AbsenceCommand,
        meta: &CommandMeta,
    ) -> Result<AbsenceExecuted, LedgerError> {
        let name = command.name();
        let result = self.append_absence(person, command, meta).await;
        let outcome = match &result {
            Ok(e) if e.position.is_some() => "ok",
            Ok(_) => "noop",
            Err(LedgerError::Domain(_)) => "refused",
            Err(LedgerError::Conflict(_)) => "conflict",
            Err(LedgerError::Unavailable(_)) => "unavailable",
            Err(LedgerError::Internal(_)) => "internal",
        };
        self.metrics.command(name, outcome);
        let executed = result?;
        if let Some(position) = executed.position {
            self.wait_visible(position).await;
        }
        Ok(executed)
    }

    async fn append_absence(
        &self,
        person: &UserId,
        command: AbsenceCommand,
        meta: &CommandMeta,
    ) -> Result<AbsenceExecuted, LedgerError> {
        let aggregate_id = absences_id(person).to_string();
        let metadata = meta.to_map();
        // Two commands on one person's absences at once are rare (it is one person): a lost
        // race is decided again on a fresh load, a few times.
        for _ in 0..=self.settings.conflict_retries {
            let mut context = self
                .absences
                .load_aggregate(&aggregate_id)
                .await
                .map_err(storage_error)?;
            let sequence = context.current_sequence;
            let mut aggregate = std::mem::take(context.aggregate());
            let sink = EventSink::default();
            aggregate
                .handle(command.clone(), &(), &sink)
                .await
                .map_err(LedgerError::Domain)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(AbsenceExecuted {
                    absences: aggregate,
                    position: None,
                });
            }
            match store::events::append_to::<Absences>(
                &self.pool,
                aggregate_id.clone(),
                sequence,
                events,
                &metadata,
            )
            .await
            {
                Ok(position) => {
                    self.signal.committed();
                    return Ok(AbsenceExecuted {
                        absences: aggregate,
                        position,
                    });
                }
                Err(AppendError::Conflict) => continue,
                Err(AppendError::Serialize(e)) => return Err(LedgerError::Internal(e.to_string())),
                Err(AppendError::Database(e)) => return Err(sql_error(e)),
            }
        }
        Err(LedgerError::Conflict(
            "your absences kept changing; try again".into(),
        ))
    }
}
