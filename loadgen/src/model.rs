//! The benchmark's world: five legacy systems, thousands of approvers, a few hundred requesters,
//! and the requests they exchange. Submissions are drawn here as the JSON a legacy system sends;
//! the service's own DTO turns them into commands, and the aggregate's own `decide_command` and
//! `fold` predict what a decision does, so the load generator never re-implements a rule.

use std::collections::HashMap;

use anyhow::Context as _;
use approval_aggregates::{
    Actor, ApprovalCommand, ApprovalEvent, ApprovalRequest, Decision, Request, Rule, SystemId,
    Timestamp, Verdict,
};
use approval_ledger::http::dto::SubmitBody;
use chrono::Duration;
use serde_json::{json, Value};

/// The legacy systems of the benchmark, each a `[systems.<key>]` table of the service's config.
pub const SYSTEMS: [&str; 5] = ["erp", "hr", "finance", "travel", "contracts"];

/// The kinds of request each system (by index in [`SYSTEMS`]) submits.
const KINDS: [&str; 5] = [
    "purchase_order",
    "leave",
    "invoice",
    "travel_request",
    "contract",
];

/// The people of the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    /// How many approvers (`a00000`, `a00001`, ...).
    pub approvers: usize,
    /// How many requesters (`p0000`, ...); never approvers.
    pub requesters: usize,
}

impl Population {
    /// The name of approver `i`.
    pub fn approver(i: usize) -> String {
        format!("a{i:05}")
    }

    /// The name of requester `i`.
    pub fn requester(i: usize) -> String {
        format!("p{i:04}")
    }

    /// Every approver's name.
    pub fn approver_names(&self) -> Vec<String> {
        (0..self.approvers).map(Self::approver).collect()
    }
}

/// Draws 1 to 4 steps of 1 to 5 distinct approvers each, with a rule that fits the step's size.
fn steps(rng: &mut fastrand::Rng, population: &Population) -> Value {
    let count = match rng.u8(0..10) {
        0 => 1,
        1..=2 => 2,
        3..=6 => 3,
        _ => 4,
    };
    let mut steps = Vec::with_capacity(count);
    for _ in 0..count {
        let size = rng.usize(1..=5);
        let mut people: Vec<String> = Vec::with_capacity(size);
        while people.len() < size {
            let name = Population::approver(rng.usize(0..population.approvers));
            if !people.contains(&name) {
                people.push(name);
            }
        }
        let rule = match (size, rng.u8(0..3)) {
            (1, _) | (_, 0) => json!("any"),
            (_, 1) => json!("all"),
            (n, _) => json!({"at_least": rng.usize(2..=n)}),
        };
        steps.push(json!({"approvers": people, "rule": rule}));
    }
    Value::Array(steps)
}

/// A submission of system `system` (an index into [`SYSTEMS`]) under `external_ref`, as the
/// legacy system sends it: about the contract's purchase order in size.
pub fn submission_body(
    rng: &mut fastrand::Rng,
    population: &Population,
    system: usize,
    external_ref: &str,
    now: Timestamp,
) -> Value {
    let kind = KINDS[system % KINDS.len()];
    let mut body = json!({
        "external_ref": external_ref,
        "kind": kind,
        "title": format!("{external_ref}: {kind} for cost center {}", rng.u16(1000..9999)),
        "requester": Population::requester(rng.usize(0..population.requesters)),
        "steps": steps(rng, population),
        "details": {"cost_center": rng.u16(1000..9999).to_string(), "lines": rng.u8(1..20)},
        "link": format!("https://{}.example/items/{external_ref}", SYSTEMS[system % SYSTEMS.len()]),
    });
    if rng.u8(0..4) != 0 {
        body["amount"] = json!({
            "value": format!("{}.{:02}", rng.u32(10..100_000), rng.u8(0..100)),
            "currency": if rng.bool() { "USD" } else { "EUR" },
        });
    }
    if rng.bool() {
        // Far enough ahead that the service's expiry never fires during a run.
        body["due_at"] = json!((now + Duration::days(rng.i64(30..180))).to_rfc3339());
    }
    body
}

