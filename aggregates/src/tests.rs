//! Given/when/then tests of every rule, the refusals included.

use chrono::{TimeZone, Utc};
use cqrs_es::test::TestFramework;
use rust_decimal::Decimal;
use serde_json::json;

use crate::*;

type Given = TestFramework<ApprovalRequest>;

fn at(minute: u32) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 20, 9, minute, 0)
        .single()
        .unwrap_or_default()
}

fn user(name: &str) -> UserId {
    UserId::new(name)
}

fn step(approvers: &[&str], rule: Rule) -> StepSpec {
    StepSpec::new(approvers.iter().map(|a| user(a)).collect(), rule)
}

fn submission() -> Submission {
    let system = SystemId::new("erp");
    Submission {
        request_id: RequestId::for_submission(&system, "PO-4711"),
        system,
        external_ref: "PO-4711".into(),
        kind: "purchase_order".into(),
        title: "PO 4711: 12 laptops".into(),
        requester: user("dina"),
        amount: Some(Money {
            value: Decimal::new(125_000, 2),
            currency: "USD".into(),
        }),
        steps: vec![
            step(&["alice"], Rule::Any),
            step(&["bob", "carol", "dave"], Rule::AtLeast(2)),
            step(&["erin", "frank"], Rule::All),
        ],
        due_at: Some(at(59)),
        details: Some(json!({"any": "JSON shown to approvers"})),
        link: Some("https://erp.example/po/4711".into()),
        at: at(0),
        attachments: vec![],
    }
}

fn submitted_event(s: Submission) -> ApprovalEvent {
    ApprovalEvent::RequestSubmitted {
        request_id: s.request_id,
        system: s.system,
        external_ref: s.external_ref,
        kind: s.kind,
        title: s.title,
        requester: s.requester,
        amount: s.amount,
        steps: s.steps,
        due_at: s.due_at,
        details: s.details,
        link: s.link,
        at: s.at,
        attachments: s.attachments,
    }
}

fn submitted() -> ApprovalEvent {
    submitted_event(submission())
}

fn decision(who: &str, verdict: Verdict, comment: Option<&str>) -> ApprovalCommand {
    ApprovalCommand::Decide(Decision {
        actor: Actor::person(who),
        verdict,
        comment: comment.map(str::to_owned),
        expected_version: None,
        at: at(10),
        authority: Default::default(),
    })
}

fn approve(who: &str) -> ApprovalCommand {
    decision(who, Verdict::Approve, None)
}

/// `who` approved at `step`, deciding on version `seen_version`.
fn approved_by(step: usize, who: &str, seen_version: u64) -> ApprovalEvent {
    ApprovalEvent::ApprovalRecorded {
        step,
        approver: user(who),
        comment: None,
        seen_version,
        at: at(10),
        on_behalf_of: None,
    }
}

fn completed(step: usize) -> ApprovalEvent {
    ApprovalEvent::StepCompleted { step, at: at(10) }
}

fn delegate(from: &str, to: &str) -> ApprovalCommand {
    ApprovalCommand::Delegate(Delegation {
        actor: Actor::person(from),
        to: user(to),
        comment: Some("on leave".into()),
        expected_version: None,
        at: at(5),
    })
}

fn delegated(step: usize, from: &str, to: &str) -> ApprovalEvent {
    ApprovalEvent::ApproverDelegated {
        step,
        from: user(from),
        to: user(to),
        comment: Some("on leave".into()),
        at: at(5),
        by: None,
    }
}

fn fold(events: &[ApprovalEvent]) -> ApprovalRequest {
    let mut aggregate = ApprovalRequest::default();
    for e in events {
        aggregate.fold(e.clone());
    }
    aggregate
}

