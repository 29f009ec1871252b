//! The JSON shapes of the API, with their OpenAPI schemas. Request bodies refuse unknown fields
//! (a misspelt `expected_version` must not silently skip the check) and are turned into the
//! aggregate's commands here; answers are built from the read models' rows.

use std::str::FromStr;

use approval_aggregates::{
    Money, Period, Request, RequestId, Rule, Step, StepSpec, SystemId, Timestamp, UserId, Verdict,
};
use approval_projections::inbox::InboxRow;
use approval_projections::requests::TimelineEntry;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::errors::{ApiError, ErrorDetail};

/// An amount: a decimal string and an ISO 4217 currency. Never a float.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MoneyDto {
    /// A decimal string: digits, optionally a point and up to 6 decimals.
    #[schema(example = "1250.00")]
    pub value: String,
    /// Three upper-case letters.
    #[schema(example = "USD")]
    pub currency: String,
}

impl MoneyDto {
    fn parse(&self) -> Result<Money, ApiError> {
        let text = self.value.as_str();
        let digits = text.strip_prefix('-').unwrap_or(text);
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
        let plain =
            |s: &str| !s.is_empty() && s.len() <= 28 && s.bytes().all(|b| b.is_ascii_digit());
        if !plain(whole) || !plain(fraction) {
            return Err(ApiError::invalid(
                "amount.value must be a decimal string such as \"1250.00\"",
            ));
        }
        let value = Decimal::from_str_exact(text)
            .map_err(|_| ApiError::invalid("amount.value is too large or too precise"))?;
        Ok(Money {
            value,
            currency: self.currency.clone(),
        })
    }

    fn of(money: &Money) -> Self {
        Self {
            value: money.value.to_string(),
            currency: money.currency.clone(),
        }
    }
}

/// What completes a step: `"any"`, `"all"` or `{"at_least": N}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RuleDto {
    /// One approval.
    Any,
    /// Every approver.
    All,
    /// N approvals.
    AtLeast(u32),
}

impl From<RuleDto> for Rule {
    fn from(r: RuleDto) -> Self {
        match r {
            RuleDto::Any => Rule::Any,
            RuleDto::All => Rule::All,
            RuleDto::AtLeast(n) => Rule::AtLeast(n),
        }
    }
}

impl From<Rule> for RuleDto {
    fn from(r: Rule) -> Self {
        match r {
            Rule::Any => RuleDto::Any,
            Rule::All => RuleDto::All,
            Rule::AtLeast(n) => RuleDto::AtLeast(n),
        }
    }
}

/// One step of a submission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDto {
    /// The people who decide it, each once.
    pub approvers: Vec<String>,
    /// What completes it.
    pub rule: RuleDto,
    /// How long after the step becomes current (the first: after submission) it is due, as an
    /// ISO 8601 duration in weeks, days, hours, minutes and seconds. Reminders go out at each
    /// of the service's `[sla] remind_before` moments before it, and an overdue notice when it
    /// passes.
    #[schema(example = "PT8H")]
    pub due_in: Option<String>,
    /// Who becomes an approver of the step too once it is overdue (needs `due_in`).
    #[schema(example = json!(["grace"]))]
    pub escalate_to: Option<Vec<String>>,
}

/// A submission from a legacy system.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// The system's own reference; the same reference again returns the same request.
    #[schema(example = "PO-4711")]
    pub external_ref: String,
    /// What kind of thing it is.
    #[schema(example = "purchase_order")]
    pub kind: String,
    /// One line for the inbox.
    #[schema(example = "PO 4711: 12 laptops")]
    pub title: String,
    /// Who asked; never one of the approvers.
    #[schema(example = "dina")]
    pub requester: String,
    /// The amount at stake.
    pub amount: Option<MoneyDto>,
    /// The steps, decided in order.
    pub steps: Vec<StepDto>,
    /// When the decision is due (RFC 3339); the request expires if still pending then.
    pub due_at: Option<DateTime<Utc>>,
    /// A JSON object shown to approvers as it is.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// A link back to the thing in its system.
    pub link: Option<String>,
}

