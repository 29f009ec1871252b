//! The `ApprovalRequest` aggregate: its state, the rules in `handle`, the assignments in `apply`.
//!
//! `handle` decides; `apply` only assigns, so folding stored events never re-judges them. The
//! read side folds events with this same `apply` and asks the same questions
//! (`pending_approvers`, `participants`), so no rule lives twice.

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::{
    ApprovalCommand, Cancellation, Decision, Delegation, Reassignment, Submission, Withdrawal,
};
use crate::conversation::{Attachment, OpenQuestion, Round};
use crate::error::DomainError;
use crate::events::ApprovalEvent;
use crate::period::Period;
use crate::types::{
    Actor, Money, Reminder, RequestId, Rule, Status, StepSpec, SystemId, Timestamp, UserId, Verdict,
};
use crate::validation;

/// An approval request: `None` until it is submitted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The request's state once submitted.
    pub request: Option<Request>,
}

/// A submitted request as it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Its id.
    pub id: RequestId,
    /// The system it came from.
    pub system: SystemId,
    /// The system's own reference.
    pub external_ref: String,
    /// What kind of thing it is.
    pub kind: String,
    /// One line for the inbox.
    pub title: String,
    /// Who asked.
    pub requester: UserId,
    /// The amount at stake.
    pub amount: Option<Money>,
    /// When the decision is due.
    pub due_at: Option<Timestamp>,
    /// A JSON object shown to approvers.
    pub details: Option<Value>,
    /// A link back to the source.
    pub link: Option<String>,
    /// When it was submitted.
    pub submitted_at: Timestamp,
    /// Where it stands.
    pub status: Status,
    /// Its steps with their decisions.
    pub steps: Vec<Step>,
    /// The open step's index; equals `steps.len()` once every step is complete.
    pub current_step: usize,
    /// How many events it has: the version callers pass as `expected_version`.
    pub version: u64,
    /// When the last event happened.
    pub updated_at: Timestamp,
    /// How it ended, once final.
    pub outcome: Option<Outcome>,
    /// Its round: 1, then one more at each resubmission. The parts below are left out of
    /// stored states when empty (and read as empty from states stored before they existed).
    #[serde(default = "first_round", skip_serializing_if = "is_first_round")]
    pub round: u32,
    /// The earlier rounds, oldest first, each with its steps and decisions as they ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_rounds: Vec<Round>,
    /// The question waiting for the requester's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<OpenQuestion>,
    /// The files the current round came with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

fn first_round() -> u32 {
    1
}

// serde's `skip_serializing_if` hands the field by reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_first_round(round: &u32) -> bool {
    *round == 1
}

/// One step and what happened in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What completes it.
    pub rule: Rule,
    /// Who decides it now (a delegate replaces the delegator here).
    pub approvers: Vec<UserId>,
    /// Every decision made in it, in order.
    pub decisions: Vec<StepDecision>,
    /// Every hand-over made in it, in order.
    pub delegations: Vec<StepDelegation>,
    /// When its rule was met.
    pub completed_at: Option<Timestamp>,
    /// How long after it became current it is due, if it has a deadline. The deadline's fields
    /// are left out of stored states when empty, so states of steps without one stay as small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_in: Option<Period>,
    /// Its deadline, once it became current (set only when it has `due_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    /// Who is added as its approvers once it is overdue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<UserId>,
    /// How long before the deadline reminders go out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remind_before: Vec<Period>,
    /// The reminders sent, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reminded: Vec<Reminder>,
    /// When it was escalated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_at: Option<Timestamp>,
    /// The groups whose members may decide it too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// One approver's decision in a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDecision {
    /// Who decided.
    pub by: UserId,
    /// What.
    pub verdict: Verdict,
    /// Their comment.
    pub comment: Option<String>,
    /// The request's version they decided on. `None` in read models folded before decision
    /// events recorded it (a `projections rebuild` fills it in).
    #[serde(default)]
    pub seen_version: Option<u64>,
    /// When.
    pub at: Timestamp,
    /// The absent person whose place `by` took as their deputy: the decision counts as theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<UserId>,
}

