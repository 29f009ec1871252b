//! The JSON shapes of the API, with their OpenAPI schemas. Request bodies refuse unknown fields
//! (a misspelt `expected_version` must not silently skip the check) and are turned into the
//! aggregate's commands here; answers are built from the read models' rows.

use std::str::FromStr;

use approval_aggregates::validation::limits;
use approval_aggregates::{
    Money, Period, Request, RequestId, Rule, Step, StepSpec, SystemId, Timestamp, UserId, Verdict,
};
use approval_projections::inbox::InboxRow;
use approval_projections::requests::TimelineEntry;
use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::http::errors::{ApiError, ErrorDetail};

// The schemas of values below state in the OpenAPI document the rules of
// `approval_aggregates::validation`, so that a client (or a fuzzer) can tell a valid value from
// the schema alone. They describe the document only: bodies hold plain strings, which the
// aggregate checks.

/// A character of a name: no white space, no control character.
const NAME_CHAR: &str = r"[^\s\x00-\x1f\x7f-\x9f]";
/// A character of a text: no control character but line breaks and tabs.
const TEXT_CHAR: &str = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]";

/// A name: one or more name characters.
fn name_pattern() -> String {
    format!("^{NAME_CHAR}+$")
}

/// A text: text characters, at least one of them not white space.
fn text_pattern() -> String {
    format!("^{TEXT_CHAR}*{NAME_CHAR}{TEXT_CHAR}*$")
}

/// A string schema of at most `max` characters matching `pattern`.
fn string_schema(description: &str, max: usize, pattern: String) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .into()
}

/// Declares a schema-only type named `$name` whose schema is `$schema`.
macro_rules! value_schema {
    ($(#[doc = $doc:literal])* $name:ident => $schema:expr) => {
        $(#[doc = $doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $name {}
    };
}

value_schema!(
    /// A person's user id: 1 to 128 characters, no white space or control characters.
    Name => string_schema("A user id", limits::USER_ID, name_pattern())
);
value_schema!(
    /// What kind of thing a request is: 1 to 64 characters, no white space or control characters.
    Kind => string_schema("A kind", limits::KIND, name_pattern())
);
value_schema!(
    /// A system's own reference: up to 128 characters, not blank, no control characters.
    ExternalRef => string_schema("A reference", limits::EXTERNAL_REF, text_pattern())
);
value_schema!(
    /// One line for the inbox: up to 200 characters, not blank, no control characters.
    Title => string_schema("A title", limits::TITLE, text_pattern())
);
value_schema!(
    /// The comment that rejecting or returning needs: up to 2000 characters, not blank, no
    /// control characters but line breaks and tabs.
    RequiredComment => string_schema("A comment", limits::COMMENT, text_pattern())
);
value_schema!(
    /// A comment or reason: empty, or as [`RequiredComment`].
    Comment => string_schema(
        "A comment: empty, or not blank",
        limits::COMMENT,
        format!("^({TEXT_CHAR}*{NAME_CHAR}{TEXT_CHAR}*)?$"),
    )
);
value_schema!(
    /// The approvers of a step: up to 50 people, none twice; at least one unless the step
    /// names groups.
    Approvers => ArrayBuilder::new()
        .items(Name::schema())
        .max_items(Some(limits::APPROVERS_PER_STEP))
        .unique_items(true)
        .into()
);
value_schema!(
    /// A group's name, as a token's `groups` claim lists it: 1 to 64 characters, no white space
    /// or control characters.
    GroupName => string_schema("A group", limits::GROUP, name_pattern())
);
value_schema!(
    /// The groups whose members may decide a step: up to 10, none twice.
    Groups => ArrayBuilder::new()
        .items(GroupName::schema())
        .max_items(Some(limits::GROUPS_PER_STEP))
        .unique_items(true)
        .into()
);
value_schema!(
    /// The people a step escalates to: up to 50, none twice.
    Escalations => ArrayBuilder::new()
        .items(Name::schema())
        .max_items(Some(limits::APPROVERS_PER_STEP))
        .unique_items(true)
        .into()
);
value_schema!(
    /// How long until a step is due: an ISO 8601 duration in whole weeks alone, or days, hours,
    /// minutes and seconds in that order, as `approval_aggregates::Period` reads it. The
    /// service also refuses zero and more than 366 days (422), which no pattern can say.
    DueIn => ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "An ISO 8601 duration: PnW, or P[nD][T[nH][nM][nS]] with at least one part; \
             longer than zero and at most 366 days",
        ))
        .pattern(Some(DUE_IN_PATTERN))
        .into()
);

