//! What happened to a request, in the past tense. A stored event's type name never changes; a
//! change of its shape gets a new `event_version` and an upcaster in `upcasters` that reads the
//! old shape as the new one.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::Attachment;
use uuid::Uuid;

use crate::types::{Money, Reminder, RequestId, Status, StepSpec, SystemId, Timestamp, UserId};

/// Every event of an approval request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ApprovalEvent {
    /// A legacy system submitted the request; its first step is open.
    RequestSubmitted {
        /// The aggregate's id.
        request_id: RequestId,
        /// The submitting system.
        system: SystemId,
        /// The system's own reference.
        external_ref: String,
        /// What kind of thing it is.
        kind: String,
        /// One line for the inbox.
        title: String,
        /// Who asked.
        requester: UserId,
        /// The amount at stake, if any.
        amount: Option<Money>,
        /// The steps, in order.
        steps: Vec<StepSpec>,
        /// When the decision is due.
        due_at: Option<Timestamp>,
        /// A JSON object shown to approvers.
        details: Option<Value>,
        /// A link back to the source.
        link: Option<String>,
        /// When it was submitted.
        at: Timestamp,
        /// The files it comes with. Left out of the stored event when there are none, so
        /// submissions without attachments are stored as they always were.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Attachment>,
    },
    /// An approver approved at a step (the step may or may not be complete now).
    ApprovalRecorded {
        /// The step's index, from 0.
        step: usize,
        /// Who approved.
        approver: UserId,
        /// What they wrote.
        comment: Option<String>,
        /// The request's version the approver decided on: what they saw. Since 1.1; the
        /// upcaster fills it for 1.0 events.
        seen_version: u64,
        /// The absent person whose place the approver took as their deputy; the approval
        /// counts as theirs. Absent from events stored before deputies existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<UserId>,
        /// When.
        at: Timestamp,
    },
    /// A step's rule was met; the next step, if any, is open.
    StepCompleted {
        /// The step's index, from 0.
        step: usize,
        /// When.
        at: Timestamp,
    },
    /// The last step completed: the request is approved.
    RequestApproved {
        /// The approver whose approval completed it.
        decided_by: UserId,
        /// Their comment.
        comment: Option<String>,
        /// When.
        at: Timestamp,
    },
    /// An approver rejected the request.
    RequestRejected {
        /// The step at which it was rejected.
        step: usize,
        /// Who rejected.
        decided_by: UserId,
        /// Why.
        comment: String,
        /// The request's version the approver decided on. Since 1.1.
        seen_version: u64,
        /// The absent person whose place the approver took as their deputy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<UserId>,
        /// When.
        at: Timestamp,
    },
    /// An approver sent the request back to the requester.
    RequestReturned {
        /// The step at which it was returned.
        step: usize,
        /// Who returned it.
        decided_by: UserId,
        /// Why.
        comment: String,
        /// The request's version the approver decided on. Since 1.1.
        seen_version: u64,
        /// The absent person whose place the approver took as their deputy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<UserId>,
        /// When.
        at: Timestamp,
    },
    /// An approver handed their place in a step to another person.
    ApproverDelegated {
        /// The step.
        step: usize,
        /// Who handed over.
        from: UserId,
        /// Who took the place.
        to: UserId,
        /// Why.
        comment: Option<String>,
        /// When.
        at: Timestamp,
        /// The administrator who reassigned the place, when `from` did not hand it over
        /// themselves. Absent from events stored before reassignment existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<UserId>,
    },
    /// The requester took the request back.
    RequestWithdrawn {
        /// The requester.
        by: UserId,
        /// Why.
        comment: Option<String>,
        /// When.
        at: Timestamp,
    },
    /// The source system withdrew the request.
    RequestCancelled {
        /// Why.
        reason: Option<String>,
        /// When.
        at: Timestamp,
    },
    /// The due time passed while the request was pending.
    RequestExpired {
        /// When.
        at: Timestamp,
    },
    /// A timer of the current step's deadline fired: its undecided approvers were reminded
    /// (`Before`) or told that the deadline passed (`Overdue`). Recorded so that each reminder is
    /// sent once, whatever restarts or however many instances run.
    ReminderSent {
        /// The step.
        step: usize,
        /// Which reminder.
        reminder: Reminder,
        /// The step's deadline.
        due_at: Timestamp,
        /// Who was reminded: the step's approvers who had not decided.
        to: Vec<UserId>,
        /// When.
        at: Timestamp,
    },
    /// The current step's deadline passed: its `escalate_to` people became approvers of it too.
    /// Nobody was removed; the step's rule counts its approvers as they now stand.
    StepEscalated {
        /// The step.
        step: usize,
        /// The approvers added (the step's `escalate_to` who were not approvers already).
        added: Vec<UserId>,
        /// The step's deadline.
        due_at: Timestamp,
        /// When.
        at: Timestamp,
    },
    /// An approver of the current step asked the requester a question; the request stays
    /// pending and decisions stay possible.
    InfoRequested {
        /// The step they asked at.
        step: usize,
        /// Who asked.
        asked_by: UserId,
        /// What.
        question: String,
        /// When.
        at: Timestamp,
    },
    /// The open question was answered, by the requester or by the source system.
    InfoProvided {
        /// Who answered.
        answered_by: UserId,
        /// The system the answer came through, when it did not come from the app.
        system: Option<SystemId>,
        /// Who had asked: they are told.
        asked_by: UserId,
        /// The answer.
        answer: String,
        /// When.
        at: Timestamp,
    },
    /// A participant commented.
    CommentAdded {
        /// Who.
        by: UserId,
        /// What.
        text: String,
        /// When.
        at: Timestamp,
    },
    /// The source system sent a returned request again: a new round opened from its first
    /// step, the earlier round's decisions kept. The system, reference and requester stay.
    RequestResubmitted {
        /// The new round's number, from 2.
        round: u32,
        /// What kind of thing it is.
        kind: String,
        /// One line for the inbox.
        title: String,
        /// The amount at stake, if any.
        amount: Option<Money>,
        /// The steps, in order.
        steps: Vec<StepSpec>,
        /// When the decision is due.
        due_at: Option<Timestamp>,
        /// A JSON object shown to approvers.
        details: Option<Value>,
        /// A link back to the source.
        link: Option<String>,
        /// The files it comes with now.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<Attachment>,
        /// When.
        at: Timestamp,
    },
    /// A person said they will be away and named a deputy for the time: while it lasts, the
    /// deputy may decide in their place. An event of the person's `Absences` aggregate, not
    /// of a request.
    AbsenceRecorded {
        /// Who will be away.
        person: UserId,
        /// The absence's id.
        absence_id: Uuid,
        /// Who decides in their place.
        deputy: UserId,
        /// When it starts.
        from: Timestamp,
        /// When it ends (exclusive).
        until: Timestamp,
        /// What they wrote.
        comment: Option<String>,
        /// When it was recorded.
        at: Timestamp,
    },
    /// The absent person ended an absence early (or withdrew one yet to start): from `at` on,
    /// the deputy no longer decides in their place.
    AbsenceEnded {
        /// Who was away.
        person: UserId,
        /// The absence's id.
        absence_id: Uuid,
        /// When it ended.
        at: Timestamp,
    },
}

