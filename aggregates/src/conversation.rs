//! Working with the requester: questions and answers, comments, resubmission in rounds, and the
//! attachments a submission describes. The types, commands and rules of those live here, beside
//! the aggregate whose private checks they share; `aggregate.rs` only dispatches to them and
//! folds their events.
//!
//! The rules, in short:
//! - An approver of the current step asks; one question is open at a time. The requester (or the
//!   source system on their behalf) answers it. Decisions stay possible while it is open.
//! - Any participant comments, whatever the request's status.
//! - The source system resubmits a `returned` request: a new round opens from the first step,
//!   the earlier round's steps and decisions are kept aside in [`Round`]s.

use serde::{Deserialize, Serialize};

use crate::aggregate::{ApprovalRequest, Outcome, Step};
use crate::commands::Submission;
use crate::error::DomainError;
use crate::events::ApprovalEvent;
use crate::types::{Actor, Status, SystemId, Timestamp, UserId};
use crate::validation::{self, limits};

/// A file a submission describes: the service stores only this, and streams the file itself
/// from `url` on the source system when someone asks for it, checking `size` and `sha256`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file's name, as shown to people.
    pub name: String,
    /// Its media type, such as `application/pdf`.
    pub media_type: String,
    /// Its exact size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, 64 lower-case hex digits.
    pub sha256: String,
    /// Where the source system serves it (http or https).
    pub url: String,
}

/// The question waiting for its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenQuestion {
    /// What was asked.
    pub question: String,
    /// The approver who asked.
    pub asked_by: UserId,
    /// When.
    pub asked_at: Timestamp,
    /// The step they asked at.
    pub step: usize,
}

/// An earlier round of a resubmitted request, kept as it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Its number, from 1.
    pub round: u32,
    /// When it was submitted (or resubmitted).
    pub submitted_at: Timestamp,
    /// Its steps with every decision made in them.
    pub steps: Vec<Step>,
    /// How it ended (always a return, since only a returned request is resubmitted).
    pub outcome: Option<Outcome>,
}

/// An approver asks the requester a question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// Must be an approver of the current step.
    pub actor: Actor,
    /// The question.
    pub question: String,
    /// The version the approver saw.
    pub expected_version: Option<u64>,
    /// When.
    pub at: Timestamp,
}

/// Who answers a question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answerer {
    /// The requester, in the app.
    Person(Actor),
    /// The request's source system, for the person named `by`.
    System {
        /// The system; must be the request's own.
        system: SystemId,
        /// Who answered there.
        by: UserId,
    },
}

/// The open question's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Who answers.
    pub by: Answerer,
    /// The answer.
    pub answer: String,
    /// When.
    pub at: Timestamp,
}

/// A participant's comment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Remark {
    /// Must be a participant of the request.
    pub actor: Actor,
    /// The comment.
    pub text: String,
    /// When.
    pub at: Timestamp,
}

impl ApprovalRequest {
    pub(crate) fn ask(&self, a: Ask) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.open_for(&a.actor, a.expected_version)?;
        let me = &a.actor.user;
        let step = request.open_step().ok_or(DomainError::NotAnApprover)?;
        // Having decided the step already does not take away the right to ask: an approver who
        // approved may still want to know something before the next one decides.
        if !step.approvers.contains(me) && !step.has_decided(me) {
            return Err(DomainError::NotAnApprover);
        }
        if request.question.is_some() {
            return Err(DomainError::QuestionOpen);
        }
        validation::text("question", &a.question, limits::COMMENT)?;
        Ok(vec![ApprovalEvent::InfoRequested {
            step: request.current_step,
            asked_by: me.clone(),
            question: a.question,
            at: a.at,
        }])
    }

    pub(crate) fn answer(&self, a: Answer) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.submitted()?;
        let (answered_by, system) = match a.by {
            Answerer::Person(actor) => {
                if !request.is_visible_to(&actor) {
                    return Err(DomainError::NotFound);
                }
                if actor.user != request.requester {
                    return Err(DomainError::OnlyRequesterAnswers);
                }
                (actor.user, None)
            }
            Answerer::System { system, by } => {
                if system != request.system {
                    return Err(DomainError::NotFound);
                }
                validation::user("by", &by)?;
                (by, Some(system))
            }
        };
        if request.status.is_final() {
            return Err(DomainError::NotPending(request.status));
        }
        let question = request
            .question
            .as_ref()
            .ok_or(DomainError::NoOpenQuestion)?;
        validation::text("answer", &a.answer, limits::COMMENT)?;
        Ok(vec![ApprovalEvent::InfoProvided {
            answered_by,
            system,
            asked_by: question.asked_by.clone(),
            answer: a.answer,
            at: a.at,
        }])
    }

    pub(crate) fn remark(&self, r: Remark) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.submitted()?;
        if !request.is_visible_to(&r.actor) {
            return Err(DomainError::NotFound);
        }
        // An auditor or admin sees every request but takes part in none.
        if !request.participants().contains(&r.actor.user) {
            return Err(DomainError::NotAParticipant);
        }
        validation::text("text", &r.text, limits::COMMENT)?;
        Ok(vec![ApprovalEvent::CommentAdded {
            by: r.actor.user,
            text: r.text,
            at: r.at,
        }])
    }

    pub(crate) fn resubmit(&self, s: Submission) -> Result<Vec<ApprovalEvent>, DomainError> {
        let request = self.submitted()?;
        if request.system != s.system {
            return Err(DomainError::NotFound);
        }
        validation::submission(&s)?;
        if request.status != Status::Returned {
            return Err(DomainError::NotReturned(request.status));
        }
        if s.requester != request.requester {
            return Err(DomainError::Invalid(format!(
                "requester must stay {}: a resubmission comes back from the one it was returned to",
                request.requester
            )));
        }
        let round = request.round + 1;
        if round > limits::ROUNDS {
            return Err(DomainError::Invalid(format!(
                "a request has at most {} rounds",
                limits::ROUNDS
            )));
        }
        Ok(vec![ApprovalEvent::RequestResubmitted {
            round,
            kind: s.kind,
            title: s.title,
            amount: s.amount,
            steps: s.steps,
            due_at: s.due_at,
            details: s.details,
            link: s.link,
            attachments: s.attachments,
            at: s.at,
        }])
    }
}