/// What [`DueIn`] matches: `PnW`, or days, then `T` and hours, minutes, seconds, each part a
/// whole number, at least one part, and a `T` only before a time part.
const DUE_IN_PATTERN: &str = "^P(?:[0-9]+W|[0-9]+D(?:T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S))?|T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S))$";

value_schema!(
    /// A version a caller saw, to pass as `expected_version`: a whole number, not negative.
    Version => ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(0))
        .into()
);

/// A whole number that JSON may write as `3`, `3.0` or `0.3e1`: JSON Schema's `integer` takes
/// them all, so all mean 3. Read from the JSON text, exactly (an `f64` would round large ones).
/// `None` for anything else: a fraction, a negative number, one above `T`'s range, not a number.
pub(crate) fn whole<T: TryFrom<u64>>(raw: &RawValue) -> Option<T> {
    let text = raw.get();
    let n = text.parse::<u64>().ok().or_else(|| {
        let exact = Decimal::from_str_exact(text).or_else(|_| Decimal::from_scientific(text));
        exact
            .ok()
            .filter(|d| d.fract().is_zero() && (d.is_zero() || d.is_sign_positive()))
            .and_then(|d| d.trunc().to_u64())
    })?;
    T::try_from(n).ok()
}

/// Reads an optional version: a whole number from 0 to 2^63 - 1 (the document says int64, as
/// every version is one).
pub(crate) fn whole_version<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let Some(raw) = Option::<Box<RawValue>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    whole::<i64>(&raw)
        .map(|n| Some(n.unsigned_abs()))
        .ok_or_else(|| serde::de::Error::custom(format!("{} is not a version", raw.get())))
}

/// Reads the count of `{"at_least": N}`: a whole number that fits 32 bits.
fn whole_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    whole(&raw).ok_or_else(|| serde::de::Error::custom(format!("{} is not a count", raw.get())))
}

/// An amount: a decimal string and an ISO 4217 currency. Never a float.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MoneyDto {
    /// A decimal string, not negative: up to 18 digits, optionally a point and up to 6 decimals.
    #[schema(example = "1250.00", pattern = r"^[0-9]{1,18}(\.[0-9]{1,6})?$")]
    pub value: String,
    /// Three upper-case letters (ISO 4217).
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
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
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RuleDto {
    /// One approval.
    Any,
    /// Every approver.
    All,
    /// N approvals.
    AtLeast(#[serde(deserialize_with = "whole_count")] u32),
}

// Written out, as `utoipa` cannot bound the count of a tuple variant.
impl PartialSchema for RuleDto {
    fn schema() -> RefOr<Schema> {
        let word = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["any", "all"]));
        let count = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(1))
            .maximum(Some(limits::APPROVERS_PER_STEP as u32));
        let at_least = ObjectBuilder::new()
            .property("at_least", count)
            .required("at_least")
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
        OneOfBuilder::new()
            .item(word)
            .item(at_least)
            .description(Some(
                "What completes a step: \"any\" (one approval), \"all\" (every approver) or \
                 {\"at_least\": N}, N at most the step's approvers",
            ))
            .into()
    }
}

impl ToSchema for RuleDto {}

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
    /// The people who decide it, each once; never the requester. May be left out (or empty)
    /// when `groups` names at least one group.
    #[schema(value_type = Option<Approvers>)]
    pub approvers: Option<Vec<String>>,
    /// Groups whose members may decide it too, each member counting as one person (their
    /// token's `groups` claim says who is in a group). A step with groups takes the rule `any`
    /// or `at_least` (never `all`: a group's members are not known).
    #[schema(value_type = Option<Groups>, example = json!(["finance"]))]
    pub groups: Option<Vec<String>>,
    /// What completes it.
    pub rule: RuleDto,
    /// How long after the step becomes current (the first: after submission) it is due, as an
    /// ISO 8601 duration in weeks, days, hours, minutes and seconds. Reminders go out at each
    /// of the service's `[sla] remind_before` moments before it, and an overdue notice when it
    /// passes.
    #[schema(value_type = Option<DueIn>, example = "PT8H")]
    pub due_in: Option<String>,
    /// Who becomes an approver of the step too once it is overdue (needs `due_in`; never the
    /// requester).
    #[schema(value_type = Option<Escalations>, example = json!(["grace"]))]
    pub escalate_to: Option<Vec<String>>,
}