impl StepDecision {
    /// The person the decision counts as: the absent person a deputy acted for, else the
    /// person who decided.
    pub fn counted_as(&self) -> &UserId {
        self.on_behalf_of.as_ref().unwrap_or(&self.by)
    }

    /// Whether `user` took part in it, deciding or being decided for.
    pub fn involves(&self, user: &UserId) -> bool {
        self.by == *user || self.on_behalf_of.as_ref() == Some(user)
    }
}

/// One hand-over in a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDelegation {
    /// Who handed over.
    pub from: UserId,
    /// Who took the place.
    pub to: UserId,
    /// Why.
    pub comment: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The person whose act ended it; `None` when its system cancelled it or it expired.
    pub by: Option<UserId>,
    /// Their comment or reason.
    pub comment: Option<String>,
    /// When.
    pub at: Timestamp,
}

impl Step {
    /// Whether `user` has decided this step: themselves, or through a deputy. A deputy's
    /// decision counts as the absent person's, so the deputy's own place stays open.
    pub fn has_decided(&self, user: &UserId) -> bool {
        self.decisions.iter().any(|d| d.counted_as() == user)
    }

    /// Whether `actor`'s groups include one of the step's.
    pub fn names_a_group_of(&self, actor: &Actor) -> bool {
        self.groups.iter().any(|g| actor.in_group(g))
    }

    /// The reminders its deadline sets: each `remind_before` moment that falls after the step
    /// became current (a reminder "due in 1 h" of a step due in 30 min would be false), then
    /// the overdue notice. None without a deadline.
    pub fn reminders(&self) -> Vec<Reminder> {
        let Some(due_in) = self.due_in else {
            return vec![];
        };
        let mut reminders: Vec<Reminder> = self
            .remind_before
            .iter()
            .filter(|before| **before < due_in)
            .map(|before| Reminder::Before(*before))
            .collect();
        reminders.push(Reminder::Overdue);
        reminders
    }

    /// The people its escalation would add: its `escalate_to` who are not approvers already.
    pub fn escalation(&self) -> Vec<&UserId> {
        self.escalate_to
            .iter()
            .filter(|u| !self.approvers.contains(u))
            .collect()
    }

    /// Whether it is current and its deadline passed, at `now`.
    pub fn is_overdue(&self, current: bool, now: Timestamp) -> bool {
        current && self.completed_at.is_none() && self.due_at.is_some_and(|due| due <= now)
    }

    /// How many approvals the step has.
    pub fn approvals(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Approve)
            .count()
    }
}

impl Request {
    /// The open step, while the request is pending.
    pub fn open_step(&self) -> Option<&Step> {
        if self.status == Status::Pending {
            self.steps.get(self.current_step)
        } else {
            None
        }
    }

