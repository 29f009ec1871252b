//! The legacy-sync handler: for every status change of a request and every escalation of an
//! overdue step (and, where a system asks for them, every completed step) a callback job to the
//! request's system, signed at send time.
//!
//! The job's body is built from the event store, not from the message: on a message for event
//! N of a request, every callback-worthy event up to N gets its job (idempotently), so even a
//! message that arrives before an earlier one cannot let a later callback overtake.

use std::collections::BTreeMap;
use std::sync::Arc;

use approval_aggregates::{is_final_type, ApprovalEvent, Status};
use serde_json::json;
use sqlx::PgPool;

use crate::broker::Envelope;
use crate::config::SystemSettings;
use crate::feed::interest::Interest;
use crate::feed::FeedEvent;
use crate::handlers::{Handler, HandlerError, Histories, JobSignal};
use crate::store::deliveries::{self, Channel, NewJob};

/// The handler.
pub struct LegacySync {
    /// The database.
    pub pool: PgPool,
    /// The systems, by key.
    pub systems: Arc<BTreeMap<String, SystemSettings>>,
    /// Wakes the scheduler.
    pub jobs: JobSignal,
}

/// The callback `type` of an event, if the system gets a callback for it.
pub fn callback_type(event: &ApprovalEvent, progress: bool) -> Option<&'static str> {
    match event.final_status() {
        Some(Status::Approved) => Some("approval.approved"),
        Some(Status::Rejected) => Some("approval.rejected"),
        Some(Status::Returned) => Some("approval.returned"),
        Some(Status::Withdrawn) => Some("approval.withdrawn"),
        Some(Status::Cancelled) => Some("approval.cancelled"),
        Some(Status::Expired) => Some("approval.expired"),
        Some(Status::Pending) => None,
        None if matches!(event, ApprovalEvent::StepEscalated { .. }) => Some("approval.escalated"),
        None if progress && matches!(event, ApprovalEvent::StepCompleted { .. }) => {
            Some("approval.step_completed")
        }
        None if matches!(event, ApprovalEvent::InfoRequested { .. }) => {
            Some("approval.info_requested")
        }
        None if matches!(event, ApprovalEvent::RequestResubmitted { .. }) => {
            Some("approval.resubmitted")
        }
        None => None,
    }
}

/// The callback body of `history[index]`, a request from `system` under `external_ref`.
fn body(
    history: &[FeedEvent],
    index: usize,
    kind: &str,
    system: &str,
    external_ref: &str,
) -> serde_json::Value {
    let event = &history[index];
    let (mut decided_by, mut comment) = event.event.actor_and_comment();
    let step = match &event.event {
        ApprovalEvent::StepCompleted { step, .. } => {
            // The approval that completed the step is the event just before it.
            if let Some(ApprovalEvent::ApprovalRecorded {
                approver,
                comment: c,
                ..
            }) = index.checked_sub(1).map(|i| &history[i].event)
            {
                decided_by = Some(approver);
                comment = c.as_deref();
            }
            Some(*step)
        }
        _ => None,
    };
    let step = match &event.event {
        ApprovalEvent::StepEscalated { step, .. } => Some(*step),
        _ => step,
    };
    let status = event.event.status_after().unwrap_or(Status::Pending);
    let mut body = json!({
        "event_id": event.event_id,
        "type": kind,
        "request_id": event.request_id,
        "system": system,
        "external_ref": external_ref,
        "status": status.as_str(),
        "decided_by": decided_by,
        "comment": comment,
        "occurred_at": event.event.at(),
        "version": event.sequence,
        "step": step,
    });
    if let ApprovalEvent::StepEscalated { added, due_at, .. } = &event.event {
        body["escalated_to"] = json!(added);
        body["due_at"] = json!(due_at);
    }
    match &event.event {
        ApprovalEvent::InfoRequested {
            step: s,
            asked_by,
            question,
            ..
        } => {
            body["step"] = json!(s);
            body["asked_by"] = json!(asked_by);
            body["question"] = json!(question);
        }
        ApprovalEvent::RequestResubmitted { round, .. } => body["round"] = json!(round),
        _ => {}
    }
    body
}

impl LegacySync {
    /// The events that can have a callback: every status change, every escalation, and step
    /// progress for the systems that ask for it. What its queue is bound to; [`callback_type`]
    /// is `None` for every other type, so a message of another type needs no look at the store.
    pub const INTEREST: Interest = Interest::only(|event_type| {
        is_final_type(event_type)
            || matches!(
                event_type,
                "StepCompleted" | "StepEscalated" | "InfoRequested" | "RequestResubmitted"
            )
    });
}

/// Whether an event of type `event_type` can have a callback for a system that does (or does
/// not) ask for step progress.
pub fn may_call_back(event_type: &str, progress: bool) -> bool {
    LegacySync::INTEREST.wants(event_type) && (progress || event_type != "StepCompleted")
}

impl Handler for LegacySync {
    fn name(&self) -> &'static str {
        "legacy-sync"
    }

    /// For every request of the batch, the jobs of every callback-worthy event up to its latest
    /// one in the batch: one read of the histories and one insert for the whole batch.
    async fn handle(&self, batch: &[Envelope]) -> Result<u64, HandlerError> {
        let mut worthy = Vec::with_capacity(batch.len());
        for envelope in batch {
            let Some(system) = self.systems.get(&envelope.system) else {
                return Err(HandlerError::Permanent(format!(
                    "system {:?} is not configured",
                    envelope.system
                )));
            };
            if may_call_back(&envelope.event_type, system.progress_callbacks) {
                worthy.push((envelope, system.progress_callbacks));
            }
        }
        if worthy.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.acquire().await?;
        let envelopes: Vec<&Envelope> = worthy.iter().map(|(e, _)| *e).collect();
        let histories = Histories::read(&mut conn, &envelopes).await?;
        let mut jobs: Vec<NewJob> = vec![];
        for (envelope, progress) in &worthy {
            let (history, index) = histories.of(envelope)?;
            // The latest message of a request makes the jobs of all its events up to there.
            if index + 1 != history.len() {
                continue;
            }
            jobs.extend(
                history[..=index]
                    .iter()
                    .enumerate()
                    .filter_map(|(index, event)| {
                        let kind = callback_type(&event.event, *progress)?;
                        Some(NewJob {
                            channel: Channel::Callback,
                            event_id: event.event_id,
                            request_id: event.request_id.0,
                            sequence: event.sequence,
                            target: envelope.system.clone(),
                            body: body(
                                history,
                                index,
                                kind,
                                &envelope.system,
                                &envelope.external_ref,
                            ),
                            committed_at: event.recorded_at,
                        })
                    }),
            );
        }
        let created = deliveries::create(&mut *conn, &jobs).await?;
        if created > 0 {
            self.jobs.notify();
        }
        Ok(created)
    }
}