/// The stored type names of the events of a person's absences ([`crate::people::Absences`]):
/// they concern no request, so the readers of requests pass them by.
pub const ABSENCE_TYPES: [&str; 2] = ["AbsenceRecorded", "AbsenceEnded"];

/// The version of every event type whose shape never changed.
pub const FIRST_VERSION: &str = "1.0";

/// The version of the decision events (`ApprovalRecorded`, `RequestRejected`,
/// `RequestReturned`) since they record `seen_version`, the request's version the approver
/// decided on. Version 1.0 lacked it; `upcasters` fills it in.
pub const DECISION_VERSION: &str = "1.1";

/// The stored type names of the decision events, which changed from 1.0 to 1.1.
pub const DECISION_TYPES: [&str; 3] = ["ApprovalRecorded", "RequestRejected", "RequestReturned"];

/// Every stored type name, one per variant of [`ApprovalEvent`]: what a reader of the feed can
/// declare an interest in, and what the broker's bindings are derived from.
pub const TYPES: [&str; 18] = [
    "RequestSubmitted",
    "ApprovalRecorded",
    "StepCompleted",
    "RequestApproved",
    "RequestRejected",
    "RequestReturned",
    "ApproverDelegated",
    "RequestWithdrawn",
    "RequestCancelled",
    "RequestExpired",
    "ReminderSent",
    "StepEscalated",
    "InfoRequested",
    "InfoProvided",
    "CommentAdded",
    "RequestResubmitted",
    "AbsenceRecorded",
    "AbsenceEnded",
];

/// Whether `event_type` names an event that ends a request (one of [`FINAL_TYPES`]).
pub fn is_final_type(event_type: &str) -> bool {
    FINAL_TYPES.contains(&event_type)
}

/// The stored type names of the events that end a request: exactly those whose
/// [`ApprovalEvent::final_status`] is `Some`, so a consumer can tell from a message's type alone.
pub const FINAL_TYPES: [&str; 6] = [
    "RequestApproved",
    "RequestRejected",
    "RequestReturned",
    "RequestWithdrawn",
    "RequestCancelled",
    "RequestExpired",
];