impl SubmitBody {
    /// The submission command for `system`, at `at`; a step with a deadline reminds
    /// `remind_before` ahead of it.
    pub fn into_submission(
        self,
        system: SystemId,
        at: Timestamp,
        remind_before: &[Period],
    ) -> Result<approval_aggregates::Submission, ApiError> {
        let amount = self.amount.as_ref().map(MoneyDto::parse).transpose()?;
        let mut steps = Vec::with_capacity(self.steps.len());
        for (index, s) in self.steps.into_iter().enumerate() {
            let due_in = s
                .due_in
                .as_deref()
                .map(Period::parse)
                .transpose()
                .map_err(|e| ApiError::invalid(format!("steps[{index}].due_in: {e}")))?;
            steps.push(StepSpec {
                approvers: s.approvers.into_iter().map(UserId::new).collect(),
                rule: s.rule.into(),
                due_in,
                escalate_to: s
                    .escalate_to
                    .unwrap_or_default()
                    .into_iter()
                    .map(UserId::new)
                    .collect(),
                remind_before: if due_in.is_some() {
                    remind_before.to_vec()
                } else {
                    vec![]
                },
            });
        }
        Ok(approval_aggregates::Submission {
            request_id: RequestId::for_submission(&system, &self.external_ref),
            system,
            external_ref: self.external_ref,
            kind: self.kind,
            title: self.title,
            requester: UserId::new(self.requester),
            amount,
            steps,
            due_at: self.due_at,
            details: self.details,
            link: self.link,
            at,
        })
    }
}

/// Where a request stands after a command.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct CommandAnswer {
    /// The request.
    pub id: Uuid,
    /// Its status.
    #[schema(example = "pending")]
    pub status: String,
    /// Its version: pass it as `expected_version`.
    pub version: u64,
}

impl From<&Request> for CommandAnswer {
    fn from(r: &Request) -> Self {
        Self {
            id: r.id.0,
            status: r.status.as_str().to_owned(),
            version: r.version,
        }
    }
}

/// A system withdrawing its request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why.
    pub reason: Option<String>,
}

/// A request as its system sees it, for reconciliation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SystemRequestStatus {
    /// The request.
    pub id: Uuid,
    /// The system.
    pub system: String,
    /// The system's reference.
    pub external_ref: String,
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: i64,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Approve, reject or return.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Required to reject or return.
    pub comment: Option<String>,
    /// The version the approver saw; a newer one answers 409 `version_conflict`.
    pub expected_version: Option<u64>,
}

/// Hand the caller's place in the current step to someone else.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateBody {
    /// Who takes the place.
    pub to: String,
    /// Why.
    pub comment: Option<String>,
    /// The version the caller saw.
    pub expected_version: Option<u64>,
}

/// The requester takes the request back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawBody {
    /// Why.
    pub comment: Option<String>,
    /// The version the requester saw.
    pub expected_version: Option<u64>,
}

/// A bulk decision's verdict.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BulkVerdict {
    /// Approve.
    Approve,
    /// Reject (the body's comment is required).
    Reject,
}

impl From<BulkVerdict> for Verdict {
    fn from(v: BulkVerdict) -> Self {
        match v {
            BulkVerdict::Approve => Verdict::Approve,
            BulkVerdict::Reject => Verdict::Reject,
        }
    }
}

/// One item of a bulk decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkItem {
    /// The request.
    pub id: String,
    /// The verdict.
    pub decision: BulkVerdict,
    /// The version the approver saw.
    pub expected_version: Option<u64>,
}

/// Several decisions at once, each on its own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The decisions, at most `http.bulk_limit`.
    pub items: Vec<BulkItem>,
    /// One comment for every item.
    pub comment: Option<String>,
}

/// The result of one bulk item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkResult {
    /// The item's request id, as sent.
    pub id: String,
    /// Whether the decision was recorded.
    pub ok: bool,
    /// The request's status after it, when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The request's version after it, when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Why not, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The results of a bulk decision, in the order of its items.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkAnswer {
    /// One result per item.
    pub results: Vec<BulkResult>,
}

