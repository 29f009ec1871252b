//! The small types that carry the domain's rules: identifiers, money, statuses, step rules and the
//! acting person. They hold values; the checks of what a valid value is live in `validation`.

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::period::Period;

/// The namespace of request ids derived from a legacy system's reference (UUID version 5).
const REQUEST_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_2f0e_8a4b_4c39_9f57_3b0e_5a8d_21c4);

/// The id of an approval request, which is also its aggregate id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub Uuid);

impl RequestId {
    /// The id of the request a system submits under `external_ref`.
    ///
    /// Derived, not drawn: a repeated or concurrent submission of the same reference lands on the
    /// same aggregate, so the event store's optimistic lock (not a lookup table) makes submission
    /// idempotent.
    pub fn for_submission(system: &SystemId, external_ref: &str) -> Self {
        let name = format!("{}\n{}", system.0, external_ref);
        Self(Uuid::new_v5(&REQUEST_ID_NAMESPACE, name.as_bytes()))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A person: the `sub` of their token, as the legacy systems name them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub String);

impl UserId {
    /// Wraps a name as it came in; `validation` says whether it is acceptable.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A legacy system, by the key of its `[systems.<key>]` configuration table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SystemId(pub String);

impl SystemId {
    /// Wraps a system key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money: an exact decimal and an ISO 4217 currency code. Never a float.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Stored and sent as a decimal string, so no reader ever rounds it.
    #[serde(with = "rust_decimal::serde::str")]
    pub value: Decimal,
    /// Three upper-case letters, such as `USD`.
    pub currency: String,
}

/// Where a request stands. Only `Pending` accepts decisions; every other status is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the approvers of its current step.
    #[default]
    Pending,
    /// Every step's rule was met.
    Approved,
    /// An approver rejected it.
    Rejected,
    /// An approver sent it back to the requester.
    Returned,
    /// The requester took it back.
    Withdrawn,
    /// The source system withdrew it.
    Cancelled,
    /// Its due time passed while it was pending.
    Expired,
}

impl Status {
    /// The status as the API and the callbacks spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Returned => "returned",
            Self::Withdrawn => "withdrawn",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Whether the status accepts no further commands.
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a step is complete: `"any"`, `"all"` or `{"at_least": N}` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// One approval completes the step.
    Any,
    /// Every approver of the step must approve.
    All,
    /// This many approvals complete the step.
    AtLeast(u32),
}

impl Rule {
    /// Whether `approvals` approvals out of `approvers` approvers meet the rule.
    pub fn is_met(self, approvals: usize, approvers: usize) -> bool {
        match self {
            Self::Any => approvals >= 1,
            Self::All => approvals >= approvers,
            Self::AtLeast(n) => approvals >= n as usize,
        }
    }
}

/// One step as submitted: who decides, by which rule, and by when.
///
/// The deadline's parts are optional and left out of the stored event when absent, so a step
/// without a deadline is stored as it always was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// The people who decide this step, each at most once.
    pub approvers: Vec<UserId>,
    /// What completes the step.
    pub rule: Rule,
    /// How long after the step becomes current it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_in: Option<Period>,
    /// Who becomes an approver of the step too once it is overdue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate_to: Vec<UserId>,
    /// How long before the deadline its undecided approvers are reminded, one reminder each:
    /// the service's `[sla] remind_before` when the request was submitted, recorded so that a
    /// change of configuration never changes the timers of requests already submitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remind_before: Vec<Period>,
    /// The groups whose members may decide this step too, each member as one person: a
    /// person is in a group when their token's `groups` claim lists it. Left out of stored
    /// events when empty, so steps without groups are stored as they always were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl StepSpec {
    /// A step without a deadline.
    pub fn new(approvers: Vec<UserId>, rule: Rule) -> Self {
        Self {
            approvers,
            rule,
            due_in: None,
            escalate_to: vec![],
            remind_before: vec![],
            groups: vec![],
        }
    }
}

/// Which reminder of a step's deadline: one of its `remind_before` moments, or the notice that
/// the deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reminder {
    /// "Due in ...", this long before the deadline.
    Before(Period),
    /// "Overdue", when the deadline passes.
    Overdue,
}

/// What an approver decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Counts towards the step's rule.
    Approve,
    /// Ends the request as rejected.
    Reject,
    /// Ends the request and sends it back to the requester.
    Return,
}

impl Verdict {
    /// The verdict as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Return => "return",
        }
    }
}

/// The roles a token may carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// May read any request and its history.
    pub auditor: bool,
    /// May read any request; operates the service.
    pub admin: bool,
}

/// The person who sent a command, as their token names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Who they are.
    pub user: UserId,
    /// What their token allows beyond their own requests.
    pub roles: Roles,
    /// The groups their token's `groups` claim lists: they may decide steps that name them.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Actor {
    /// A person with no roles.
    pub fn person(user: impl Into<String>) -> Self {
        Self {
            user: UserId::new(user),
            roles: Roles::default(),
            groups: vec![],
        }
    }

    /// Whether their token puts them in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Whether their roles let them read every request.
    pub fn sees_everything(&self) -> bool {
        self.roles.auditor || self.roles.admin
    }
}

/// A moment, always in UTC, always passed in by the caller: the aggregate reads no clock.
pub type Timestamp = DateTime<Utc>;
