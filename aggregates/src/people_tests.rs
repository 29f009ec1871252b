//! Given/when/then tests of deputies, groups, reassignment, authority and absences.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use cqrs_es::test::TestFramework;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::*;

type Given = TestFramework<ApprovalRequest>;
type GivenAbsences = TestFramework<Absences>;

fn at(minute: u32) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 20, 9, minute, 0)
        .single()
        .unwrap_or_default()
}

fn user(name: &str) -> UserId {
    UserId::new(name)
}

fn usd(value: i64) -> Money {
    Money {
        value: Decimal::new(value, 0),
        currency: "USD".into(),
    }
}

fn submitted(steps: Vec<StepSpec>, amount: Option<Money>) -> ApprovalEvent {
    let system = SystemId::new("erp");
    ApprovalEvent::RequestSubmitted {
        request_id: RequestId::for_submission(&system, "PO-1"),
        system,
        external_ref: "PO-1".into(),
        kind: "purchase_order".into(),
        title: "PO 1".into(),
        requester: user("dina"),
        attachments: vec![],
        amount,
        steps,
        due_at: None,
        details: None,
        link: None,
        at: at(0),
    }
}

fn named(approvers: &[&str], rule: Rule) -> StepSpec {
    StepSpec::new(approvers.iter().map(|a| user(a)).collect(), rule)
}

fn grouped(approvers: &[&str], groups: &[&str], rule: Rule) -> StepSpec {
    let mut step = named(approvers, rule);
    step.groups = groups.iter().map(|g| (*g).to_owned()).collect();
    step
}

fn decide(actor: Actor, verdict: Verdict, authority: Authority) -> ApprovalCommand {
    ApprovalCommand::Decide(Decision {
        actor,
        verdict,
        comment: Some("because".into()),
        expected_version: None,
        at: at(10),
        authority,
    })
}

fn deputising_for(people: &[&str]) -> Authority {
    Authority {
        principals: Some(people.iter().map(|p| user(p)).collect()),
        ..Authority::default()
    }
}

fn member(name: &str, groups: &[&str]) -> Actor {
    let mut actor = Actor::person(name);
    actor.groups = groups.iter().map(|g| (*g).to_owned()).collect();
    actor
}

fn approval(step: usize, by: &str, on_behalf_of: Option<&str>, seen: u64) -> ApprovalEvent {
    ApprovalEvent::ApprovalRecorded {
        step,
        approver: user(by),
        comment: Some("because".into()),
        seen_version: seen,
        on_behalf_of: on_behalf_of.map(user),
        at: at(10),
    }
}

#[test]
fn a_deputy_approves_in_the_absent_persons_place_and_it_counts_as_theirs() {
    Given::with(())
        .given(vec![submitted(vec![named(&["alice"], Rule::Any)], None)])
        .when(decide(
            Actor::person("bob"),
            Verdict::Approve,
            deputising_for(&["alice"]),
        ))
        .then_expect_events(vec![
            approval(0, "bob", Some("alice"), 1),
            ApprovalEvent::StepCompleted {
                step: 0,
                at: at(10),
            },
            ApprovalEvent::RequestApproved {
                decided_by: user("bob"),
                comment: Some("because".into()),
                at: at(10),
            },
        ]);
}

#[test]
fn a_deputy_without_principals_is_not_an_approver_and_does_not_see_the_request() {
    Given::with(())
        .given(vec![submitted(vec![named(&["alice"], Rule::Any)], None)])
        .when(decide(
            Actor::person("bob"),
            Verdict::Approve,
            Authority::default(),
        ))
        .then_expect_error(DomainError::NotFound);
}

#[test]
fn a_deputy_never_decides_a_request_they_submitted() {
    Given::with(())
        .given(vec![submitted(vec![named(&["alice"], Rule::Any)], None)])
        .when(decide(
            Actor::person("dina"),
            Verdict::Approve,
            deputising_for(&["alice"]),
        ))
        .then_expect_error(DomainError::OwnRequest);
}

