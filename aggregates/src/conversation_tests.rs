//! Given/when/then tests of asking, answering, commenting, resubmitting and attachments.

use chrono::{TimeZone, Utc};
use cqrs_es::test::TestFramework;

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

fn attachment() -> Attachment {
    Attachment {
        name: "quote.pdf".into(),
        media_type: "application/pdf".into(),
        size: 1234,
        sha256: "ab".repeat(32),
        url: "https://erp.example/files/1".into(),
    }
}

/// dina's request: alice decides step 0, bob step 1.
fn submission() -> Submission {
    let system = SystemId::new("erp");
    Submission {
        request_id: RequestId::for_submission(&system, "PO-1"),
        system,
        external_ref: "PO-1".into(),
        kind: "purchase_order".into(),
        title: "PO 1".into(),
        requester: user("dina"),
        amount: None,
        steps: vec![
            StepSpec::new(vec![user("alice")], Rule::Any),
            StepSpec::new(vec![user("bob")], Rule::Any),
        ],
        due_at: None,
        details: None,
        link: None,
        at: at(0),
        attachments: vec![attachment()],
    }
}

fn submitted() -> ApprovalEvent {
    let s = submission();
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

fn ask(who: &str) -> ApprovalCommand {
    ApprovalCommand::Ask(Ask {
        actor: Actor::person(who),
        question: "Which supplier?".into(),
        expected_version: None,
        at: at(1),
    })
}

fn asked(who: &str) -> ApprovalEvent {
    ApprovalEvent::InfoRequested {
        step: 0,
        asked_by: user(who),
        question: "Which supplier?".into(),
        at: at(1),
    }
}

fn answer_by(who: &str) -> ApprovalCommand {
    ApprovalCommand::Answer(Answer {
        by: Answerer::Person(Actor::person(who)),
        answer: "Acme".into(),
        at: at(2),
    })
}

fn returned() -> ApprovalEvent {
    ApprovalEvent::RequestReturned {
        step: 0,
        decided_by: user("alice"),
        comment: "wrong quote".into(),
        seen_version: 1,
        on_behalf_of: None,
        at: at(3),
    }
}

fn resubmitted() -> ApprovalEvent {
    let s = submission();
    ApprovalEvent::RequestResubmitted {
        round: 2,
        kind: s.kind,
        title: "PO 1, new quote".into(),
        amount: None,
        steps: s.steps,
        due_at: None,
        details: None,
        link: None,
        attachments: vec![],
        at: at(4),
    }
}

fn resubmission() -> ApprovalCommand {
    let mut s = submission();
    s.title = "PO 1, new quote".into();
    s.attachments = vec![];
    s.at = at(4);
    ApprovalCommand::Resubmit(s)
}

fn refused(given: Vec<ApprovalEvent>, command: ApprovalCommand) -> DomainError {
    match Given::with(()).given(given).when(command).inspect_result() {
        Err(e) => e,
        Ok(events) => panic!("expected a refusal, got {events:?}"),
    }
}

fn fold(events: &[ApprovalEvent]) -> Request {
    let mut aggregate = ApprovalRequest::default();
    for e in events {
        aggregate.fold(e.clone());
    }
    aggregate
        .request
        .unwrap_or_else(|| panic!("the events submit a request"))
}

#[test]
fn an_approver_of_the_current_step_asks_and_the_request_stays_pending() {
    Given::with(())
        .given(vec![submitted()])
        .when(ask("alice"))
        .then_expect_events(vec![asked("alice")]);
    let request = fold(&[submitted(), asked("alice")]);
    assert_eq!(request.status, Status::Pending);
    let question = request
        .question
        .unwrap_or_else(|| panic!("a question is open"));
    assert_eq!(
        (question.asked_by, question.asked_at),
        (user("alice"), at(1))
    );
}

#[test]
fn nobody_but_a_current_approver_asks() {
    for who in ["bob", "dina"] {
        assert_eq!(
            refused(vec![submitted()], ask(who)),
            DomainError::NotAnApprover
        );
    }
    assert_eq!(
        refused(vec![submitted()], ask("mallory")),
        DomainError::NotFound
    );
}

#[test]
fn one_question_is_open_at_a_time() {
    assert_eq!(
        refused(vec![submitted(), asked("alice")], ask("alice")),
        DomainError::QuestionOpen
    );
}

#[test]
fn the_requester_answers_and_the_question_closes() {
    Given::with(())
        .given(vec![submitted(), asked("alice")])
        .when(answer_by("dina"))
        .then_expect_events(vec![ApprovalEvent::InfoProvided {
            answered_by: user("dina"),
            system: None,
            asked_by: user("alice"),
            answer: "Acme".into(),
            at: at(2),
        }]);
}

#[test]
fn the_source_system_answers_for_a_person_and_another_system_cannot() {
    let by_system = |system: &str| {
        ApprovalCommand::Answer(Answer {
            by: Answerer::System {
                system: SystemId::new(system),
                by: user("dina"),
            },
            answer: "Acme".into(),
            at: at(2),
        })
    };
    Given::with(())
        .given(vec![submitted(), asked("alice")])
        .when(by_system("erp"))
        .then_expect_events(vec![ApprovalEvent::InfoProvided {
            answered_by: user("dina"),
            system: Some(SystemId::new("erp")),
            asked_by: user("alice"),
            answer: "Acme".into(),
            at: at(2),
        }]);
    assert_eq!(
        refused(vec![submitted(), asked("alice")], by_system("hr")),
        DomainError::NotFound
    );
}

#[test]
fn only_the_requester_answers_and_only_an_open_question() {
    assert_eq!(
        refused(vec![submitted(), asked("alice")], answer_by("alice")),
        DomainError::OnlyRequesterAnswers
    );
    assert_eq!(
        refused(vec![submitted()], answer_by("dina")),
        DomainError::NoOpenQuestion
    );
}

#[test]
fn an_approver_still_decides_while_a_question_is_open() {
    let result = Given::with(())
        .given(vec![submitted(), asked("alice")])
        .when(ApprovalCommand::Decide(Decision {
            actor: Actor::person("alice"),
            verdict: Verdict::Approve,
            comment: None,
            expected_version: None,
            authority: Default::default(),
            at: at(2),
        }))
        .inspect_result();
    assert!(matches!(result, Ok(events) if events.len() == 2));
}

#[test]
fn a_final_request_has_no_open_question() {
    let request = fold(&[submitted(), asked("alice"), returned()]);
    assert!(request.question.is_none());
}

#[test]
fn participants_comment_and_strangers_and_auditors_do_not() {
    let comment = |actor: Actor| {
        ApprovalCommand::Comment(Remark {
            actor,
            text: "See the new quote".into(),
            at: at(2),
        })
    };
    Given::with(())
        .given(vec![submitted()])
        .when(comment(Actor::person("bob")))
        .then_expect_events(vec![ApprovalEvent::CommentAdded {
            by: user("bob"),
            text: "See the new quote".into(),
            at: at(2),
        }]);
    assert_eq!(
        refused(vec![submitted()], comment(Actor::person("mallory"))),
        DomainError::NotFound
    );
    let mut auditor = Actor::person("audrey");
    auditor.roles.auditor = true;
    assert_eq!(
        refused(vec![submitted()], comment(auditor)),
        DomainError::NotAParticipant
    );
}

#[test]
fn an_empty_question_answer_or_comment_is_refused() {
    let blank = ApprovalCommand::Ask(Ask {
        actor: Actor::person("alice"),
        question: "  ".into(),
        expected_version: None,
        at: at(1),
    });
    assert!(matches!(
        refused(vec![submitted()], blank),
        DomainError::Invalid(_)
    ));
}

#[test]
fn a_returned_request_is_resubmitted_as_round_two_from_the_first_step() {
    Given::with(())
        .given(vec![submitted(), returned()])
        .when(resubmission())
        .then_expect_events(vec![resubmitted()]);
    let request = fold(&[submitted(), returned(), resubmitted()]);
    assert_eq!(request.status, Status::Pending);
    assert_eq!((request.round, request.current_step), (2, 0));
    assert_eq!(request.title, "PO 1, new quote");
    assert!(request.outcome.is_none() && request.attachments.is_empty());
    assert_eq!(request.pending_approvers(), vec![&user("alice")]);
    assert!(request.steps.iter().all(|s| s.decisions.is_empty()));
    let first = &request.earlier_rounds[0];
    assert_eq!(first.round, 1);
    assert_eq!(first.steps[0].decisions[0].verdict, Verdict::Return);
    assert_eq!(
        first.outcome.as_ref().and_then(|o| o.by.clone()),
        Some(user("alice"))
    );
}

#[test]
fn only_a_returned_request_is_resubmitted() {
    assert_eq!(
        refused(vec![submitted()], resubmission()),
        DomainError::NotReturned(Status::Pending)
    );
    assert_eq!(refused(vec![], resubmission()), DomainError::NotFound);
}

#[test]
fn a_resubmission_keeps_its_requester() {
    let ApprovalCommand::Resubmit(mut s) = resubmission() else {
        unreachable!()
    };
    s.requester = user("erin");
    assert!(matches!(
        refused(vec![submitted(), returned()], ApprovalCommand::Resubmit(s)),
        DomainError::Invalid(_)
    ));
}

#[test]
fn an_approver_of_an_earlier_round_still_sees_the_request() {
    let mut s = submission();
    s.steps = vec![StepSpec::new(vec![user("carol")], Rule::Any)];
    let round_two = ApprovalEvent::RequestResubmitted {
        round: 2,
        kind: s.kind,
        title: s.title,
        amount: None,
        steps: s.steps,
        due_at: None,
        details: None,
        link: None,
        attachments: vec![],
        at: at(4),
    };
    let request = fold(&[submitted(), returned(), round_two]);
    assert!(request.is_visible_to(&Actor::person("alice")));
    assert!(request.is_visible_to(&Actor::person("carol")));
}

#[test]
fn a_state_stored_before_rounds_reads_as_round_one() {
    let mut value = serde_json::to_value(fold(&[submitted()])).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("attachments");
    }
    let request: Request = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(request.round, 1);
    assert!(request.earlier_rounds.is_empty() && request.attachments.is_empty());
}

