//! What callers ask of a request. Every command carries the moment it was sent (`at`): the
//! aggregate never reads a clock, so replaying a command gives the same events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::{Answer, Ask, Attachment, Remark};
use crate::people::Authority;
use crate::types::{
    Actor, Money, Reminder, RequestId, StepSpec, SystemId, Timestamp, UserId, Verdict,
};

/// A command to an approval request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ApprovalCommand {
    /// A legacy system asks for approval.
    Submit(Submission),
    /// An approver approves, rejects or returns.
    Decide(Decision),
    /// An approver hands their place in the current step to someone else.
    Delegate(Delegation),
    /// The requester takes the request back.
    Withdraw(Withdrawal),
    /// The source system withdrew the request.
    Cancel(Cancellation),
    /// The request's due time passed while it waited.
    Expire {
        /// When the expiry was noticed; must not be before the due time.
        at: Timestamp,
    },
    /// A timer of the current step's deadline fell due: remind its undecided approvers.
    Remind {
        /// The step the timer was set for; refused unless it is still the current one.
        step: usize,
        /// Which reminder; refused once it was sent.
        reminder: Reminder,
        /// When the timer fired; must not be before the reminder's moment.
        at: Timestamp,
    },
    /// The current step's deadline passed: make its `escalate_to` people approvers too.
    Escalate {
        /// The step the timer was set for; refused unless it is still the current one.
        step: usize,
        /// When the timer fired; must not be before the deadline.
        at: Timestamp,
    },
    /// An approver of the current step asks the requester a question.
    Ask(Ask),
    /// The requester, or the source system, answers the open question.
    Answer(Answer),
    /// A participant comments.
    Comment(Remark),
    /// The source system sends a returned request again: a new round from the first step.
    Resubmit(Submission),
    /// An administrator moves an undecided approver's place in the current step to another.
    Reassign(Reassignment),
}

impl ApprovalCommand {
    /// The version the caller said they saw, if they said one.
    pub fn expected_version(&self) -> Option<u64> {
        match self {
            Self::Decide(d) => d.expected_version,
            Self::Delegate(d) => d.expected_version,
            Self::Withdraw(w) => w.expected_version,
            Self::Ask(a) => a.expected_version,
            Self::Submit(_)
            | Self::Answer(_)
            | Self::Comment(_)
            | Self::Resubmit(_)
            | Self::Cancel(_)
            | Self::Expire { .. }
            | Self::Remind { .. }
            | Self::Escalate { .. }
            | Self::Reassign(_) => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Submit(_) => "submit",
            Self::Decide(d) => d.verdict.as_str(),
            Self::Delegate(_) => "delegate",
            Self::Withdraw(_) => "withdraw",
            Self::Cancel(_) => "cancel",
            Self::Expire { .. } => "expire",
            Self::Remind { .. } => "remind",
            Self::Escalate { .. } => "escalate",
            Self::Ask(_) => "ask",
            Self::Answer(_) => "answer",
            Self::Comment(_) => "comment",
            Self::Resubmit(_) => "resubmit",
            Self::Reassign(_) => "reassign",
        }
    }
}

/// A request as a legacy system submits it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The aggregate's id, `RequestId::for_submission(system, external_ref)`.
    pub request_id: RequestId,
    /// The submitting system.
    pub system: SystemId,
    /// The system's own reference of the thing to approve.
    pub external_ref: String,
    /// What kind of thing it is (`purchase_order`, `leave`...).
    pub kind: String,
    /// One line shown in the inbox.
    pub title: String,
    /// Who asked; never one of the approvers.
    pub requester: UserId,
    /// The amount at stake, if any.
    pub amount: Option<Money>,
    /// The steps, decided in order.
    pub steps: Vec<StepSpec>,
    /// When the decision is due; the request expires if still pending then.
    pub due_at: Option<Timestamp>,
    /// A JSON object shown to approvers as it is.
    pub details: Option<Value>,
    /// A link back to the thing in its system.
    pub link: Option<String>,
    /// When it was submitted.
    pub at: Timestamp,
    /// The files it comes with, served by the source system.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// An approver's decision on the current step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Who decides.
    pub actor: Actor,
    /// What they decide.
    pub verdict: Verdict,
    /// Required to reject or return.
    pub comment: Option<String>,
    /// The version the approver saw; a newer one refuses the decision.
    pub expected_version: Option<u64>,
    /// When they decided.
    pub at: Timestamp,
    /// Whom they may act for and how much they may approve, resolved by the service.
    #[serde(default)]
    pub authority: Authority,
}

/// An approver hands their place in the current step to another person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delegation {
    /// Who hands over.
    pub actor: Actor,
    /// Who takes the place.
    pub to: UserId,
    /// Why, optionally.
    pub comment: Option<String>,
    /// The version the delegator saw.
    pub expected_version: Option<u64>,
    /// When.
    pub at: Timestamp,
}

/// The requester takes the request back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// Must be the requester.
    pub actor: Actor,
    /// Why, optionally.
    pub comment: Option<String>,
    /// The version the requester saw.
    pub expected_version: Option<u64>,
    /// When.
    pub at: Timestamp,
}

/// The source system withdrew the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cancellation {
    /// Must be the system that submitted the request.
    pub system: SystemId,
    /// Why, optionally.
    pub reason: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// An administrator moves `from`'s place in the current step to `to`, as if `from` had
/// delegated it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reassignment {
    /// Who reassigns; must have the role `admin`.
    pub actor: Actor,
    /// Whose place moves: an approver of the current step who has not decided.
    pub from: UserId,
    /// Who takes it.
    pub to: UserId,
    /// Why.
    pub comment: Option<String>,
    /// When.
    pub at: Timestamp,
}