#[test]
fn once_the_deputy_decided_for_the_absent_person_neither_decides_again() {
    let given = vec![
        submitted(vec![named(&["alice", "carol"], Rule::All)], None),
        approval(0, "bob", Some("alice"), 1),
    ];
    Given::with(())
        .given(given.clone())
        .when(decide(
            Actor::person("bob"),
            Verdict::Approve,
            deputising_for(&["alice"]),
        ))
        .then_expect_error(DomainError::AlreadyDecided);
    Given::with(())
        .given(given)
        .when(decide(
            Actor::person("alice"),
            Verdict::Approve,
            Authority::default(),
        ))
        .then_expect_error(DomainError::AlreadyDecided);
}

#[test]
fn a_group_member_decides_a_step_that_names_their_group() {
    Given::with(())
        .given(vec![submitted(
            vec![grouped(&[], &["finance"], Rule::Any)],
            None,
        )])
        .when(decide(
            member("fay", &["finance"]),
            Verdict::Approve,
            Authority::default(),
        ))
        .then_expect_events(vec![
            approval(0, "fay", None, 1),
            ApprovalEvent::StepCompleted {
                step: 0,
                at: at(10),
            },
            ApprovalEvent::RequestApproved {
                decided_by: user("fay"),
                comment: Some("because".into()),
                at: at(10),
            },
        ]);
}

#[test]
fn one_person_in_two_groups_of_an_at_least_two_step_counts_once() {
    Given::with(())
        .given(vec![
            submitted(
                vec![grouped(&[], &["finance", "legal"], Rule::AtLeast(2))],
                None,
            ),
            approval(0, "fay", None, 1),
        ])
        .when(decide(
            member("fay", &["finance", "legal"]),
            Verdict::Approve,
            Authority::default(),
        ))
        .then_expect_error(DomainError::AlreadyDecided);
}

#[test]
fn someone_outside_the_steps_groups_is_not_an_approver() {
    Given::with(())
        .given(vec![submitted(
            vec![grouped(&["alice"], &["finance"], Rule::Any)],
            None,
        )])
        .when(decide(
            member("gus", &["sales"]),
            Verdict::Approve,
            Authority::default(),
        ))
        .then_expect_error(DomainError::NotFound);
}

fn limited(usd_limit: i64) -> Authority {
    Authority {
        limits: BTreeMap::from([("USD".to_owned(), Decimal::new(usd_limit, 0))]),
        ..Authority::default()
    }
}

#[test]
fn an_approval_above_the_approvers_limit_is_refused() {
    Given::with(())
        .given(vec![submitted(
            vec![named(&["alice"], Rule::Any)],
            Some(usd(1500)),
        )])
        .when(decide(
            Actor::person("alice"),
            Verdict::Approve,
            limited(1000),
        ))
        .then_expect_error(DomainError::OverAuthorityLimit {
            amount: "1500".into(),
            currency: "USD".into(),
            limit: "1000".into(),
        });
}

#[test]
fn a_limit_in_another_currency_does_not_limit() {
    let mut eur = usd(1500);
    eur.currency = "EUR".into();
    Given::with(())
        .given(vec![submitted(
            vec![named(&["alice"], Rule::Any)],
            Some(eur),
        )])
        .when(decide(
            Actor::person("alice"),
            Verdict::Approve,
            limited(1000),
        ))
        .then_expect_events(vec![
            approval(0, "alice", None, 1),
            ApprovalEvent::StepCompleted {
                step: 0,
                at: at(10),
            },
            ApprovalEvent::RequestApproved {
                decided_by: user("alice"),
                comment: Some("because".into()),
                at: at(10),
            },
        ]);
}