/// One item of an inbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboxItem {
    /// The request.
    pub id: Uuid,
    /// Its system.
    pub system: String,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: String,
    /// Its amount.
    pub amount: Option<MoneyDto>,
    /// Who asked.
    pub requester: String,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// When it is due: the request expires then.
    pub due_at: Option<DateTime<Utc>>,
    /// When its current step is due (the step's `due_in` after it became current).
    pub step_due_at: Option<DateTime<Utc>>,
    /// Whether the current step's deadline has passed.
    pub overdue: bool,
    /// The current step's index, from 0.
    pub step: i32,
    /// Its status (`pending`).
    pub status: String,
    /// Its version.
    pub version: i64,
}

impl From<InboxRow> for InboxItem {
    fn from(r: InboxRow) -> Self {
        let amount = match (r.amount_value, r.amount_currency) {
            (Some(value), Some(currency)) => Some(MoneyDto { value, currency }),
            _ => None,
        };
        Self {
            id: r.request_id,
            system: r.system,
            kind: r.kind,
            title: r.title,
            amount,
            requester: r.requester,
            submitted_at: r.submitted_at,
            due_at: r.due_at,
            step_due_at: r.step_due_at,
            overdue: r.step_due_at.is_some_and(|due| due <= Utc::now()),
            step: r.step,
            status: r.status,
            version: r.version,
        }
    }
}

/// A page of the caller's inbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboxAnswer {
    /// The items, oldest due first.
    pub items: Vec<InboxItem>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
    /// How many items match, on every page.
    pub total: i64,
}

/// The query of `GET /v1/inbox`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// Items per page, 1 to `http.page_limit` (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this system's requests.
    pub system: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
}

/// One decision in a step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionOut {
    /// Who decided.
    pub by: String,
    /// `approve`, `reject` or `return`.
    pub decision: String,
    /// Their comment.
    pub comment: Option<String>,
    /// The request's version they decided on: what they saw. `null` only in read models folded
    /// before decisions recorded it, until `projections rebuild`.
    pub seen_version: Option<u64>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One hand-over in a step.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DelegationOut {
    /// Who handed over.
    pub from: String,
    /// Who took the place.
    pub to: String,
    /// Why.
    pub comment: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One step of a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepOut {
    /// Its index, from 0.
    pub index: usize,
    /// What completes it.
    pub rule: RuleDto,
    /// Who decides it now.
    pub approvers: Vec<String>,
    /// `completed`, `active`, `waiting` (not reached yet) or `closed` (the request ended first).
    pub state: String,
    /// When its rule was met.
    pub completed_at: Option<DateTime<Utc>>,
    /// Its deadline, once it became current, if it has one (its `due_in` after that moment).
    pub due_at: Option<DateTime<Utc>>,
    /// Whether it is the current step of a pending request and its deadline has passed.
    pub overdue: bool,
    /// Every decision in it.
    pub decisions: Vec<DecisionOut>,
    /// Every hand-over in it.
    pub delegations: Vec<DelegationOut>,
}

/// How a request ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutcomeOut {
    /// The person whose act ended it, if a person's did.
    pub by: Option<String>,
    /// Their comment or reason.
    pub comment: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One entry of a request's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineOut {
    /// The event's sequence: the request's version after it.
    pub sequence: i64,
    /// The event's stable id.
    pub event_id: Uuid,
    /// The event's type, such as `ApprovalRecorded`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The person who acted.
    pub actor: Option<String>,
    /// Their comment or reason.
    pub comment: Option<String>,
    /// The step it happened at.
    pub step: Option<i32>,
    /// The person a delegation named.
    pub delegate: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl From<TimelineEntry> for TimelineOut {
    fn from(t: TimelineEntry) -> Self {
        Self {
            sequence: t.sequence,
            event_id: t.event_id,
            event_type: t.event_type,
            actor: t.actor,
            comment: t.comment,
            step: t.step,
            delegate: t.delegate,
            occurred_at: t.occurred_at,
            recorded_at: t.recorded_at,
        }
    }
}

/// A request in full.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestDetail {
    /// The request.
    pub id: Uuid,
    /// Its system.
    pub system: String,
    /// The system's reference.
    pub external_ref: String,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: String,
    /// Who asked.
    pub requester: String,
    /// Its amount.
    pub amount: Option<MoneyDto>,
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: u64,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
    /// The JSON object from its system.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// A link back to its system.
    pub link: Option<String>,
    /// The open step's index, while pending.
    pub current_step: Option<usize>,
    /// Who has yet to decide the open step.
    pub awaiting: Vec<String>,
    /// Every step with every decision.
    pub steps: Vec<StepOut>,
    /// How it ended, once final.
    pub outcome: Option<OutcomeOut>,
    /// Every event, oldest first.
    pub timeline: Vec<TimelineOut>,
}

