//! Micro-benchmarks of the aggregate: deciding and folding a multi-step request, the work the
//! command path does per command besides I/O. Run with `cargo bench -p approval-aggregates`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use approval_aggregates::{
    Actor, ApprovalCommand, ApprovalEvent, ApprovalRequest, Decision, RequestId, Rule, StepSpec,
    Submission, SystemId, UserId, Verdict,
};
use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn at() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
}

/// The contract's three-step purchase order: alice; two of bob, carol, dave; erin and frank.
fn submission() -> Submission {
    let people = |names: &[&str]| names.iter().map(|n| UserId::new(*n)).collect();
    let system = SystemId::new("erp");
    Submission {
        request_id: RequestId::for_submission(&system, "PO-4711"),
        system,
        external_ref: "PO-4711".into(),
        kind: "purchase_order".into(),
        title: "PO 4711: 12 laptops".into(),
        requester: UserId::new("dina"),
        amount: None,
        steps: vec![
            StepSpec::new(people(&["alice"]), Rule::Any),
            StepSpec::new(people(&["bob", "carol", "dave"]), Rule::AtLeast(2)),
            StepSpec::new(people(&["erin", "frank"]), Rule::All),
        ],
        due_at: None,
        details: Some(serde_json::json!({"cost_center": "4100", "lines": 12})),
        link: Some("https://erp.example/po/4711".into()),
        at: at(),
        attachments: vec![],
    }
}

fn approve(user: &str) -> ApprovalCommand {
    ApprovalCommand::Decide(Decision {
        actor: Actor::person(user),
        verdict: Verdict::Approve,
        comment: None,
        expected_version: None,
        at: at(),
        authority: Default::default(),
    })
}

/// Every event of the purchase order, from submission to approval (10 events).
fn history() -> Vec<ApprovalEvent> {
    let mut aggregate = ApprovalRequest::default();
    let mut all = vec![];
    let commands = std::iter::once(ApprovalCommand::Submit(submission()))
        .chain(["alice", "bob", "carol", "erin", "frank"].map(approve));
    for command in commands {
        for event in aggregate.decide_command(command).unwrap() {
            aggregate.fold(event.clone());
            all.push(event);
        }
    }
    all
}

fn benches(c: &mut Criterion) {
    let events = history();
    assert_eq!(events.len(), 10);

    c.bench_function("fold a 3-step request's 10 events", |b| {
        b.iter(|| {
            let mut aggregate = ApprovalRequest::default();
            for event in black_box(&events) {
                aggregate.fold(event.clone());
            }
            aggregate
        })
    });

    // The command path's work per decision: fold what was loaded, then decide.
    let mut before_last = ApprovalRequest::default();
    for event in &events[..7] {
        before_last.fold(event.clone());
    }
    c.bench_function("decide the last approval of a 3-step request", |b| {
        b.iter(|| {
            black_box(&before_last)
                .decide_command(approve("frank"))
                .unwrap()
        })
    });

    c.bench_function("decode and fold 10 stored events (JSON)", |b| {
        let stored: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        b.iter(|| {
            let mut aggregate = ApprovalRequest::default();
            for value in black_box(&stored) {
                let event: ApprovalEvent = serde_json::from_value(value.clone()).unwrap();
                aggregate.fold(event);
            }
            aggregate
        })
    });
}

criterion_group!(aggregate, benches);
criterion_main!(aggregate);
