//! The domain of approval-ledger, pure: no database, no HTTP, no broker, no clock.
//!
//! # Layout
//! - [`types`]: identifiers, money, statuses, step rules, the acting person.
//! - [`commands`]: what callers ask (`Submit`, `Decide`, `Delegate`, `Withdraw`, `Cancel`), and
//!   what timers ask (`Expire`, `Remind`, `Escalate`).
//! - [`events`]: what happened, past tense, with stable type names and versions.
//! - [`aggregate`]: [`ApprovalRequest`], whose `handle` holds every rule and whose `apply` only
//!   assigns state. The read side folds events with the same code.
//! - [`conversation`]: questions and answers, comments, resubmission in rounds, attachments.
//! - [`people`]: [`Authority`] (whom a decision may act for, how much it may approve) and
//!   [`Absences`], each person's absences with their deputies: an aggregate of its own.
//! - [`validation`]: the shape and size rules of a submission.
//! - [`period`]: [`Period`], the ISO 8601 durations of deadlines and reminders.
//! - [`timers`]: the timers a request's state sets (reminders, escalation, expiry) and the
//!   command each one sends when it falls due.
//! - [`upcasters`]: how events stored in an older version are read as the current one.
//! - [`error`]: [`DomainError`], every refusal; the service maps each to a stable error code.
//!
//! Nothing here may reach for I/O or time: every command carries its own `at`.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod commands;
pub mod conversation;
pub mod error;
pub mod events;
pub mod people;
pub mod period;
pub mod timers;
pub mod types;
pub mod upcasters;
pub mod validation;

#[cfg(test)]
mod people_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod conversation_tests;

pub use aggregate::{ApprovalRequest, Outcome, Request, Step, StepDecision, StepDelegation};
pub use commands::{
    ApprovalCommand, Cancellation, Decision, Delegation, Reassignment, Submission, Withdrawal,
};
pub use conversation::{Answer, Answerer, Ask, Attachment, OpenQuestion, Remark, Round};
pub use error::DomainError;
pub use events::{is_final_type, ApprovalEvent, ABSENCE_TYPES, FINAL_TYPES, TYPES};
pub use people::{absences_id, Absence, AbsenceCommand, Absences, Authority, Recording};
pub use period::{Period, PeriodError};
pub use timers::{Timer, TimerKind};
pub use types::{
    Actor, Money, Reminder, RequestId, Roles, Rule, Status, StepSpec, SystemId, Timestamp, UserId,
    Verdict,
};