/// A submission from a legacy system.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// The system's own reference; the same reference again returns the same request.
    #[schema(value_type = ExternalRef)]
    pub external_ref: String,
    /// What kind of thing it is.
    #[schema(value_type = Kind)]
    pub kind: String,
    /// One line for the inbox.
    #[schema(value_type = Title)]
    pub title: String,
    /// Who asked; never one of the approvers.
    #[schema(value_type = Name)]
    pub requester: String,
    /// The amount at stake.
    pub amount: Option<MoneyDto>,
    /// The steps, decided in order.
    #[schema(min_items = 1, max_items = 20)]
    pub steps: Vec<StepDto>,
    /// When the decision is due (RFC 3339), in the future; the request expires if still pending
    /// then.
    pub due_at: Option<DateTime<Utc>>,
    /// A JSON object of at most 16 KiB, shown to approvers as it is.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// A link back to the thing in its system: an http or https URL of at most 2048 characters.
    #[schema(max_length = 2048, pattern = r"^https?://[^\s\x00-\x1f\x7f-\x9f]*$")]
    pub link: Option<String>,
    /// Files on the source system that come with the request, at most `[attachments]
    /// max_count` (20 by default); approvers download them through this service.
    #[schema(max_items = 20)]
    pub attachments: Option<Vec<crate::http::attachments::AttachmentDto>>,
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
                approvers: s
                    .approvers
                    .unwrap_or_default()
                    .into_iter()
                    .map(UserId::new)
                    .collect(),
                groups: s.groups.unwrap_or_default(),
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
            attachments: self
                .attachments
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
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
    #[schema(value_type = Option<Comment>)]
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
    #[schema(value_type = Option<Comment>)]
    pub comment: Option<String>,
    /// The version the approver saw; a newer one answers 409 `version_conflict`.
    #[serde(default, deserialize_with = "whole_version")]
    #[schema(value_type = Option<Version>)]
    pub expected_version: Option<u64>,
}

/// Reject or return: a [`DecisionBody`] whose comment is required (the document's view of the
/// same body, which is read as a [`DecisionBody`]; without the comment the answer is 422
/// `comment_required`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(title = "DecisionBody with its comment")]
pub struct CommentedDecisionBody {
    /// Why.
    #[schema(value_type = RequiredComment)]
    pub comment: String,
    /// The version the approver saw; a newer one answers 409 `version_conflict`.
    #[schema(value_type = Option<Version>)]
    pub expected_version: Option<u64>,
}

/// Hand the caller's place in the current step to someone else.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateBody {
    /// Who takes the place: not the caller, not the requester, nobody who already decides the
    /// step.
    #[schema(value_type = Name)]
    pub to: String,
    /// Why.
    #[schema(value_type = Option<Comment>)]
    pub comment: Option<String>,
    /// The version the caller saw.
    #[serde(default, deserialize_with = "whole_version")]
    #[schema(value_type = Option<Version>)]
    pub expected_version: Option<u64>,
}

/// The requester takes the request back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawBody {
    /// Why.
    #[schema(value_type = Option<Comment>)]
    pub comment: Option<String>,
    /// The version the requester saw.
    #[serde(default, deserialize_with = "whole_version")]
    #[schema(value_type = Option<Version>)]
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
    #[serde(default, deserialize_with = "whole_version")]
    #[schema(value_type = Option<Version>)]
    pub expected_version: Option<u64>,
}

/// Several decisions at once, each on its own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// The decisions, 1 to `http.bulk_limit`.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<BulkItem>,
    /// One comment for every item; a reject item without one fails with `comment_required`.
    #[schema(value_type = Option<Comment>)]
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

