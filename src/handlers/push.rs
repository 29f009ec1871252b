//! The push handler: when a person gets a new item in their inbox (a submission, a step that
//! opens, a delegation to them) and when their own request reaches a final status, one push job
//! per registered device of theirs. Who that is comes from folding the request's events with the
//! aggregate's own code, before and after the event.

use approval_aggregates::{is_final_type, ApprovalRequest, Status, UserId};
use serde_json::json;
use sqlx::PgPool;

use crate::broker::Envelope;
use crate::feed::interest::Interest;
use crate::feed::FeedEvent;
use crate::handlers::{Handler, HandlerError, Histories, JobSignal};
use crate::store::deliveries::{self, Channel, NewJob};
use crate::store::devices;

/// The handler.
pub struct Push {
    /// The database.
    pub pool: PgPool,
    /// Wakes the scheduler.
    pub jobs: JobSignal,
}

impl Push {
    /// The events that can put an item in someone's inbox or end a request: what its queue is
    /// bound to, and what it and the sweeper look at.
    pub const INTEREST: Interest = Interest::only(|event_type| {
        is_final_type(event_type)
            || matches!(
                event_type,
                "RequestSubmitted" | "StepCompleted" | "ApproverDelegated"
            )
    });
}

/// Who the last event of `history` notifies, and what to tell them.
pub fn notifications(history: &[FeedEvent]) -> Vec<(UserId, String, String)> {
    let Some((last, earlier)) = history.split_last() else {
        return vec![];
    };
    let mut before = ApprovalRequest::default();
    for e in earlier {
        before.fold(e.event.clone());
    }
    let mut after = before.clone();
    after.fold(last.event.clone());
    let Some(request) = after.request.as_ref() else {
        return vec![];
    };
    let (actor, _) = last.event.actor_and_comment();
    if let Some(status) = last.event.final_status() {
        if actor == Some(&request.requester) {
            return vec![];
        }
        let title = match status {
            Status::Approved => "Approved",
            Status::Rejected => "Rejected",
            Status::Returned => "Returned to you",
            Status::Withdrawn => "Withdrawn",
            Status::Cancelled => "Cancelled",
            Status::Expired => "Expired",
            Status::Pending => "Updated",
        };
        return vec![(
            request.requester.clone(),
            title.to_owned(),
            request.title.clone(),
        )];
    }
    let already: Vec<&UserId> = before
        .request
        .as_ref()
        .map(|r| r.pending_approvers())
        .unwrap_or_default();
    let amount = request
        .amount
        .as_ref()
        .map(|m| format!(" ({} {})", m.value, m.currency))
        .unwrap_or_default();
    request
        .pending_approvers()
        .into_iter()
        .filter(|user| !already.contains(user))
        .map(|user| {
            (
                user.clone(),
                "Approval needed".to_owned(),
                format!("{}{} from {}", request.title, amount, request.requester),
            )
        })
        .collect()
}

impl Handler for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    /// Who each message's event notifies, from one read of the batch's histories, then one
    /// look-up of their devices and one insert of the jobs, on one connection.
    async fn handle(&self, batch: &[Envelope]) -> Result<u64, HandlerError> {
        let notifying: Vec<&Envelope> = batch
            .iter()
            .filter(|e| Self::INTEREST.wants(&e.event_type))
            .collect();
        if notifying.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.acquire().await?;
        let histories = Histories::read(&mut conn, &notifying).await?;
        let mut notes = Vec::with_capacity(notifying.len());
        for envelope in notifying {
            let (history, index) = histories.of(envelope)?;
            let told = notifications(&history[..=index]);
            if !told.is_empty() {
                notes.push((&history[index], told));
            }
        }
        let mut users: Vec<String> = notes
            .iter()
            .flat_map(|(_, told)| told.iter().map(|(u, _, _)| u.0.clone()))
            .collect();
        users.sort_unstable();
        users.dedup();
        if users.is_empty() {
            return Ok(0);
        }
        let devices = devices::of_users(&mut *conn, &users).await?;
        let mut jobs = vec![];
        for (event, told) in &notes {
            for device in &devices {
                let Some((_, title, text)) = told.iter().find(|(u, _, _)| u.0 == device.user_id)
                else {
                    continue;
                };
                jobs.push(NewJob {
                    channel: Channel::Push,
                    event_id: event.event_id,
                    request_id: event.request_id.0,
                    sequence: event.sequence,
                    target: device.token.clone(),
                    body: json!({"message": {
                        "token": device.token,
                        "notification": {"title": title, "body": text},
                        "data": {
                            "request_id": event.request_id.to_string(),
                            "event_id": event.event_id.to_string(),
                            "deep_link": format!("approvals://requests/{}", event.request_id),
                        }
                    }}),
                    committed_at: event.recorded_at,
                });
            }
        }
        let created = deliveries::create(&mut *conn, &jobs).await?;
        if created > 0 {
            self.jobs.notify();
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::Push;

    #[test]
    fn only_inbox_changes_and_final_statuses_notify() {
        assert!(Push::INTEREST.wants("RequestSubmitted"));
        assert!(Push::INTEREST.wants("RequestApproved"));
        assert!(!Push::INTEREST.wants("ApprovalRecorded"));
    }
}