fn step_out(index: usize, step: &Step, request: &Request, now: Timestamp) -> StepOut {
    let state = if step.completed_at.is_some() {
        "completed"
    } else if request.status.is_final() {
        "closed"
    } else if index == request.current_step {
        "active"
    } else {
        "waiting"
    };
    StepOut {
        index,
        rule: step.rule.into(),
        approvers: step.approvers.iter().map(|a| a.0.clone()).collect(),
        state: state.to_owned(),
        completed_at: step.completed_at,
        due_at: step.due_at,
        overdue: step.is_overdue(
            request.open_step().is_some() && index == request.current_step,
            now,
        ),
        decisions: step
            .decisions
            .iter()
            .map(|d| DecisionOut {
                by: d.by.0.clone(),
                decision: d.verdict.as_str().to_owned(),
                comment: d.comment.clone(),
                seen_version: d.seen_version,
                at: d.at,
            })
            .collect(),
        delegations: step
            .delegations
            .iter()
            .map(|d| DelegationOut {
                from: d.from.0.clone(),
                to: d.to.0.clone(),
                comment: d.comment.clone(),
                at: d.at,
            })
            .collect(),
    }
}

impl RequestDetail {
    /// The detail of `request` with its `timeline`, as it stands at `now` (which says whether
    /// a step is overdue).
    pub fn of(request: &Request, timeline: Vec<TimelineEntry>, now: Timestamp) -> Self {
        Self {
            id: request.id.0,
            system: request.system.0.clone(),
            external_ref: request.external_ref.clone(),
            kind: request.kind.clone(),
            title: request.title.clone(),
            requester: request.requester.0.clone(),
            amount: request.amount.as_ref().map(MoneyDto::of),
            status: request.status.as_str().to_owned(),
            version: request.version,
            submitted_at: request.submitted_at,
            updated_at: request.updated_at,
            due_at: request.due_at,
            details: request.details.clone(),
            link: request.link.clone(),
            current_step: request.open_step().map(|_| request.current_step),
            awaiting: request
                .pending_approvers()
                .into_iter()
                .map(|u| u.0.clone())
                .collect(),
            steps: request
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| step_out(i, s, request, now))
                .collect(),
            outcome: request.outcome.as_ref().map(|o| OutcomeOut {
                by: o.by.as_ref().map(|b| b.0.clone()),
                comment: o.comment.clone(),
                at: o.at,
            }),
            timeline: timeline.into_iter().map(TimelineOut::from).collect(),
        }
    }
}

/// A request id from a path; anything that is not one is a request that does not exist.
pub fn request_id(text: &str) -> Result<RequestId, ApiError> {
    Uuid::from_str(text)
        .map(RequestId)
        .map_err(|_| ApiError::not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(value: &str) -> Result<Money, ApiError> {
        MoneyDto {
            value: value.into(),
            currency: "EUR".into(),
        }
        .parse()
    }

    #[test]
    fn money_must_be_a_plain_decimal_string() {
        assert!(money("1250.00").is_ok());
        assert!(money("0").is_ok());
        assert!(
            money("-3.5").is_ok(),
            "negative amounts are refused by the aggregate"
        );
        for bad in [
            "", "1e5", "1,50", " 1", "1.", ".5", "NaN", "0x10", "1.2.3", "١٢",
        ] {
            assert!(money(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(money(&"9".repeat(40)).is_err());
    }
}