#[test]
fn rejecting_is_never_limited_by_amount() {
    Given::with(())
        .given(vec![submitted(
            vec![named(&["alice"], Rule::Any)],
            Some(usd(1500)),
        )])
        .when(decide(
            Actor::person("alice"),
            Verdict::Reject,
            limited(1000),
        ))
        .then_expect_events(vec![ApprovalEvent::RequestRejected {
            step: 0,
            decided_by: user("alice"),
            comment: "because".into(),
            seen_version: 1,
            on_behalf_of: None,
            at: at(10),
        }]);
}

#[test]
fn separation_of_duties_refuses_a_second_step_approved_by_the_same_person() {
    let sod = Authority {
        separation_of_duties: true,
        ..Authority::default()
    };
    Given::with(())
        .given(vec![
            submitted(
                vec![
                    named(&["alice"], Rule::Any),
                    named(&["alice", "bob"], Rule::Any),
                ],
                None,
            ),
            approval(0, "alice", None, 1),
            ApprovalEvent::StepCompleted {
                step: 0,
                at: at(10),
            },
        ])
        .when(decide(Actor::person("alice"), Verdict::Approve, sod))
        .then_expect_error(DomainError::SeparationOfDuties);
}

#[test]
fn separation_of_duties_counts_a_deputys_approval_as_the_absent_persons() {
    let sod = Authority {
        separation_of_duties: true,
        principals: Some(vec![user("alice")]),
        ..Authority::default()
    };
    Given::with(())
        .given(vec![
            submitted(
                vec![
                    named(&["alice"], Rule::Any),
                    named(&["alice", "carol"], Rule::Any),
                ],
                None,
            ),
            approval(0, "alice", None, 1),
            ApprovalEvent::StepCompleted {
                step: 0,
                at: at(10),
            },
        ])
        .when(decide(Actor::person("bob"), Verdict::Approve, sod))
        .then_expect_error(DomainError::SeparationOfDuties);
}

#[test]
fn above_the_version_threshold_a_decision_must_send_expected_version() {
    let binding = Authority {
        require_version_above: Some(Decimal::new(5000, 0)),
        ..Authority::default()
    };
    Given::with(())
        .given(vec![submitted(
            vec![named(&["alice"], Rule::Any)],
            Some(usd(6000)),
        )])
        .when(decide(Actor::person("alice"), Verdict::Reject, binding))
        .then_expect_error(DomainError::ExpectedVersionRequired("5000".into()));
}

#[test]
fn an_administrator_reassigns_an_undecided_approvers_place() {
    let mut admin = Actor::person("root");
    admin.roles.admin = true;
    Given::with(())
        .given(vec![submitted(vec![named(&["alice"], Rule::Any)], None)])
        .when(ApprovalCommand::Reassign(Reassignment {
            actor: admin,
            from: user("alice"),
            to: user("bob"),
            comment: None,
            at: at(5),
        }))
        .then_expect_events(vec![ApprovalEvent::ApproverDelegated {
            step: 0,
            from: user("alice"),
            to: user("bob"),
            comment: None,
            at: at(5),
            by: Some(user("root")),
        }]);
}

#[test]
fn reassigning_without_the_admin_role_is_forbidden() {
    Given::with(())
        .given(vec![submitted(vec![named(&["alice"], Rule::Any)], None)])
        .when(ApprovalCommand::Reassign(Reassignment {
            actor: Actor::person("alice"),
            from: user("alice"),
            to: user("bob"),
            comment: None,
            at: at(5),
        }))
        .then_expect_error(DomainError::Forbidden("reassigning needs the role admin"));
}

fn recording(deputy: &str, from: u32, until: u32, reach: &[&str]) -> AbsenceCommand {
    AbsenceCommand::Record(Recording {
        person: user("alice"),
        absence_id: Uuid::from_u128(u128::from(from) + 1),
        deputy: user(deputy),
        from: at(from),
        until: at(until),
        comment: None,
        deputy_reach: reach.iter().map(|r| user(r)).collect(),
        at: at(0),
    })
}

