//! Why the aggregate refuses a command. The service maps each variant to one stable error code
//! and HTTP status in its error table; the aggregate knows nothing of HTTP.

use crate::types::Status;

/// A refusal by the rules of an approval request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The request does not exist, or the caller may not see it.
    #[error("no such request")]
    NotFound,
    /// The submission or command breaks a rule of shape or size.
    #[error("{0}")]
    Invalid(String),
    /// Rejecting or returning needs a comment.
    #[error("a comment is required to {0}")]
    CommentRequired(&'static str),
    /// The caller is the request's requester.
    #[error("a requester cannot decide their own request")]
    OwnRequest,
    /// The caller is not an approver of the current step.
    #[error("you are not an approver of the current step")]
    NotAnApprover,
    /// Only the requester may withdraw.
    #[error("only the requester may withdraw a request")]
    NotRequester,
    /// The caller already decided the current step.
    #[error("you already decided this step")]
    AlreadyDecided,
    /// The request is final.
    #[error("the request is already {0}")]
    NotPending(Status),
    /// The caller's `expected_version` is not the request's version.
    #[error("the request is at version {actual}, not {expected}")]
    VersionConflict {
        /// What the caller saw.
        expected: u64,
        /// What it is now.
        actual: u64,
    },
    /// The delegate cannot take the place.
    #[error("{0}")]
    InvalidDelegate(String),
    /// The request has no due time, or it has not passed.
    #[error("the request is not due yet")]
    NotDue,
    /// A timer's command no longer applies: its step is no longer current, or the reminder or
    /// escalation already happened. A late or repeated timer is refused with this, harmlessly.
    #[error("the timer no longer applies: {0}")]
    TimerStale(&'static str),
    /// Only the requester (or the source system) answers a question.
    #[error("only the requester may answer the question")]
    OnlyRequesterAnswers,
    /// A question is already waiting for its answer.
    #[error("a question is already waiting for its answer")]
    QuestionOpen,
    /// There is no question to answer.
    #[error("no question is waiting for an answer")]
    NoOpenQuestion,
    /// Only a participant (requester, approver, delegate) comments.
    #[error("only a participant of the request may comment on it")]
    NotAParticipant,
    /// Only a returned request can be resubmitted.
    #[error("the request is {0}, not returned: only a returned request can be resubmitted")]
    NotReturned(Status),
    /// The amount is above the most the approver may approve in its currency.
    #[error("the amount {amount} {currency} is above your authority limit of {limit} {currency}")]
    OverAuthorityLimit {
        /// The request's amount.
        amount: String,
        /// Its currency.
        currency: String,
        /// The approver's limit in that currency.
        limit: String,
    },
    /// The approver (or the person they act for) approved another step of this request.
    #[error("you approved another step of this request: a person approves at most one step")]
    SeparationOfDuties,
    /// The amount is above `[policy] require_version_above`: the decision must say which
    /// version it was made on.
    #[error("decisions on amounts above {0} must send expected_version")]
    ExpectedVersionRequired(String),
    /// An absence that cannot be: it ends before it starts, names oneself, is one too many,
    /// or its deputy's own deputies lead back to the absent person.
    #[error("{0}")]
    InvalidAbsence(String),
    /// The caller lacks the role the command needs.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such absence of the caller's.
    #[error("no such absence")]
    AbsenceNotFound,
}