impl ApprovalEvent {
    /// The stored type name; never changes once written.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::RequestSubmitted { .. } => "RequestSubmitted",
            Self::ApprovalRecorded { .. } => "ApprovalRecorded",
            Self::StepCompleted { .. } => "StepCompleted",
            Self::RequestApproved { .. } => "RequestApproved",
            Self::RequestRejected { .. } => "RequestRejected",
            Self::RequestReturned { .. } => "RequestReturned",
            Self::ApproverDelegated { .. } => "ApproverDelegated",
            Self::RequestWithdrawn { .. } => "RequestWithdrawn",
            Self::RequestCancelled { .. } => "RequestCancelled",
            Self::RequestExpired { .. } => "RequestExpired",
            Self::ReminderSent { .. } => "ReminderSent",
            Self::StepEscalated { .. } => "StepEscalated",
            Self::InfoRequested { .. } => "InfoRequested",
            Self::InfoProvided { .. } => "InfoProvided",
            Self::CommentAdded { .. } => "CommentAdded",
            Self::RequestResubmitted { .. } => "RequestResubmitted",
            Self::AbsenceRecorded { .. } => "AbsenceRecorded",
            Self::AbsenceEnded { .. } => "AbsenceEnded",
        }
    }

    /// The version this event is written in today.
    pub fn version(&self) -> &'static str {
        match self {
            Self::ApprovalRecorded { .. }
            | Self::RequestRejected { .. }
            | Self::RequestReturned { .. } => DECISION_VERSION,
            _ => FIRST_VERSION,
        }
    }

    /// When it happened, as the command said.
    pub fn at(&self) -> Timestamp {
        match self {
            Self::RequestSubmitted { at, .. }
            | Self::ApprovalRecorded { at, .. }
            | Self::StepCompleted { at, .. }
            | Self::RequestApproved { at, .. }
            | Self::RequestRejected { at, .. }
            | Self::RequestReturned { at, .. }
            | Self::ApproverDelegated { at, .. }
            | Self::RequestWithdrawn { at, .. }
            | Self::RequestCancelled { at, .. }
            | Self::RequestExpired { at, .. }
            | Self::ReminderSent { at, .. }
            | Self::StepEscalated { at, .. }
            | Self::InfoRequested { at, .. }
            | Self::InfoProvided { at, .. }
            | Self::CommentAdded { at, .. }
            | Self::RequestResubmitted { at, .. }
            | Self::AbsenceRecorded { at, .. }
            | Self::AbsenceEnded { at, .. } => *at,
        }
    }

    /// Whether it belongs to a request (rather than to a person's absences).
    pub fn concerns_a_request(&self) -> bool {
        !matches!(
            self,
            Self::AbsenceRecorded { .. } | Self::AbsenceEnded { .. }
        )
    }

    /// The final status this event moves the request to, if it ends it.
    pub fn final_status(&self) -> Option<Status> {
        match self {
            Self::RequestApproved { .. } => Some(Status::Approved),
            Self::RequestRejected { .. } => Some(Status::Rejected),
            Self::RequestReturned { .. } => Some(Status::Returned),
            Self::RequestWithdrawn { .. } => Some(Status::Withdrawn),
            Self::RequestCancelled { .. } => Some(Status::Cancelled),
            Self::RequestExpired { .. } => Some(Status::Expired),
            _ => None,
        }
    }

    /// The status this event moves the request to, if it changes it: a final one, or
    /// `pending` again for a resubmission.
    pub fn status_after(&self) -> Option<Status> {
        match self {
            Self::RequestResubmitted { .. } => Some(Status::Pending),
            _ => self.final_status(),
        }
    }

    /// Who acted, when a person did; and their comment.
    pub fn actor_and_comment(&self) -> (Option<&UserId>, Option<&str>) {
        match self {
            Self::RequestSubmitted { requester, .. } => (Some(requester), None),
            Self::ApprovalRecorded {
                approver, comment, ..
            } => (Some(approver), comment.as_deref()),
            Self::RequestApproved {
                decided_by,
                comment,
                ..
            } => (Some(decided_by), comment.as_deref()),
            Self::RequestRejected {
                decided_by,
                comment,
                ..
            }
            | Self::RequestReturned {
                decided_by,
                comment,
                ..
            } => (Some(decided_by), Some(comment.as_str())),
            Self::ApproverDelegated {
                from, comment, by, ..
            } => (Some(by.as_ref().unwrap_or(from)), comment.as_deref()),
            Self::RequestWithdrawn { by, comment, .. } => (Some(by), comment.as_deref()),
            Self::RequestCancelled { reason, .. } => (None, reason.as_deref()),
            Self::InfoRequested {
                asked_by, question, ..
            } => (Some(asked_by), Some(question.as_str())),
            Self::InfoProvided {
                answered_by,
                answer,
                ..
            } => (Some(answered_by), Some(answer.as_str())),
            Self::CommentAdded { by, text, .. } => (Some(by), Some(text.as_str())),
            Self::StepCompleted { .. }
            | Self::RequestExpired { .. }
            | Self::ReminderSent { .. }
            | Self::StepEscalated { .. }
            | Self::RequestResubmitted { .. } => (None, None),
            Self::AbsenceRecorded {
                person, comment, ..
            } => (Some(person), comment.as_deref()),
            Self::AbsenceEnded { person, .. } => (Some(person), None),
        }
    }
}

impl DomainEvent for ApprovalEvent {
    fn event_type(&self) -> String {
        self.type_name().to_string()
    }

    fn event_version(&self) -> String {
        self.version().to_string()
    }
}