#[test]
fn a_submission_stored_without_attachments_reads_with_none() {
    let stored = serde_json::json!({"RequestSubmitted": {
        "request_id": RequestId::for_submission(&SystemId::new("erp"), "PO-1"),
        "system": "erp", "external_ref": "PO-1", "kind": "k", "title": "t",
        "requester": "dina", "amount": null,
        "steps": [{"approvers": ["alice"], "rule": "any"}],
        "due_at": null, "details": null, "link": null, "at": at(0),
    }});
    let event: ApprovalEvent = serde_json::from_value(stored).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(event, ApprovalEvent::RequestSubmitted { attachments, .. } if attachments.is_empty())
    );
}

#[test]
fn attachments_must_be_well_described() {
    type Change = fn(&mut Attachment);
    let cases: Vec<(Change, &str)> = vec![
        (|a| a.sha256 = "AB".repeat(32), "sha256"),
        (|a| a.sha256 = "ab".into(), "sha256"),
        (|a| a.size = 0, "size"),
        (|a| a.url = "ftp://x/y".into(), "url"),
        (|a| a.media_type = "pdf".into(), "media_type"),
        (|a| a.name = " ".into(), "name"),
    ];
    for (change, needle) in cases {
        let mut s = submission();
        change(&mut s.attachments[0]);
        match refused(vec![], ApprovalCommand::Submit(s)) {
            DomainError::Invalid(message) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected Invalid({needle}), got {other:?}"),
        }
    }
}