/// An absence to record: the caller is away from `from` until `until` and `deputy` decides in
/// their place.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbsenceBody {
    /// Who decides in the caller's place: not the caller, and nobody whose own deputies (while
    /// the absence lasts) lead back to the caller.
    #[schema(value_type = Name)]
    pub deputy: String,
    /// When it starts (RFC 3339); may be in the past.
    pub from: DateTime<Utc>,
    /// When it ends (RFC 3339, exclusive): after `from` and in the future.
    pub until: DateTime<Utc>,
    /// Why, optionally.
    #[schema(value_type = Option<Comment>)]
    pub comment: Option<String>,
}

/// An absence of the caller's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AbsenceOut {
    /// Its id.
    pub id: Uuid,
    /// Who decides in the caller's place.
    pub deputy: String,
    /// When it starts.
    pub from: DateTime<Utc>,
    /// When it ends (exclusive); an early end moves it.
    pub until: DateTime<Utc>,
    /// What the caller wrote.
    pub comment: Option<String>,
}

impl From<approval_projections::absences::AbsenceRow> for AbsenceOut {
    fn from(r: approval_projections::absences::AbsenceRow) -> Self {
        Self {
            id: r.id,
            deputy: r.deputy,
            from: r.from_at,
            until: r.until_at,
            comment: r.comment,
        }
    }
}

/// The caller's absences that are not over, earliest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AbsencesAnswer {
    /// The absences.
    pub items: Vec<AbsenceOut>,
}

/// An administrator's reassignment: every pending request where `from` is an undecided
/// approver of the current step goes to `to`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignBody {
    /// Whose places move.
    #[schema(value_type = Name)]
    pub from: String,
    /// Who takes them.
    #[schema(value_type = Name)]
    pub to: String,
    /// Why.
    #[schema(value_type = Option<Comment>)]
    pub comment: Option<String>,
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
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(
        pattern = r"^(-?[0-9]{1,16}|[0-2]?[0-9]{1,17})\.(-?[0-9]{1,16}|[0-2]?[0-9]{1,17})\.[0-9a-fA-F]{32}$"
    )]
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
    /// The absent approver whose place `by` took as their deputy; the decision counts as
    /// theirs. `null` when `by` decided in their own place.
    pub on_behalf_of: Option<String>,
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
    /// The groups whose members may decide it too.
    pub groups: Vec<String>,
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
    /// Its round: 1, and one more each time its system resubmitted it after a return.
    pub round: u32,
    /// The question an approver asked that waits for the requester's answer, if any.
    pub awaiting_answer: Option<crate::http::conversation::AwaitingAnswer>,
    /// The files it came with, to download through this service.
    pub attachments: Vec<crate::http::attachments::AttachmentOut>,
    /// The earlier rounds, oldest first, with their steps and decisions as they ended.
    pub earlier_rounds: Vec<RoundOut>,
}

/// An earlier round of a resubmitted request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoundOut {
    /// Its number, from 1.
    pub round: u32,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// Its steps with every decision, as it ended.
    pub steps: Vec<StepOut>,
    /// How it ended: returned.
    pub outcome: Option<OutcomeOut>,
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
        groups: step.groups.clone(),
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
                on_behalf_of: d.on_behalf_of.as_ref().map(|u| u.0.clone()),
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
            round: request.round,
            awaiting_answer: request
                .question
                .as_ref()
                .map(crate::http::conversation::AwaitingAnswer::of),
            attachments: crate::http::attachments::AttachmentOut::list(
                request.id.0,
                &request.attachments,
            ),
            earlier_rounds: request
                .earlier_rounds
                .iter()
                .map(|r| RoundOut {
                    round: r.round,
                    submitted_at: r.submitted_at,
                    steps: r
                        .steps
                        .iter()
                        .enumerate()
                        .map(|(i, s)| StepOut {
                            // An earlier round is over: its steps are done or closed.
                            state: if s.completed_at.is_some() {
                                "completed"
                            } else {
                                "closed"
                            }
                            .to_owned(),
                            overdue: false,
                            ..step_out(i, s, request, now)
                        })
                        .collect(),
                    outcome: r.outcome.as_ref().map(|o| OutcomeOut {
                        by: o.by.as_ref().map(|b| b.0.clone()),
                        comment: o.comment.clone(),
                        at: o.at,
                    }),
                })
                .collect(),
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