    /// The people whose inbox holds this request: the open step's approvers who have not decided.
    pub fn pending_approvers(&self) -> Vec<&UserId> {
        self.open_step()
            .map(|step| {
                step.approvers
                    .iter()
                    .filter(|a| !step.has_decided(a))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The groups whose members' inboxes hold this request: the open step's groups.
    pub fn pending_groups(&self) -> &[String] {
        self.open_step().map_or(&[], |step| step.groups.as_slice())
    }

    /// The people who decided the open step, as their decisions count: whom a group's item no
    /// longer waits for.
    pub fn decided_open_step(&self) -> Vec<&UserId> {
        self.open_step()
            .map(|step| {
                step.decisions
                    .iter()
                    .map(StepDecision::counted_as)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everyone who may see the request: the requester, every approver of every step (of every
    /// round), everyone who delegated or was delegated to.
    pub fn participants(&self) -> BTreeSet<&UserId> {
        let mut people = BTreeSet::new();
        people.insert(&self.requester);
        let earlier = self.earlier_rounds.iter().flat_map(|r| r.steps.iter());
        for step in earlier.chain(&self.steps) {
            people.extend(step.approvers.iter());
            for d in &step.delegations {
                people.insert(&d.from);
                people.insert(&d.to);
            }
            people.extend(step.decisions.iter().map(|d| &d.by));
        }
        people
    }

    /// Whether `actor` may see the request at all: a participant, a member of a group one of
    /// its steps names, or an auditor or administrator.
    pub fn is_visible_to(&self, actor: &Actor) -> bool {
        actor.sees_everything()
            || self.participants().contains(&actor.user)
            || self.steps.iter().any(|s| s.names_a_group_of(actor))
    }

    /// Whether `actor` may see it acting for `principals` (the absent people they deputise
    /// for): as themselves, or as one of them. A deputy never sees their own request through
    /// someone else's place, but as its requester they see it anyway.
    pub fn is_visible_through(&self, actor: &Actor, principals: &[UserId]) -> bool {
        if self.is_visible_to(actor) {
            return true;
        }
        let people = self.participants();
        principals.iter().any(|p| people.contains(p))
    }
}

impl ApprovalRequest {
    /// The request, or `NotFound` when it was never submitted.
    pub(crate) fn submitted(&self) -> Result<&Request, DomainError> {
        self.request.as_ref().ok_or(DomainError::NotFound)
    }

    /// The checks every person's command starts with, in the order callers see them: existence and
    /// visibility, then the version they saw, then whether the request still takes decisions.
    pub(crate) fn open_for(
        &self,
        actor: &Actor,
        expected_version: Option<u64>,
    ) -> Result<&Request, DomainError> {
        self.open_through(actor, &[], expected_version)
    }

    /// [`Self::open_for`] for an actor who may also act for `principals`.
    fn open_through(
        &self,
        actor: &Actor,
        principals: &[UserId],
        expected_version: Option<u64>,
    ) -> Result<&Request, DomainError> {
        let request = self.submitted()?;
        if !request.is_visible_through(actor, principals) {
            return Err(DomainError::NotFound);
        }
        if let Some(expected) = expected_version {
            if expected != request.version {
                return Err(DomainError::VersionConflict {
                    expected,
                    actual: request.version,
                });
            }
        }
        if request.status.is_final() {
            return Err(DomainError::NotPending(request.status));
        }
        Ok(request)
    }

    fn submit(&self, s: Submission) -> Result<Vec<ApprovalEvent>, DomainError> {
        // A submission that breaks the rules is refused even when its reference exists: the
        // caller learns of the bug in its call rather than hearing that all is well.
        validation::submission(&s)?;
        if self.request.is_some() {
            // The same reference again: the request exists, nothing is written.
            return Ok(vec![]);
        }
        Ok(vec![ApprovalEvent::RequestSubmitted {
            request_id: s.request_id,
            system: s.system,
            external_ref: s.external_ref,
            kind: s.kind,
            title: s.title,
            requester: s.requester,
            amount: s.amount,
            steps: s.steps,
            due_at: s.due_at,
            details: s.details,
            link: s.link,
            at: s.at,
            attachments: s.attachments,
        }])
    }

    fn decide(&self, d: Decision) -> Result<Vec<ApprovalEvent>, DomainError> {
        let principals = d.authority.principals();
        let request = self.open_through(&d.actor, principals, d.expected_version)?;
        let me = &d.actor.user;
        if *me == request.requester {
            return Err(DomainError::OwnRequest);
        }
        let step_index = request.current_step;
        let step = request.open_step().ok_or(DomainError::NotAnApprover)?;
        let on_behalf_of = place(step, &d.actor, principals, &request.requester)?;
        let counted_as = on_behalf_of.as_ref().unwrap_or(me);
        let comment = d.comment.filter(|c| !c.trim().is_empty());
        validation::comment("comment", comment.as_deref())?;
        if let (Some(above), Some(amount)) = (d.authority.require_version_above, &request.amount) {
            if amount.value > above && d.expected_version.is_none() {
                return Err(DomainError::ExpectedVersionRequired(above.to_string()));
            }
        }
        let by = me.clone();
        let seen_version = request.version;
        match d.verdict {
            Verdict::Approve => {
                if d.authority.separation_of_duties {
                    let approved_elsewhere = request
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(index, _)| *index != step_index)
                        .flat_map(|(_, s)| s.decisions.iter())
                        .filter(|dec| dec.verdict == Verdict::Approve)
                        .any(|dec| dec.involves(me) || dec.involves(counted_as));
                    if approved_elsewhere {
                        return Err(DomainError::SeparationOfDuties);
                    }
                }
                // Only approvals are limited: anyone may stop a request, whatever its amount.
                if let Some(amount) = &request.amount {
                    if let Some(limit) = d.authority.limits.get(&amount.currency) {
                        if amount.value > *limit {
                            return Err(DomainError::OverAuthorityLimit {
                                amount: amount.value.to_string(),
                                currency: amount.currency.clone(),
                                limit: limit.to_string(),
                            });
                        }
                    }
                }
                let mut events = vec![ApprovalEvent::ApprovalRecorded {
                    step: step_index,
                    approver: by.clone(),
                    comment: comment.clone(),
                    seen_version,
                    on_behalf_of,
                    at: d.at,
                }];
                if step.rule.is_met(step.approvals() + 1, step.approvers.len()) {
                    events.push(ApprovalEvent::StepCompleted {
                        step: step_index,
                        at: d.at,
                    });
                    if step_index + 1 == request.steps.len() {
                        events.push(ApprovalEvent::RequestApproved {
                            decided_by: by,
                            comment,
                            at: d.at,
                        });
                    }
                }
                Ok(events)
            }
            Verdict::Reject => {
                let comment = comment.ok_or(DomainError::CommentRequired("reject"))?;
                Ok(vec![ApprovalEvent::RequestRejected {
                    step: step_index,
                    decided_by: by,
                    comment,
                    seen_version,
                    on_behalf_of,
                    at: d.at,
                }])
            }
            Verdict::Return => {
                let comment = comment.ok_or(DomainError::CommentRequired("return"))?;
                Ok(vec![ApprovalEvent::RequestReturned {
                    step: step_index,
                    decided_by: by,
                    comment,
                    seen_version,
                    on_behalf_of,
                    at: d.at,
                }])
            }
        }
    }

    fn reassign(&self, r: Reassignment) -> Result<Vec<ApprovalEvent>, DomainError> {
        if !r.actor.roles.admin {
            return Err(DomainError::Forbidden("reassigning needs the role admin"));
        }
        let request = self.open_for(&r.actor, None)?;
        let step_index = request.current_step;
        let step = request.open_step().ok_or(DomainError::NotAnApprover)?;
        if step.has_decided(&r.from) {
            return Err(DomainError::AlreadyDecided);
        }
        if !step.approvers.contains(&r.from) {
            return Err(DomainError::NotAnApprover);
        }
        validation::user("to", &r.to).map_err(|e| DomainError::InvalidDelegate(e.to_string()))?;
        if r.to == r.from {
            return Err(DomainError::InvalidDelegate(
                "from and to are the same person".into(),
            ));
        }
        if r.to == request.requester {
            return Err(DomainError::InvalidDelegate(
                "the requester cannot approve their own request".into(),
            ));
        }
        if step.approvers.contains(&r.to) || step.has_decided(&r.to) {
            return Err(DomainError::InvalidDelegate(format!(
                "{} already decides this step",
                r.to
            )));
        }
        let comment = r.comment.filter(|c| !c.trim().is_empty());
        validation::comment("comment", comment.as_deref())?;
        Ok(vec![ApprovalEvent::ApproverDelegated {
            step: step_index,
            from: r.from,
            to: r.to,
            comment,
            at: r.at,
            by: Some(r.actor.user),
        }])
    }

    fn delegate(&self, d: Delegation) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.open_for(&d.actor, d.expected_version)?;
        let me = &d.actor.user;
        let step_index = request.current_step;
        let step = request.open_step().ok_or(DomainError::NotAnApprover)?;
        if step.has_decided(me) {
            return Err(DomainError::AlreadyDecided);
        }
        if !step.approvers.contains(me) {
            return Err(DomainError::NotAnApprover);
        }
        validation::user("to", &d.to).map_err(|e| DomainError::InvalidDelegate(e.to_string()))?;
        if d.to == *me {
            return Err(DomainError::InvalidDelegate(
                "you cannot delegate to yourself".into(),
            ));
        }
        if d.to == request.requester {
            return Err(DomainError::InvalidDelegate(
                "the requester cannot approve their own request".into(),
            ));
        }
        if step.approvers.contains(&d.to) || step.has_decided(&d.to) {
            return Err(DomainError::InvalidDelegate(format!(
                "{} already decides this step",
                d.to
            )));
        }
        let comment = d.comment.filter(|c| !c.trim().is_empty());
        validation::comment("comment", comment.as_deref())?;
        Ok(vec![ApprovalEvent::ApproverDelegated {
            step: step_index,
            from: me.clone(),
            to: d.to,
            comment,
            at: d.at,
            by: None,
        }])
    }

    fn withdraw(&self, w: Withdrawal) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.open_for(&w.actor, w.expected_version)?;
        if w.actor.user != request.requester {
            return Err(DomainError::NotRequester);
        }
        let comment = w.comment.filter(|c| !c.trim().is_empty());
        validation::comment("comment", comment.as_deref())?;
        Ok(vec![ApprovalEvent::RequestWithdrawn {
            by: w.actor.user,
            comment,
            at: w.at,
        }])
    }

    fn cancel(&self, c: Cancellation) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.submitted()?;
        if request.system != c.system {
            return Err(DomainError::NotFound);
        }
        if request.status.is_final() {
            return Err(DomainError::NotPending(request.status));
        }
        let reason = c.reason.filter(|r| !r.trim().is_empty());
        validation::comment("reason", reason.as_deref())?;
        Ok(vec![ApprovalEvent::RequestCancelled { reason, at: c.at }])
    }

    fn expire(&self, at: Timestamp) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.submitted()?;
        if request.status.is_final() {
            return Err(DomainError::NotPending(request.status));
        }
        match request.due_at {
            Some(due) if due <= at => Ok(vec![ApprovalEvent::RequestExpired { at }]),
            _ => Err(DomainError::NotDue),
        }
    }

    /// The current step `step` with its deadline, if a timer set for it still applies.
    fn timed_step(&self, step: usize) -> Result<(&Request, &Step, Timestamp), DomainError> {
        let request = self.submitted()?;
        if request.status.is_final() {
            return Err(DomainError::NotPending(request.status));
        }
        if step != request.current_step {
            return Err(DomainError::TimerStale("the step is no longer current"));
        }
        let open = request
            .open_step()
            .ok_or(DomainError::TimerStale("the step is no longer current"))?;
        let due_at = open
            .due_at
            .ok_or(DomainError::TimerStale("the step has no deadline"))?;
        Ok((request, open, due_at))
    }

    fn remind(
        &self,
        step: usize,
        reminder: Reminder,
        at: Timestamp,
    ) -> Result<Vec<ApprovalEvent>, DomainError> {
        let (request, open, due_at) = self.timed_step(step)?;
        if !open.reminders().contains(&reminder) {
            return Err(DomainError::TimerStale("the step sets no such reminder"));
        }
        if open.reminded.contains(&reminder) {
            return Err(DomainError::TimerStale("the reminder was sent already"));
        }
        let moment = match reminder {
            Reminder::Before(before) => due_at - before.to_chrono(),
            Reminder::Overdue => due_at,
        };
        if at < moment {
            return Err(DomainError::NotDue);
        }
        if matches!(reminder, Reminder::Before(_)) && at >= due_at {
            // Fired so late that the deadline passed: the overdue notice tells them instead.
            return Err(DomainError::TimerStale("the deadline passed already"));
        }
        let to: Vec<UserId> = request.pending_approvers().into_iter().cloned().collect();
        Ok(vec![ApprovalEvent::ReminderSent {
            step,
            reminder,
            due_at,
            to,
            at,
        }])
    }

    fn escalate(&self, step: usize, at: Timestamp) -> Result<Vec<ApprovalEvent>, DomainError> {
        let (_, open, due_at) = self.timed_step(step)?;
        if open.escalated_at.is_some() {
            return Err(DomainError::TimerStale("the step was escalated already"));
        }
        if at < due_at {
            return Err(DomainError::NotDue);
        }
        let added: Vec<UserId> = open.escalation().into_iter().cloned().collect();
        if added.is_empty() {
            return Err(DomainError::TimerStale(
                "everyone to escalate to is an approver already",
            ));
        }
        Ok(vec![ApprovalEvent::StepEscalated {
            step,
            added,
            due_at,
            at,
        }])
    }

    /// Decides what a command does: the events it produces, or why it is refused.
    pub fn decide_command(
        &self,
        command: ApprovalCommand,
    ) -> Result<Vec<ApprovalEvent>, DomainError> {
        match command {
            ApprovalCommand::Submit(s) => self.submit(s),
            ApprovalCommand::Decide(d) => self.decide(d),
            ApprovalCommand::Delegate(d) => self.delegate(d),
            ApprovalCommand::Withdraw(w) => self.withdraw(w),
            ApprovalCommand::Cancel(c) => self.cancel(c),
            ApprovalCommand::Expire { at } => self.expire(at),
            ApprovalCommand::Remind { step, reminder, at } => self.remind(step, reminder, at),
            ApprovalCommand::Escalate { step, at } => self.escalate(step, at),
            ApprovalCommand::Ask(a) => self.ask(a),
            ApprovalCommand::Answer(a) => self.answer(a),
            ApprovalCommand::Comment(r) => self.remark(r),
            ApprovalCommand::Resubmit(s) => self.resubmit(s),
            ApprovalCommand::Reassign(r) => self.reassign(r),
        }
    }

    /// Folds one event into the state: assignment only, no judgement.
    pub fn fold(&mut self, event: ApprovalEvent) {
        if let ApprovalEvent::RequestSubmitted {
            request_id,
            system,
            external_ref,
            kind,
            title,
            requester,
            amount,
            steps,
            due_at,
            details,
            link,
            at,
            attachments,
        } = event
        {
            self.request = Some(Request {
                id: request_id,
                system,
                external_ref,
                kind,
                title,
                requester,
                amount,
                due_at,
                details,
                link,
                submitted_at: at,
                status: Status::Pending,
                steps: open_steps(steps, at),
                current_step: 0,
                version: 1,
                updated_at: at,
                outcome: None,
                round: 1,
                earlier_rounds: vec![],
                question: None,
                attachments,
            });
            return;
        }
        let Some(request) = self.request.as_mut() else {
            return;
        };
        request.version += 1;
        request.updated_at = event.at();
        if let Some(status) = event.final_status() {
            let (by, comment) = event.actor_and_comment();
            request.status = status;
            request.outcome = Some(Outcome {
                by: by.cloned(),
                comment: comment.map(str::to_owned),
                at: event.at(),
            });
            // A final request asks nothing of its requester any more.
            request.question = None;
        }
        match event {
            ApprovalEvent::ApprovalRecorded {
                step,
                approver,
                comment,
                seen_version,
                on_behalf_of,
                at,
            } => record(
                request,
                step,
                StepDecision {
                    by: approver,
                    verdict: Verdict::Approve,
                    comment,
                    seen_version: Some(seen_version),
                    at,
                    on_behalf_of,
                },
            ),
            ApprovalEvent::StepCompleted { step, at } => {
                if let Some(s) = request.steps.get_mut(step) {
                    s.completed_at = Some(at);
                }
                request.current_step = step + 1;
                // The next step becomes current now: its deadline runs from here.
                if let Some(next) = request.steps.get_mut(step + 1) {
                    next.due_at = next.due_in.map(|due_in| at + due_in.to_chrono());
                }
            }
            ApprovalEvent::ReminderSent { step, reminder, .. } => {
                if let Some(s) = request.steps.get_mut(step) {
                    s.reminded.push(reminder);
                }
            }
            ApprovalEvent::StepEscalated {
                step, added, at, ..
            } => {
                if let Some(s) = request.steps.get_mut(step) {
                    s.approvers.extend(added);
                    s.escalated_at = Some(at);
                }
            }
            ApprovalEvent::RequestRejected {
                step,
                decided_by,
                comment,
                seen_version,
                on_behalf_of,
                at,
            } => record(
                request,
                step,
                StepDecision {
                    by: decided_by,
                    verdict: Verdict::Reject,
                    comment: Some(comment),
                    seen_version: Some(seen_version),
                    at,
                    on_behalf_of,
                },
            ),
            ApprovalEvent::RequestReturned {
                step,
                decided_by,
                comment,
                seen_version,
                on_behalf_of,
                at,
            } => record(
                request,
                step,
                StepDecision {
                    by: decided_by,
                    verdict: Verdict::Return,
                    comment: Some(comment),
                    seen_version: Some(seen_version),
                    at,
                    on_behalf_of,
                },
            ),
            ApprovalEvent::ApproverDelegated {
                step,
                from,
                to,
                comment,
                at,
                ..
            } => {
                if let Some(s) = request.steps.get_mut(step) {
                    for approver in s.approvers.iter_mut().filter(|a| **a == from) {
                        *approver = to.clone();
                    }
                    s.delegations.push(StepDelegation {
                        from,
                        to,
                        comment,
                        at,
                    });
                }
            }
            ApprovalEvent::InfoRequested {
                step,
                asked_by,
                question,
                at,
            } => {
                request.question = Some(OpenQuestion {
                    question,
                    asked_by,
                    asked_at: at,
                    step,
                });
            }
            ApprovalEvent::InfoProvided { .. } => request.question = None,
            ApprovalEvent::RequestResubmitted {
                round,
                kind,
                title,
                amount,
                steps,
                due_at,
                details,
                link,
                attachments,
                at,
            } => {
                let ended = Round {
                    round: request.round,
                    submitted_at: request.submitted_at,
                    steps: std::mem::replace(&mut request.steps, open_steps(steps, at)),
                    outcome: request.outcome.take(),
                };
                request.earlier_rounds.push(ended);
                request.round = round;
                request.kind = kind;
                request.title = title;
                request.amount = amount;
                request.due_at = due_at;
                request.details = details;
                request.link = link;
                request.attachments = attachments;
                request.submitted_at = at;
                request.status = Status::Pending;
                request.current_step = 0;
                request.question = None;
            }
            ApprovalEvent::RequestSubmitted { .. }
            | ApprovalEvent::CommentAdded { .. }
            | ApprovalEvent::RequestApproved { .. }
            | ApprovalEvent::RequestWithdrawn { .. }
            | ApprovalEvent::RequestCancelled { .. }
            | ApprovalEvent::RequestExpired { .. }
            | ApprovalEvent::AbsenceRecorded { .. }
            | ApprovalEvent::AbsenceEnded { .. } => {}
        }
    }
}

/// The steps of a new round, none decided; the first becomes current at `at`, so its deadline
/// runs from there.
fn open_steps(steps: Vec<StepSpec>, at: Timestamp) -> Vec<Step> {
    steps
        .into_iter()
        .enumerate()
        .map(|(index, s)| Step {
            rule: s.rule,
            approvers: s.approvers,
            decisions: vec![],
            delegations: vec![],
            completed_at: None,
            due_at: s
                .due_in
                .filter(|_| index == 0)
                .map(|due_in| at + due_in.to_chrono()),
            due_in: s.due_in,
            escalate_to: s.escalate_to,
            remind_before: s.remind_before,
            reminded: vec![],
            escalated_at: None,
            groups: s.groups,
        })
        .collect()
}

/// The place in `step` that `actor` fills with a decision: their own when they are an undecided
/// approver; else that of the first undecided approver among `principals` (the absent people
/// they deputise for), `Some(principal)`; else their own as a member of one of the step's
/// groups. A deputy never takes a place on their own request (the caller checked that they are
/// not its requester).
fn place(
    step: &Step,
    actor: &Actor,
    principals: &[UserId],
    requester: &UserId,
) -> Result<Option<UserId>, DomainError> {
    let me = &actor.user;
    let decided = step.has_decided(me);
    if step.approvers.contains(me) && !decided {
        return Ok(None);
    }
    if let Some(principal) = principals
        .iter()
        .find(|p| *p != requester && step.approvers.contains(p) && !step.has_decided(p))
    {
        return Ok(Some(principal.clone()));
    }
    if step.names_a_group_of(actor) && !decided {
        return Ok(None);
    }
    if decided || principals.iter().any(|p| step.has_decided(p)) {
        return Err(DomainError::AlreadyDecided);
    }
    Err(DomainError::NotAnApprover)
}

/// Adds a decision to a step.
fn record(request: &mut Request, step: usize, decision: StepDecision) {
    if let Some(s) = request.steps.get_mut(step) {
        s.decisions.push(decision);
    }
}

impl Aggregate for ApprovalRequest {
    const TYPE: &'static str = "ApprovalRequest";
    type Command = ApprovalCommand;
    type Event = ApprovalEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide_command(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}