fn invalid_submission(change: impl FnOnce(&mut Submission), needle: &str) {
    let mut s = submission();
    change(&mut s);
    let result = Given::with(())
        .given_no_previous_events()
        .when(ApprovalCommand::Submit(s))
        .inspect_result();
    match result {
        Err(DomainError::Invalid(message)) => assert!(
            message.contains(needle),
            "expected a message with {needle:?}, got {message:?}"
        ),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

// --- submission -------------------------------------------------------------------------

#[test]
fn a_valid_submission_opens_the_request() {
    Given::with(())
        .given_no_previous_events()
        .when(ApprovalCommand::Submit(submission()))
        .then_expect_events(vec![submitted()]);
}

#[test]
fn submitting_the_same_reference_again_writes_nothing() {
    Given::with(())
        .given(vec![submitted()])
        .when(ApprovalCommand::Submit(submission()))
        .then_expect_events(vec![]);
}

#[test]
fn a_request_id_is_derived_from_system_and_reference() {
    let erp = SystemId::new("erp");
    let hr = SystemId::new("hr");
    assert_eq!(
        RequestId::for_submission(&erp, "PO-1"),
        RequestId::for_submission(&erp, "PO-1")
    );
    assert_ne!(
        RequestId::for_submission(&erp, "PO-1"),
        RequestId::for_submission(&hr, "PO-1")
    );
    assert_ne!(
        RequestId::for_submission(&erp, "PO-1"),
        RequestId::for_submission(&erp, "PO-2")
    );
}

#[test]
fn a_submission_needs_steps() {
    invalid_submission(|s| s.steps.clear(), "steps must not be empty");
}

#[test]
fn a_step_needs_approvers() {
    invalid_submission(
        |s| s.steps[0].approvers.clear(),
        "approvers must not be empty",
    );
}

#[test]
fn at_least_must_fit_the_step() {
    invalid_submission(|s| s.steps[1].rule = Rule::AtLeast(4), "at_least");
    invalid_submission(|s| s.steps[1].rule = Rule::AtLeast(0), "at_least");
}

#[test]
fn a_step_names_each_approver_once() {
    invalid_submission(
        |s| s.steps[1].approvers.push(user("bob")),
        "names bob twice",
    );
}

#[test]
fn a_requester_is_never_an_approver() {
    invalid_submission(
        |s| s.steps[2].approvers.push(user("dina")),
        "names the requester",
    );
}

#[test]
fn texts_must_have_sane_lengths() {
    invalid_submission(|s| s.title = "x".repeat(201), "title must be at most 200");
    invalid_submission(|s| s.title = "  ".into(), "title must not be empty");
    invalid_submission(|s| s.external_ref = String::new(), "external_ref");
    invalid_submission(|s| s.kind = "purchase order".into(), "kind");
    invalid_submission(|s| s.requester = user(&"r".repeat(129)), "requester");
    invalid_submission(|s| s.title = "bell\u{7}".into(), "control characters");
}

#[test]
fn too_many_steps_or_approvers_are_refused() {
    invalid_submission(
        |s| {
            s.steps = (0..21)
                .map(|i| step(&[&format!("a{i}")], Rule::Any))
                .collect()
        },
        "at most 20 steps",
    );
    invalid_submission(
        |s| {
            s.steps[0].approvers = (0..51).map(|i| user(&format!("a{i}"))).collect();
        },
        "more than 50",
    );
}

#[test]
fn money_must_be_a_sane_amount() {
    invalid_submission(
        |s| {
            s.amount = Some(Money {
                value: Decimal::new(-1, 0),
                currency: "USD".into(),
            })
        },
        "negative",
    );
    invalid_submission(
        |s| {
            s.amount = Some(Money {
                value: Decimal::new(1, 7),
                currency: "USD".into(),
            })
        },
        "decimals",
    );
    invalid_submission(
        |s| {
            s.amount = Some(Money {
                value: Decimal::new(1, 0),
                currency: "usd".into(),
            })
        },
        "ISO 4217",
    );
    invalid_submission(
        |s| {
            s.amount = Some(Money {
                value: Decimal::from_i128_with_scale(10_i128.pow(19), 0),
                currency: "USD".into(),
            })
        },
        "integer digits",
    );
}

#[test]
fn details_must_be_a_small_object_and_the_link_a_url() {
    invalid_submission(|s| s.details = Some(json!([1, 2])), "JSON object");
    invalid_submission(
        |s| s.details = Some(json!({"x": "y".repeat(17 * 1024)})),
        "bytes",
    );
    invalid_submission(
        |s| s.link = Some("javascript:alert(1)".into()),
        "http or https",
    );
}

#[test]
fn a_due_time_must_be_in_the_future() {
    invalid_submission(|s| s.due_at = Some(at(0)), "due_at");
}

// --- decisions -----------------------------------------------------------------------

#[test]
fn an_approval_at_an_any_step_completes_it() {
    Given::with(())
        .given(vec![submitted()])
        .when(approve("alice"))
        .then_expect_events(vec![approved_by(0, "alice", 1), completed(0)]);
}

#[test]
fn an_at_least_step_needs_that_many_approvals() {
    Given::with(())
        .given(vec![submitted(), approved_by(0, "alice", 1), completed(0)])
        .when(approve("bob"))
        .then_expect_events(vec![approved_by(1, "bob", 3)]);
    Given::with(())
        .given(vec![
            submitted(),
            approved_by(0, "alice", 1),
            completed(0),
            approved_by(1, "bob", 3),
        ])
        .when(approve("dave"))
        .then_expect_events(vec![approved_by(1, "dave", 4), completed(1)]);
}

#[test]
fn an_all_step_needs_every_approver_and_the_last_step_approves_the_request() {
    let before = vec![
        submitted(),
        approved_by(0, "alice", 1),
        completed(0),
        approved_by(1, "bob", 3),
        approved_by(1, "carol", 4),
        completed(1),
    ];
    Given::with(())
        .given(before.clone())
        .when(approve("erin"))
        .then_expect_events(vec![approved_by(2, "erin", 6)]);
    let mut almost = before;
    almost.push(approved_by(2, "erin", 6));
    Given::with(())
        .given(almost)
        .when(approve("frank"))
        .then_expect_events(vec![
            approved_by(2, "frank", 7),
            completed(2),
            ApprovalEvent::RequestApproved {
                decided_by: user("frank"),
                comment: None,
                at: at(10),
            },
        ]);
}

#[test]
fn steps_run_in_order() {
    Given::with(())
        .given(vec![submitted()])
        .when(approve("bob"))
        .then_expect_error(DomainError::NotAnApprover);
}

#[test]
fn one_rejection_rejects_the_request() {
    Given::with(())
        .given(vec![submitted(), approved_by(0, "alice", 1), completed(0)])
        .when(decision("carol", Verdict::Reject, Some("too expensive")))
        .then_expect_events(vec![ApprovalEvent::RequestRejected {
            step: 1,
            decided_by: user("carol"),
            comment: "too expensive".into(),
            seen_version: 3,
            at: at(10),
            on_behalf_of: None,
        }]);
}

#[test]
fn a_return_sends_the_request_back() {
    let events = vec![
        submitted(),
        ApprovalEvent::RequestReturned {
            step: 0,
            decided_by: user("alice"),
            comment: "add the quote".into(),
            seen_version: 1,
            at: at(10),
            on_behalf_of: None,
        },
    ];
    let state = fold(&events);
    let request = state.request.unwrap_or_else(|| panic!("submitted"));
    assert_eq!(request.status, Status::Returned);
    assert_eq!(request.version, 2);
    Given::with(())
        .given(vec![submitted()])
        .when(decision("alice", Verdict::Return, Some("add the quote")))
        .then_expect_events(vec![events[1].clone()]);
}

#[test]
fn reject_and_return_need_a_comment() {
    Given::with(())
        .given(vec![submitted()])
        .when(decision("alice", Verdict::Reject, None))
        .then_expect_error(DomainError::CommentRequired("reject"));
    Given::with(())
        .given(vec![submitted()])
        .when(decision("alice", Verdict::Return, Some("   ")))
        .then_expect_error(DomainError::CommentRequired("return"));
}

#[test]
fn a_requester_cannot_approve_their_own_request() {
    Given::with(())
        .given(vec![submitted()])
        .when(approve("dina"))
        .then_expect_error(DomainError::OwnRequest);
}

#[test]
fn an_approver_decides_once_per_step() {
    Given::with(())
        .given(vec![
            submitted(),
            approved_by(0, "alice", 1),
            completed(0),
            approved_by(1, "bob", 3),
        ])
        .when(approve("bob"))
        .then_expect_error(DomainError::AlreadyDecided);
}

#[test]
fn an_approver_may_decide_again_at_a_later_step() {
    let mut s = submission();
    s.steps[1].approvers.push(user("alice"));
    Given::with(())
        .given(vec![
            submitted_event(s),
            approved_by(0, "alice", 1),
            completed(0),
        ])
        .when(approve("alice"))
        .then_expect_events(vec![approved_by(1, "alice", 3)]);
}

#[test]
fn a_stranger_sees_nothing() {
    Given::with(())
        .given(vec![submitted()])
        .when(approve("mallory"))
        .then_expect_error(DomainError::NotFound);
    Given::with(())
        .given_no_previous_events()
        .when(approve("alice"))
        .then_expect_error(DomainError::NotFound);
}

#[test]
fn an_auditor_sees_the_request_but_cannot_decide() {
    let auditor = Actor {
        user: user("audrey"),
        roles: Roles {
            auditor: true,
            admin: false,
        },
        groups: vec![],
    };
    Given::with(())
        .given(vec![submitted()])
        .when(ApprovalCommand::Decide(Decision {
            actor: auditor,
            verdict: Verdict::Approve,
            comment: None,
            expected_version: None,
            at: at(10),
            authority: Default::default(),
        }))
        .then_expect_error(DomainError::NotAnApprover);
}

#[test]
fn a_stale_expected_version_is_a_conflict() {
    Given::with(())
        .given(vec![submitted()])
        .when(ApprovalCommand::Decide(Decision {
            actor: Actor::person("alice"),
            verdict: Verdict::Approve,
            comment: None,
            expected_version: Some(3),
            at: at(10),
            authority: Default::default(),
        }))
        .then_expect_error(DomainError::VersionConflict {
            expected: 3,
            actual: 1,
        });
    Given::with(())
        .given(vec![submitted()])
        .when(ApprovalCommand::Decide(Decision {
            actor: Actor::person("alice"),
            verdict: Verdict::Approve,
            comment: None,
            expected_version: Some(1),
            at: at(10),
            authority: Default::default(),
        }))
        .then_expect_events(vec![approved_by(0, "alice", 1), completed(0)]);
}

#[test]
fn final_statuses_accept_nothing() {
    let rejected = vec![
        submitted(),
        ApprovalEvent::RequestRejected {
            step: 0,
            decided_by: user("alice"),
            comment: "no".into(),
            seen_version: 1,
            at: at(10),
            on_behalf_of: None,
        },
    ];
    Given::with(())
        .given(rejected.clone())
        .when(approve("alice"))
        .then_expect_error(DomainError::NotPending(Status::Rejected));
    Given::with(())
        .given(rejected.clone())
        .when(delegate("alice", "zoe"))
        .then_expect_error(DomainError::NotPending(Status::Rejected));
    Given::with(())
        .given(rejected.clone())
        .when(ApprovalCommand::Cancel(Cancellation {
            system: SystemId::new("erp"),
            reason: None,
            at: at(20),
        }))
        .then_expect_error(DomainError::NotPending(Status::Rejected));
    Given::with(())
        .given(rejected)
        .when(ApprovalCommand::Withdraw(Withdrawal {
            actor: Actor::person("dina"),
            comment: None,
            expected_version: None,
            at: at(20),
        }))
        .then_expect_error(DomainError::NotPending(Status::Rejected));
}

// --- delegation -----------------------------------------------------------------------

#[test]
fn a_delegate_takes_the_delegators_place() {
    Given::with(())
        .given(vec![submitted()])
        .when(delegate("alice", "zoe"))
        .then_expect_events(vec![delegated(0, "alice", "zoe")]);
    Given::with(())
        .given(vec![submitted(), delegated(0, "alice", "zoe")])
        .when(approve("zoe"))
        .then_expect_events(vec![approved_by(0, "zoe", 2), completed(0)]);
    Given::with(())
        .given(vec![submitted(), delegated(0, "alice", "zoe")])
        .when(approve("alice"))
        .then_expect_error(DomainError::NotAnApprover);
    let state = fold(&[submitted(), delegated(0, "alice", "zoe")]);
    let request = state.request.unwrap_or_else(|| panic!("submitted"));
    assert_eq!(request.pending_approvers(), vec![&user("zoe")]);
    assert!(request.participants().contains(&user("alice")));
}

#[test]
fn a_delegation_must_go_to_someone_new() {
    Given::with(())
        .given(vec![submitted(), approved_by(0, "alice", 1), completed(0)])
        .when(delegate("bob", "carol"))
        .then_expect_error(DomainError::InvalidDelegate(
            "carol already decides this step".into(),
        ));
    Given::with(())
        .given(vec![submitted()])
        .when(delegate("alice", "dina"))
        .then_expect_error(DomainError::InvalidDelegate(
            "the requester cannot approve their own request".into(),
        ));
    Given::with(())
        .given(vec![submitted()])
        .when(delegate("alice", "alice"))
        .then_expect_error(DomainError::InvalidDelegate(
            "you cannot delegate to yourself".into(),
        ));
    Given::with(())
        .given(vec![submitted()])
        .when(delegate("bob", "zoe"))
        .then_expect_error(DomainError::NotAnApprover);
}

#[test]
fn someone_who_decided_cannot_delegate_the_step() {
    Given::with(())
        .given(vec![
            submitted(),
            approved_by(0, "alice", 1),
            completed(0),
            approved_by(1, "bob", 3),
        ])
        .when(delegate("bob", "zoe"))
        .then_expect_error(DomainError::AlreadyDecided);
}

// --- withdrawal, cancellation, expiry ------------------------------------------------------

#[test]
fn only_the_requester_withdraws() {
    let withdraw = |who: &str| {
        ApprovalCommand::Withdraw(Withdrawal {
            actor: Actor::person(who),
            comment: Some("not needed".into()),
            expected_version: None,
            at: at(20),
        })
    };
    Given::with(())
        .given(vec![submitted()])
        .when(withdraw("dina"))
        .then_expect_events(vec![ApprovalEvent::RequestWithdrawn {
            by: user("dina"),
            comment: Some("not needed".into()),
            at: at(20),
        }]);
    Given::with(())
        .given(vec![submitted()])
        .when(withdraw("alice"))
        .then_expect_error(DomainError::NotRequester);
}

#[test]
fn only_the_source_system_cancels() {
    let cancel = |system: &str| {
        ApprovalCommand::Cancel(Cancellation {
            system: SystemId::new(system),
            reason: Some("PO deleted".into()),
            at: at(20),
        })
    };
    Given::with(())
        .given(vec![submitted()])
        .when(cancel("erp"))
        .then_expect_events(vec![ApprovalEvent::RequestCancelled {
            reason: Some("PO deleted".into()),
            at: at(20),
        }]);
    Given::with(())
        .given(vec![submitted()])
        .when(cancel("hr"))
        .then_expect_error(DomainError::NotFound);
}

#[test]
fn a_request_expires_only_once_due() {
    Given::with(())
        .given(vec![submitted()])
        .when(ApprovalCommand::Expire { at: at(30) })
        .then_expect_error(DomainError::NotDue);
    Given::with(())
        .given(vec![submitted()])
        .when(ApprovalCommand::Expire { at: at(59) })
        .then_expect_events(vec![ApprovalEvent::RequestExpired { at: at(59) }]);
}

// --- folding --------------------------------------------------------------------------------

#[test]
fn folding_the_events_gives_the_state_the_read_side_shows() {
    let state = fold(&[
        submitted(),
        approved_by(0, "alice", 1),
        completed(0),
        approved_by(1, "bob", 3),
    ]);
    let request = state.request.unwrap_or_else(|| panic!("submitted"));
    assert_eq!(request.status, Status::Pending);
    assert_eq!(request.version, 4);
    assert_eq!(request.current_step, 1);
    assert_eq!(
        request.pending_approvers(),
        vec![&user("carol"), &user("dave")]
    );
    assert_eq!(request.steps[0].completed_at, Some(at(10)));
}

#[test]
fn a_final_request_awaits_nobody() {
    let state = fold(&[
        submitted(),
        ApprovalEvent::RequestCancelled {
            reason: None,
            at: at(20),
        },
    ]);
    let request = state.request.unwrap_or_else(|| panic!("submitted"));
    assert_eq!(request.status, Status::Cancelled);
    assert!(request.pending_approvers().is_empty());
    assert_eq!(request.outcome.map(|o| o.at), Some(at(20)));
}

#[test]
fn events_keep_their_wire_names() {
    let value = serde_json::to_value(Rule::AtLeast(2)).unwrap_or_default();
    assert_eq!(value, json!({"at_least": 2}));
    assert_eq!(
        serde_json::to_value(Rule::Any).unwrap_or_default(),
        json!("any")
    );
    let money = serde_json::to_value(Money {
        value: Decimal::new(125_000, 2),
        currency: "USD".into(),
    })
    .unwrap_or_default();
    assert_eq!(money, json!({"value": "1250.00", "currency": "USD"}));
    assert_eq!(submitted().type_name(), "RequestSubmitted");
}

#[test]
fn final_types_are_the_events_with_a_final_status() {
    let events = vec![
        submitted(),
        ApprovalEvent::ApprovalRecorded {
            step: 0,
            approver: user("alice"),
            comment: None,
            seen_version: 1,
            at: at(1),
            on_behalf_of: None,
        },
        ApprovalEvent::StepCompleted { step: 0, at: at(1) },
        ApprovalEvent::RequestApproved {
            decided_by: user("alice"),
            comment: None,
            at: at(2),
        },
        ApprovalEvent::RequestRejected {
            step: 0,
            decided_by: user("alice"),
            comment: "no".into(),
            seen_version: 1,
            at: at(2),
            on_behalf_of: None,
        },
        ApprovalEvent::RequestReturned {
            step: 0,
            decided_by: user("alice"),
            comment: "fix it".into(),
            seen_version: 1,
            at: at(2),
            on_behalf_of: None,
        },
        ApprovalEvent::ApproverDelegated {
            step: 0,
            from: user("alice"),
            to: user("bob"),
            comment: None,
            at: at(2),
            by: None,
        },
        ApprovalEvent::RequestWithdrawn {
            by: user("dina"),
            comment: None,
            at: at(2),
        },
        ApprovalEvent::RequestCancelled {
            reason: None,
            at: at(2),
        },
        ApprovalEvent::RequestExpired { at: at(2) },
        reminded(0, Reminder::Overdue, 1, &["alice"], 2),
        escalated(2),
        ApprovalEvent::InfoRequested {
            step: 0,
            asked_by: user("alice"),
            question: "Which supplier?".into(),
            at: at(2),
        },
        ApprovalEvent::InfoProvided {
            answered_by: user("dina"),
            system: None,
            asked_by: user("alice"),
            answer: "Acme".into(),
            at: at(2),
        },
        ApprovalEvent::CommentAdded {
            by: user("dina"),
            text: "Thanks".into(),
            at: at(2),
        },
        ApprovalEvent::RequestResubmitted {
            round: 2,
            kind: "purchase_order".into(),
            title: "PO".into(),
            amount: None,
            steps: vec![],
            due_at: None,
            details: None,
            link: None,
            attachments: vec![],
            at: at(2),
        },
        ApprovalEvent::AbsenceRecorded {
            person: user("alice"),
            absence_id: uuid::Uuid::nil(),
            deputy: user("bob"),
            from: at(1),
            until: at(2),
            comment: None,
            at: at(0),
        },
        ApprovalEvent::AbsenceEnded {
            person: user("alice"),
            absence_id: uuid::Uuid::nil(),
            at: at(1),
        },
    ];
    let finals: Vec<&str> = events
        .iter()
        .filter(|e| e.final_status().is_some())
        .map(ApprovalEvent::type_name)
        .collect();
    assert_eq!(finals, FINAL_TYPES);
    for event in &events {
        assert_eq!(
            FINAL_TYPES.contains(&event.type_name()),
            event.final_status().is_some()
        );
    }
    // One of every variant: TYPES names exactly them, in the enum's order.
    let all: Vec<&str> = events.iter().map(ApprovalEvent::type_name).collect();
    assert_eq!(all, TYPES);
}

// --- deadlines: reminders, escalation ------------------------------------------------------

fn minutes(n: u64) -> Period {
    Period::from_secs(n * 60)
}

/// Step 0 (alice) is due 20 minutes after submission, reminds 10 minutes before (a reminder
/// 30 minutes before would fall before the step began) and escalates to grace; step 1 (erin)
/// is due 15 minutes after it becomes current.
fn timed_submission() -> Submission {
    let mut s = submission();
    s.due_at = None;
    s.steps = vec![
        StepSpec {
            due_in: Some(minutes(20)),
            escalate_to: vec![user("grace")],
            remind_before: vec![minutes(10), minutes(30)],
            ..step(&["alice"], Rule::Any)
        },
        StepSpec {
            due_in: Some(minutes(15)),
            remind_before: vec![minutes(10)],
            ..step(&["erin"], Rule::Any)
        },
    ];
    s
}

fn timed() -> ApprovalEvent {
    submitted_event(timed_submission())
}

fn remind(step: usize, reminder: Reminder, minute: u32) -> ApprovalCommand {
    ApprovalCommand::Remind {
        step,
        reminder,
        at: at(minute),
    }
}

fn reminded(step: usize, reminder: Reminder, due: u32, to: &[&str], minute: u32) -> ApprovalEvent {
    ApprovalEvent::ReminderSent {
        step,
        reminder,
        due_at: at(due),
        to: to.iter().map(|u| user(u)).collect(),
        at: at(minute),
    }
}

fn escalated(minute: u32) -> ApprovalEvent {
    ApprovalEvent::StepEscalated {
        step: 0,
        added: vec![user("grace")],
        due_at: at(20),
        at: at(minute),
    }
}

#[test]
fn a_steps_deadline_runs_from_when_it_becomes_current() {
    let request = fold(&[timed()])
        .request
        .unwrap_or_else(|| panic!("submitted"));
    assert_eq!(request.steps[0].due_at, Some(at(20)));
    assert_eq!(request.steps[1].due_at, None);
    let request = fold(&[timed(), approved_by(0, "alice", 1), completed(0)])
        .request
        .unwrap_or_else(|| panic!("submitted"));
    assert_eq!(request.steps[1].due_at, Some(at(25)));
    assert!(!request.steps[1].is_overdue(true, at(24)));
    assert!(request.steps[1].is_overdue(true, at(25)));
}

#[test]
fn a_reminder_is_sent_once_to_who_has_not_decided() {
    let before = Reminder::Before(minutes(10));
    Given::with(())
        .given(vec![timed()])
        .when(remind(0, before, 10))
        .then_expect_events(vec![reminded(0, before, 20, &["alice"], 10)]);
    Given::with(())
        .given(vec![timed(), reminded(0, before, 20, &["alice"], 10)])
        .when(remind(0, before, 11))
        .then_expect_error(DomainError::TimerStale("the reminder was sent already"));
}

#[test]
fn a_reminder_is_refused_before_its_moment_and_after_the_deadline() {
    let before = Reminder::Before(minutes(10));
    Given::with(())
        .given(vec![timed()])
        .when(remind(0, before, 9))
        .then_expect_error(DomainError::NotDue);
    Given::with(())
        .given(vec![timed()])
        .when(remind(0, before, 20))
        .then_expect_error(DomainError::TimerStale("the deadline passed already"));
    Given::with(())
        .given(vec![timed()])
        .when(remind(0, Reminder::Overdue, 19))
        .then_expect_error(DomainError::NotDue);
    Given::with(())
        .given(vec![timed()])
        .when(remind(0, Reminder::Before(minutes(30)), 0))
        .then_expect_error(DomainError::TimerStale("the step sets no such reminder"));
}

#[test]
fn a_timer_of_a_step_no_longer_current_or_a_final_request_is_refused() {
    Given::with(())
        .given(vec![timed(), approved_by(0, "alice", 1), completed(0)])
        .when(remind(0, Reminder::Overdue, 21))
        .then_expect_error(DomainError::TimerStale("the step is no longer current"));
    Given::with(())
        .given(vec![timed(), approved_by(0, "alice", 1), completed(0)])
        .when(ApprovalCommand::Escalate {
            step: 0,
            at: at(21),
        })
        .then_expect_error(DomainError::TimerStale("the step is no longer current"));
    let cancelled = ApprovalEvent::RequestCancelled {
        reason: None,
        at: at(5),
    };
    Given::with(())
        .given(vec![timed(), cancelled.clone()])
        .when(remind(0, Reminder::Overdue, 21))
        .then_expect_error(DomainError::NotPending(Status::Cancelled));
    Given::with(())
        .given(vec![timed(), cancelled])
        .when(ApprovalCommand::Escalate {
            step: 0,
            at: at(21),
        })
        .then_expect_error(DomainError::NotPending(Status::Cancelled));
    let mut plain = submission();
    plain.due_at = None;
    Given::with(())
        .given(vec![submitted_event(plain)])
        .when(remind(0, Reminder::Overdue, 21))
        .then_expect_error(DomainError::TimerStale("the step has no deadline"));
}

#[test]
fn an_overdue_step_escalates_once_and_the_new_approver_decides() {
    Given::with(())
        .given(vec![timed()])
        .when(ApprovalCommand::Escalate {
            step: 0,
            at: at(19),
        })
        .then_expect_error(DomainError::NotDue);
    Given::with(())
        .given(vec![timed()])
        .when(ApprovalCommand::Escalate {
            step: 0,
            at: at(21),
        })
        .then_expect_events(vec![escalated(21)]);
    Given::with(())
        .given(vec![timed(), escalated(21)])
        .when(ApprovalCommand::Escalate {
            step: 0,
            at: at(22),
        })
        .then_expect_error(DomainError::TimerStale("the step was escalated already"));
    let request = fold(&[timed(), escalated(21)])
        .request
        .unwrap_or_else(|| panic!("submitted"));
    assert_eq!(
        request.pending_approvers(),
        vec![&user("alice"), &user("grace")]
    );
    Given::with(())
        .given(vec![timed(), escalated(21)])
        .when(approve("grace"))
        .then_expect_events(vec![approved_by(0, "grace", 2), completed(0)]);
}

#[test]
fn escalation_to_someone_who_already_approves_the_step_is_refused() {
    let mut s = timed_submission();
    s.steps[0].escalate_to = vec![user("alice")];
    Given::with(())
        .given(vec![submitted_event(s)])
        .when(ApprovalCommand::Escalate {
            step: 0,
            at: at(21),
        })
        .then_expect_error(DomainError::TimerStale(
            "everyone to escalate to is an approver already",
        ));
}

#[test]
fn an_all_step_counts_its_approvers_as_they_stand_after_escalation() {
    let mut s = timed_submission();
    s.steps[0].approvers = vec![user("alice"), user("bob")];
    s.steps[0].rule = Rule::All;
    let events = vec![
        submitted_event(s),
        escalated(21),
        approved_by(0, "alice", 2),
        approved_by(0, "bob", 3),
    ];
    Given::with(())
        .given(events)
        .when(approve("grace"))
        .then_expect_events(vec![approved_by(0, "grace", 4), completed(0)]);
}

#[test]
fn the_timers_of_a_request_follow_its_state() {
    let keys = |events: &[ApprovalEvent]| -> Vec<(String, Timestamp)> {
        fold(events)
            .request
            .map(|r| r.timers().iter().map(|t| (t.key(), t.fire_at)).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&[timed()]),
        vec![
            ("s0:before:600".to_owned(), at(10)),
            ("s0:overdue".to_owned(), at(20)),
            ("s0:escalation".to_owned(), at(20)),
        ]
    );
    let before = Reminder::Before(minutes(10));
    assert_eq!(
        keys(&[
            timed(),
            reminded(0, before, 20, &["alice"], 10),
            escalated(21)
        ]),
        vec![("s0:overdue".to_owned(), at(20))]
    );
    assert_eq!(
        keys(&[timed(), approved_by(0, "alice", 1), completed(0)]),
        vec![
            ("s1:before:600".to_owned(), at(15)),
            ("s1:overdue".to_owned(), at(25)),
        ]
    );
    // The plain submission has only its expiry; a final request has none.
    assert_eq!(keys(&[submitted()]), vec![("expiry".to_owned(), at(59))]);
    assert!(keys(&[submitted(), ApprovalEvent::RequestExpired { at: at(59) }]).is_empty());
    for timer in fold(&[timed()])
        .request
        .map(|r| r.timers())
        .unwrap_or_default()
    {
        assert_eq!(Timer::from_key(&timer.key(), timer.fire_at), Some(timer));
    }
    assert_eq!(Timer::from_key("s0:sideways", at(1)), None);
}

#[test]
fn a_deadline_must_be_sane_and_escalation_needs_one() {
    invalid_submission(
        |s| s.steps[0].escalate_to = vec![user("grace")],
        "steps[0].escalate_to needs a due_in",
    );
    invalid_submission(
        |s| {
            s.steps[0].due_in = Some(minutes(5));
            s.steps[0].escalate_to = vec![user("dina")];
        },
        "escalate_to names the requester",
    );
    invalid_submission(
        |s| {
            s.steps[0].due_in = Some(minutes(5));
            s.steps[0].escalate_to = vec![user("grace"), user("grace")];
        },
        "names grace twice",
    );
    invalid_submission(
        |s| s.steps[1].due_in = Some(Period::from_secs(0)),
        "steps[1].due_in must be longer than zero",
    );
    invalid_submission(
        |s| s.steps[1].due_in = Some(Period::from_secs(400 * 86_400)),
        "at most 366 days",
    );
}

#[test]
fn a_step_without_a_deadline_is_stored_as_before() {
    let value = serde_json::to_value(step(&["alice"], Rule::Any)).unwrap_or_default();
    assert_eq!(value, json!({"approvers": ["alice"], "rule": "any"}));
    let value = serde_json::to_value(StepSpec {
        due_in: Some(minutes(90)),
        escalate_to: vec![user("grace")],
        ..step(&["alice"], Rule::Any)
    })
    .unwrap_or_default();
    assert_eq!(
        value,
        json!({"approvers": ["alice"], "rule": "any", "due_in": "PT1H30M", "escalate_to": ["grace"]})
    );
    assert_eq!(
        serde_json::to_value(Reminder::Before(minutes(60))).unwrap_or_default(),
        json!({"before": "PT1H"})
    );
    assert_eq!(
        serde_json::to_value(Reminder::Overdue).unwrap_or_default(),
        json!("overdue")
    );
}
