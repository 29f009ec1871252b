//! The shape and size rules of what comes in: identifiers, texts, money, steps. Each check returns
//! `DomainError::Invalid` with a message that names the field, so a legacy system's developer can
//! fix their call from the error alone.

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::commands::Submission;
use crate::conversation::Attachment;
use crate::error::DomainError;
use crate::types::{Money, Rule, StepSpec, UserId};

/// The limits of a submission and of a decision.
pub mod limits {
    /// Characters of a user id.
    pub const USER_ID: usize = 128;
    /// Characters of an external reference.
    pub const EXTERNAL_REF: usize = 128;
    /// Characters of a kind.
    pub const KIND: usize = 64;
    /// Characters of a title.
    pub const TITLE: usize = 200;
    /// Characters of a comment or reason.
    pub const COMMENT: usize = 2000;
    /// Characters of a link.
    pub const LINK: usize = 2048;
    /// Steps of a request.
    pub const STEPS: usize = 20;
    /// Approvers of one step.
    pub const APPROVERS_PER_STEP: usize = 50;
    /// Bytes of the serialized `details` object.
    pub const DETAILS_BYTES: usize = 16 * 1024;
    /// Digits after the decimal point of an amount.
    pub const AMOUNT_SCALE: u32 = 6;
    /// Digits before the decimal point of an amount.
    pub const AMOUNT_INTEGER_DIGITS: usize = 18;
    /// The longest `due_in` of a step, in seconds: a year.
    pub const DUE_IN_SECS: u64 = 366 * 86_400;
    /// Rounds of a request: its first submission and every resubmission.
    pub const ROUNDS: u32 = 50;
    /// Attachments of one submission, at the most; `[attachments] max_count` may lower it.
    pub const ATTACHMENTS: usize = 50;
    /// Characters of an attachment's name.
    pub const ATTACHMENT_NAME: usize = 255;
    /// Characters of an attachment's media type.
    pub const MEDIA_TYPE: usize = 127;
    /// Groups named by one step.
    pub const GROUPS_PER_STEP: usize = 10;
    /// Characters of a group's name.
    pub const GROUP: usize = 64;
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

/// Checks a free text: present when required, within `max` characters, no control characters
/// other than line breaks and tabs.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(invalid(format!("{field} must be at most {max} characters")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks an optional comment or reason.
pub fn comment(field: &str, value: Option<&str>) -> Result<(), DomainError> {
    match value {
        Some(v) if !v.is_empty() => text(field, v, limits::COMMENT),
        _ => Ok(()),
    }
}

/// Checks a one-token name: no white space, no control characters, within `max` characters.
fn token(field: &str, value: &str, max: usize) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(invalid(format!("{field} must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "{field} must not contain white space or control characters"
        )));
    }
    Ok(())
}

/// Checks a user id.
pub fn user(field: &str, value: &UserId) -> Result<(), DomainError> {
    token(field, value.as_str(), limits::USER_ID)
}

/// Checks an amount: not negative, at most 18 integer digits and 6 decimals, an ISO 4217 code.
pub fn money(value: &Money) -> Result<(), DomainError> {
    if value.value.is_sign_negative() && !value.value.is_zero() {
        return Err(invalid("amount.value must not be negative"));
    }
    if value.value.scale() > limits::AMOUNT_SCALE {
        return Err(invalid(format!(
            "amount.value must have at most {} decimals",
            limits::AMOUNT_SCALE
        )));
    }
    let integer_digits = value.value.trunc().abs().to_string().len();
    if value.value.trunc() != Decimal::ZERO && integer_digits > limits::AMOUNT_INTEGER_DIGITS {
        return Err(invalid(format!(
            "amount.value must have at most {} integer digits",
            limits::AMOUNT_INTEGER_DIGITS
        )));
    }
    if value.currency.len() != 3 || !value.currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(invalid(
            "amount.currency must be an ISO 4217 code of three upper-case letters",
        ));
    }
    Ok(())
}

/// Checks a whole submission: its texts, its steps and its optional parts.
pub fn submission(s: &Submission) -> Result<(), DomainError> {
    token("system", s.system.as_str(), limits::KIND)?;
    text("external_ref", &s.external_ref, limits::EXTERNAL_REF)?;
    token("kind", &s.kind, limits::KIND)?;
    text("title", &s.title, limits::TITLE)?;
    user("requester", &s.requester)?;
    if let Some(amount) = &s.amount {
        money(amount)?;
    }
    steps(s)?;
    attachments(&s.attachments)?;
    if let Some(due_at) = s.due_at {
        if due_at <= s.at {
            return Err(invalid("due_at must be in the future"));
        }
    }
    if let Some(details) = &s.details {
        if !details.is_object() {
            return Err(invalid("details must be a JSON object"));
        }
        if serialized_len(details) > limits::DETAILS_BYTES {
            return Err(invalid(format!(
                "details must be at most {} bytes of JSON",
                limits::DETAILS_BYTES
            )));
        }
    }
    if let Some(link) = &s.link {
        token("link", link, limits::LINK)?;
        if !(link.starts_with("https://") || link.starts_with("http://")) {
            return Err(invalid("link must be an http or https URL"));
        }
    }
    Ok(())
}

