//! The push handler: when a person gets a new item in their inbox (a submission, a step that
//! opens, a delegation to them, an escalation to them), when a step they have yet to decide is
//! due soon or overdue (a `ReminderSent`), and when their own request reaches a final status,
//! one push job per registered device of theirs. Who that is comes from folding the request's events with the
//! aggregate's own code, before and after the event.

use std::time::{Duration, Instant};

use approval_aggregates::{
    is_final_type, ApprovalEvent, ApprovalRequest, Reminder, Status, UserId,
};
use serde_json::json;
use sqlx::PgPool;

use crate::broker::Envelope;
use crate::feed::interest::Interest;
use crate::feed::FeedEvent;
use crate::handlers::handoff::Room;
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
                "RequestSubmitted"
                    | "StepCompleted"
                    | "ApproverDelegated"
                    | "StepEscalated"
                    | "ReminderSent"
                    | "InfoRequested"
                    | "InfoProvided"
                    | "RequestResubmitted"
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
    if let ApprovalEvent::ReminderSent {
        reminder,
        due_at,
        to,
        at,
        ..
    } = &last.event
    {
        let (title, text) = match reminder {
            Reminder::Before(_) => (
                format!("Due in {}", roughly((*due_at - *at).num_seconds())),
                request.title.clone(),
            ),
            Reminder::Overdue => (
                "Overdue".to_owned(),
                format!(
                    "{} was due at {}",
                    request.title,
                    due_at.format("%Y-%m-%d %H:%M UTC")
                ),
            ),
        };
        return to
            .iter()
            .map(|user| (user.clone(), title.clone(), text.clone()))
            .collect();
    }
    if let Some(told) = conversation(&last.event, request) {
        return told;
    }
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
    let title = if matches!(last.event, ApprovalEvent::StepEscalated { .. }) {
        "Escalated to you: approval needed"
    } else {
        "Approval needed"
    };
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
                title.to_owned(),
                format!("{}{} from {}", request.title, amount, request.requester),
            )
        })
        .collect()
}

/// A question tells the requester, an answer the asker; `None` for any other event. A
/// resubmission is a new item for its first step's approvers, as a submission is.
fn conversation(
    event: &ApprovalEvent,
    request: &approval_aggregates::Request,
) -> Option<Vec<(UserId, String, String)>> {
    match event {
        ApprovalEvent::InfoRequested {
            asked_by, question, ..
        } => Some(vec![(
            request.requester.clone(),
            format!("Question from {asked_by}"),
            format!("{}: {question}", request.title),
        )]),
        ApprovalEvent::InfoProvided {
            asked_by,
            answered_by,
            answer,
            ..
        } => Some(vec![(
            asked_by.clone(),
            format!("Answer from {answered_by}"),
            format!("{}: {answer}", request.title),
        )]),
        _ => None,
    }
}

/// Whom to tell, with the notification's title and text.
type Note = (UserId, String, String);

/// Adds to each note of a new item or reminder the deputies (chains followed) of the approvers
/// it tells, as they stand now, but never a deputy who submitted the request: what lands in an
/// approver's inbox lands in their deputy's too. One query for the batch.
async fn tell_deputies(
    conn: &mut sqlx::PgConnection,
    notes: &mut [(&FeedEvent, Vec<Note>)],
    histories: &Histories,
) -> Result<(), HandlerError> {
    let mut approvers: Vec<String> = notes
        .iter()
        .filter(|(event, _)| event.event.final_status().is_none())
        .flat_map(|(_, told)| told.iter().map(|(u, _, _)| u.0.clone()))
        .collect();
    approvers.sort_unstable();
    approvers.dedup();
    if approvers.is_empty() {
        return Ok(());
    }
    let deputies =
        approval_projections::absences::deputies_of(&mut *conn, &approvers, chrono::Utc::now())
            .await
            .map_err(|e| match e {
                approval_projections::ProjectionError::Database(db) => HandlerError::from(db),
                other => HandlerError::Permanent(other.to_string()),
            })?;
    if deputies.is_empty() {
        return Ok(());
    }
    for (event, told) in notes.iter_mut() {
        if event.event.final_status().is_some() {
            continue;
        }
        let requester = histories.requester_of(event.request_id.0);
        let mut added = vec![];
        for (user, title, text) in told.iter() {
            for (_, deputy) in deputies.iter().filter(|(origin, _)| *origin == user.0) {
                let deputy = UserId::new(deputy.clone());
                let known = told.iter().any(|(u, _, _)| *u == deputy)
                    || added.iter().any(|(u, _, _): &Note| *u == deputy);
                if !known && requester != Some(&deputy) {
                    added.push((deputy, title.clone(), text.clone()));
                }
            }
        }
        told.extend(added);
    }
    Ok(())
}

/// A time left, roughly, for a person: `2 d`, `3 h`, `45 min`, `30 s`.
fn roughly(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        s if s >= 86_400 => format!("{} d", (s + 43_200) / 86_400),
        s if s >= 3_600 => format!("{} h", (s + 1_800) / 3_600),
        s if s >= 60 => format!("{} min", (s + 30) / 60),
        s => format!("{s} s"),
    }
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
        tell_deputies(&mut conn, &mut notes, &histories).await?;
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
        // What the scheduler of this process has room for is made leased and handed to it
        // (no claim needed); the rest waits in the table to be claimed.
        let room = self.jobs.room().unwrap_or(Room {
            jobs: 0,
            lease: Duration::ZERO,
        });
        let (leased, claimable) = jobs.split_at(room.jobs.min(jobs.len()));
        let since = Instant::now();
        let handed = deliveries::create_leased(&mut *conn, leased, room.lease).await?;
        let created = handed.len() as u64 + deliveries::create(&mut *conn, claimable).await?;
        self.jobs.hand(handed, room.lease, since);
        if created > 0 && !claimable.is_empty() {
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
        assert!(Push::INTEREST.wants("ReminderSent") && Push::INTEREST.wants("StepEscalated"));
    }

    #[test]
    fn a_time_left_reads_roughly() {
        assert_eq!(super::roughly(3_600), "1 h");
        assert_eq!(super::roughly(3_500), "58 min");
        assert_eq!(super::roughly(2 * 86_400 + 100), "2 d");
        assert_eq!(super::roughly(-5), "0 s");
    }
}