/// Gives one submission in five of the run a deadline on its first step: due in 5 to 20 s, and
/// escalating to one more approver, so that the service's timers fire while the load runs. The
/// data set is seeded without, so its old deadlines do not all fall due at once at the start.
///
/// An `all` step does not escalate: its new approver would have to approve too, which the load's
/// prediction of the request (folded from its own commands, not the timers') cannot know; under
/// `any` and `at_least` an added approver changes nobody's turn.
pub fn with_deadline(rng: &mut fastrand::Rng, population: &Population, body: &mut Value) {
    if rng.u8(0..5) != 0 {
        return;
    }
    let Some(first) = body["steps"].get_mut(0) else {
        return;
    };
    let approvers: Vec<String> = first["approvers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let escalate_to = Population::approver(rng.usize(0..population.approvers));
    first["due_in"] = json!(format!("PT{}S", rng.u8(5..=20)));
    if first["rule"] != "all" && !approvers.contains(&escalate_to) {
        first["escalate_to"] = json!([escalate_to]);
    }
}

/// What the aggregate makes of `body` submitted by `system` at `at`: the request it creates and
/// the events it records.
pub fn submitted(
    system: &str,
    body: &Value,
    at: Timestamp,
) -> anyhow::Result<(Request, Vec<ApprovalEvent>)> {
    let parsed: SubmitBody = serde_json::from_value(body.clone()).context("submission body")?;
    let submission = parsed
        .into_submission(SystemId::new(system), at, &[])
        .map_err(|e| anyhow::anyhow!("the service would refuse the submission: {e}"))?;
    let mut aggregate = ApprovalRequest::default();
    let events = aggregate
        .decide_command(ApprovalCommand::Submit(submission))
        .map_err(|e| anyhow::anyhow!("the aggregate refused the submission: {e}"))?;
    for event in &events {
        aggregate.fold(event.clone());
    }
    let request = aggregate
        .request
        .context("a submission leaves a request behind")?;
    Ok((request, events))
}

/// Applies `user`'s `verdict` to `request` as the aggregate would; returns the events it records.
pub fn decide(
    request: &mut Request,
    user: &str,
    verdict: Verdict,
    comment: Option<String>,
    at: Timestamp,
) -> anyhow::Result<Vec<ApprovalEvent>> {
    let mut aggregate = ApprovalRequest {
        request: Some(request.clone()),
    };
    let events = aggregate
        .decide_command(ApprovalCommand::Decide(Decision {
            actor: Actor::person(user),
            verdict,
            comment,
            expected_version: None,
            at,
            authority: Default::default(),
        }))
        .map_err(|e| anyhow::anyhow!("the aggregate refused {user}'s decision: {e}"))?;
    for event in &events {
        aggregate.fold(event.clone());
    }
    if let Some(after) = aggregate.request {
        *request = after;
    }
    Ok(events)
}

/// How many approvals a request needs from now until it is approved.
pub fn approvals_needed(request: &Request) -> usize {
    request
        .steps
        .iter()
        .skip(request.current_step)
        .map(|s| {
            let need = match s.rule {
                Rule::Any => 1,
                Rule::All => s.approvers.len(),
                Rule::AtLeast(n) => n as usize,
            };
            need.saturating_sub(s.approvals())
        })
        .sum()
}

/// One pending approver of `request`'s open step, drawn at random.
pub fn pick_approver(rng: &mut fastrand::Rng, request: &Request) -> Option<String> {
    let pending = request.pending_approvers();
    if pending.is_empty() {
        return None;
    }
    Some(pending[rng.usize(0..pending.len())].0.clone())
}

/// The metadata the service records beside a system's command.
pub fn system_metadata(system: &str) -> HashMap<String, String> {
    HashMap::from([
        ("request_id".to_owned(), uuid::Uuid::new_v4().to_string()),
        ("system".to_owned(), system.to_owned()),
    ])
}

/// The metadata the service records beside a person's command.
pub fn person_metadata(actor: &str) -> HashMap<String, String> {
    HashMap::from([
        ("request_id".to_owned(), uuid::Uuid::new_v4().to_string()),
        ("actor".to_owned(), actor.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use approval_aggregates::Status;
    use chrono::Utc;

    #[test]
    fn a_drawn_submission_is_accepted_and_can_be_decided_to_the_end() -> anyhow::Result<()> {
        let population = Population {
            approvers: 50,
            requesters: 5,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..200 {
            let now = Utc::now();
            let body = submission_body(&mut rng, &population, i % 5, &format!("T-{i}"), now);
            let (mut request, events) = submitted(SYSTEMS[i % 5], &body, now)?;
            assert_eq!(events.len(), 1);
            let needed = approvals_needed(&request);
            for _ in 0..needed {
                let user = pick_approver(&mut rng, &request).context("someone is pending")?;
                decide(&mut request, &user, Verdict::Approve, None, now)?;
            }
            assert_eq!(request.status, Status::Approved);
        }
        Ok(())
    }

    #[test]
    fn a_deadline_drawn_into_a_submission_is_accepted() -> anyhow::Result<()> {
        let population = Population {
            approvers: 50,
            requesters: 5,
        };
        let mut rng = fastrand::Rng::with_seed(3);
        let mut timed = 0;
        for i in 0..200 {
            let now = Utc::now();
            let mut body = submission_body(&mut rng, &population, i % 5, &format!("D-{i}"), now);
            with_deadline(&mut rng, &population, &mut body);
            let (request, _) = submitted(SYSTEMS[i % 5], &body, now)?;
            if request.steps[0].due_at.is_some() {
                timed += 1;
            }
        }
        assert!((20..80).contains(&timed), "{timed} of 200 with a deadline");
        Ok(())
    }
}