/// Checks the attachments a submission describes: at most [`limits::ATTACHMENTS`], each with
/// a name, a `type/subtype` media type, a size above zero, a SHA-256 of 64 lower-case hex
/// digits and an http or https URL. The service's configured, lower limits of count and size
/// are checked where the configuration is known, before the command is built.
pub fn attachments(list: &[Attachment]) -> Result<(), DomainError> {
    if list.len() > limits::ATTACHMENTS {
        return Err(invalid(format!(
            "a request has at most {} attachments",
            limits::ATTACHMENTS
        )));
    }
    for (index, a) in list.iter().enumerate() {
        let field = format!("attachments[{index}]");
        text(&format!("{field}.name"), &a.name, limits::ATTACHMENT_NAME)?;
        if !media_type(&a.media_type) {
            return Err(invalid(format!(
                "{field}.media_type must be a media type such as application/pdf, at most {} characters",
                limits::MEDIA_TYPE
            )));
        }
        if a.size == 0 {
            return Err(invalid(format!("{field}.size must be above zero")));
        }
        let hex = a.sha256.len() == 64
            && a.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(invalid(format!(
                "{field}.sha256 must be 64 lower-case hexadecimal digits"
            )));
        }
        token(&format!("{field}.url"), &a.url, limits::LINK)?;
        if !(a.url.starts_with("https://") || a.url.starts_with("http://")) {
            return Err(invalid(format!("{field}.url must be an http or https URL")));
        }
    }
    Ok(())
}

/// Whether `value` is a media type: `type/subtype`, each of letters, digits and
/// `!#$&^_.+-`, at most [`limits::MEDIA_TYPE`] characters; so it is always a valid header value.
pub fn media_type(value: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    value.len() <= limits::MEDIA_TYPE
        && value
            .split_once('/')
            .is_some_and(|(kind, sub)| part(kind) && part(sub))
}

fn steps(s: &Submission) -> Result<(), DomainError> {
    if s.steps.is_empty() {
        return Err(invalid("steps must not be empty"));
    }
    if s.steps.len() > limits::STEPS {
        return Err(invalid(format!(
            "a request has at most {} steps",
            limits::STEPS
        )));
    }
    for (index, step) in s.steps.iter().enumerate() {
        let field = format!("steps[{index}]");
        if step.approvers.is_empty() && step.groups.is_empty() {
            return Err(invalid(format!(
                "{field} needs approvers or groups: approvers must not be empty"
            )));
        }
        people(&format!("{field}.approvers"), &step.approvers, &s.requester)?;
        groups(&format!("{field}.groups"), &step.groups)?;
        deadline(&field, step, &s.requester)?;
        if step.groups.is_empty() {
            if let Rule::AtLeast(n) = step.rule {
                if n == 0 || n as usize > step.approvers.len() {
                    return Err(invalid(format!(
                        "{field}.rule at_least must be between 1 and the step's {} approvers",
                        step.approvers.len()
                    )));
                }
            }
        } else {
            // A group's members are known only from their tokens, so "every approver" of a
            // step with groups cannot be counted, and at_least can only be bounded loosely.
            match step.rule {
                Rule::All => {
                    return Err(invalid(format!(
                        "{field}.rule all cannot count a group's members: use any or at_least \
                         on a step with groups"
                    )))
                }
                Rule::AtLeast(n) if n == 0 || n as usize > limits::APPROVERS_PER_STEP => {
                    return Err(invalid(format!(
                        "{field}.rule at_least must be between 1 and {}",
                        limits::APPROVERS_PER_STEP
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Checks a step's deadline: a `due_in` longer than zero and at most a year, and people to
/// escalate to only with a deadline, each once, never the requester.
fn deadline(field: &str, step: &StepSpec, requester: &UserId) -> Result<(), DomainError> {
    if let Some(due_in) = step.due_in {
        if due_in.as_secs() == 0 || due_in.as_secs() > limits::DUE_IN_SECS {
            return Err(invalid(format!(
                "{field}.due_in must be longer than zero and at most 366 days"
            )));
        }
    }
    if step.remind_before.iter().any(|p| p.as_secs() == 0) {
        return Err(invalid(format!(
            "{field}.remind_before must be longer than zero"
        )));
    }
    if step.escalate_to.is_empty() {
        return Ok(());
    }
    if step.due_in.is_none() {
        return Err(invalid(format!(
            "{field}.escalate_to needs a due_in: escalation happens when the step is overdue"
        )));
    }
    people(
        &format!("{field}.escalate_to"),
        &step.escalate_to,
        requester,
    )
}

/// Checks the people of a step's list `field`: at most the limit of a step, each a valid user
/// id named once, never the requester.
fn people(field: &str, list: &[UserId], requester: &UserId) -> Result<(), DomainError> {
    if list.len() > limits::APPROVERS_PER_STEP {
        return Err(invalid(format!(
            "{field} has more than {} people",
            limits::APPROVERS_PER_STEP
        )));
    }
    let mut seen = HashSet::new();
    for person in list {
        user(field, person)?;
        if !seen.insert(person) {
            return Err(invalid(format!("{field} names {person} twice")));
        }
        if person == requester {
            return Err(invalid(format!(
                "{field} names the requester {person}: a requester never approves their own request"
            )));
        }
    }
    Ok(())
}

/// Checks a group's name: one token, like a user id but shorter.
pub fn group(field: &str, value: &str) -> Result<(), DomainError> {
    token(field, value, limits::GROUP)
}

/// Checks the groups a step names: at most the limit, each a valid name named once.
fn groups(field: &str, list: &[String]) -> Result<(), DomainError> {
    if list.len() > limits::GROUPS_PER_STEP {
        return Err(invalid(format!(
            "{field} has more than {} groups",
            limits::GROUPS_PER_STEP
        )));
    }
    let mut seen = HashSet::new();
    for g in list {
        group(field, g)?;
        if !seen.insert(g) {
            return Err(invalid(format!("{field} names {g} twice")));
        }
    }
    Ok(())
}

/// The length of a JSON value written compactly, without building the string.
fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}