fn recorded(deputy: &str, from: u32, until: u32) -> ApprovalEvent {
    ApprovalEvent::AbsenceRecorded {
        person: user("alice"),
        absence_id: Uuid::from_u128(u128::from(from) + 1),
        deputy: user(deputy),
        from: at(from),
        until: at(until),
        comment: None,
        at: at(0),
    }
}

#[test]
fn an_absence_is_recorded_with_its_deputy() {
    GivenAbsences::with(())
        .given_no_previous_events()
        .when(recording("bob", 10, 20, &["carol"]))
        .then_expect_events(vec![recorded("bob", 10, 20)]);
}

#[test]
fn an_absence_that_ends_before_it_starts_or_names_oneself_is_invalid() {
    let refused = |command| {
        let mut state = Absences::default();
        state.fold(recorded("bob", 50, 55));
        state.decide_command(command)
    };
    assert!(matches!(
        refused(recording("bob", 20, 10, &[])),
        Err(DomainError::InvalidAbsence(_))
    ));
    assert!(matches!(
        refused(recording("alice", 10, 20, &[])),
        Err(DomainError::InvalidAbsence(_))
    ));
    // Overlapping absences are allowed: both deputies stand in meanwhile.
    assert!(refused(recording("carol", 52, 58, &[])).is_ok());
}

#[test]
fn an_absence_whose_deputy_leads_back_to_the_person_would_close_a_circle() {
    GivenAbsences::with(())
        .given_no_previous_events()
        .when(recording("bob", 10, 20, &["carol", "alice"]))
        .then_expect_error(DomainError::InvalidAbsence(
            "bob (or whoever deputises for them then) names you as deputy: that would close \
             a circle"
                .into(),
        ));
}

#[test]
fn an_absence_ended_early_ends_then_and_ending_it_again_writes_nothing() {
    let id = Uuid::from_u128(11);
    GivenAbsences::with(())
        .given(vec![recorded("bob", 10, 20)])
        .when(AbsenceCommand::End {
            person: user("alice"),
            absence_id: id,
            at: at(15),
        })
        .then_expect_events(vec![ApprovalEvent::AbsenceEnded {
            person: user("alice"),
            absence_id: id,
            at: at(15),
        }]);
    GivenAbsences::with(())
        .given(vec![
            recorded("bob", 10, 20),
            ApprovalEvent::AbsenceEnded {
                person: user("alice"),
                absence_id: id,
                at: at(15),
            },
        ])
        .when(AbsenceCommand::End {
            person: user("alice"),
            absence_id: id,
            at: at(16),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_step_with_groups_needs_no_named_approvers_but_cannot_require_all() {
    let system = SystemId::new("erp");
    let mut s = Submission {
        request_id: RequestId::for_submission(&system, "X"),
        system,
        external_ref: "X".into(),
        kind: "k".into(),
        title: "t".into(),
        requester: user("dina"),
        attachments: vec![],
        amount: None,
        steps: vec![grouped(&[], &["finance"], Rule::AtLeast(2))],
        due_at: None,
        details: None,
        link: None,
        at: at(0),
    };
    assert!(validation::submission(&s).is_ok());
    s.steps = vec![grouped(&[], &["finance"], Rule::All)];
    assert!(validation::submission(&s).is_err());
    s.steps = vec![grouped(&[], &[], Rule::Any)];
    assert!(validation::submission(&s).is_err());
}

#[test]
fn decision_events_stored_before_deputies_read_without_on_behalf_of() {
    let old = serde_json::json!({"ApprovalRecorded": {"step": 0, "approver": "bob",
        "comment": null, "seen_version": 1, "at": "2026-11-20T09:10:00Z"}});
    let event: Result<ApprovalEvent, _> = serde_json::from_value(old);
    assert!(matches!(
        event,
        Ok(ApprovalEvent::ApprovalRecorded {
            on_behalf_of: None,
            ..
        })
    ));
}
