//! Nothing is written twice: a repeated submission, a retried decision with the same
//! Idempotency-Key (also when its first answer was lost), a bulk retry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use approval_aggregates::{Actor, ApprovalCommand, Decision, RequestId, Verdict};
use approval_ledger::feed::progress::Progress;
use approval_ledger::feed::signal::CommitSignal;
use approval_ledger::ledger::{CommandMeta, Ledger};
use approval_ledger::metrics::Metrics;
use common::{expect_error, purchase_order, single_step, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_reference_again_returns_the_same_request_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let first = app.submit(&purchase_order("PO-77")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let events = app.event_count().await;

    let again = app.submit(&purchase_order("PO-77")).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(app.event_count().await, events);

    // Concurrent duplicates too: one creates, the rest find it.
    let body = purchase_order("PO-78");
    let answers = futures_util::future::join_all((0..5).map(|_| app.submit(&body))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 201]);
    assert_eq!(app.event_count().await, events + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_retried_with_its_key_returns_the_first_answer_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-1")).await;
    let approve = || {
        app.client
            .post(format!("{}/v1/requests/{id}/approve", app.address))
            .bearer_auth(app.token("alice"))
            .header("Idempotency-Key", "tap-1")
            .json(&json!({"comment": "fine"}))
            .send()
    };
    let first = approve().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let events = app.event_count().await;

    let retry = approve().await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(
        retry
            .headers()
            .get("Idempotency-Replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(app.event_count().await, events, "the retry wrote nothing");

    // The same key for a different call is refused.
    let other = app
        .client
        .post(format!("{}/v1/requests/{id}/approve", app.address))
        .bearer_auth(app.token("alice"))
        .header("Idempotency-Key", "tap-1")
        .json(&json!({"comment": "different"}))
        .send()
        .await
        .unwrap();
    expect_error(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    // Keys belong to their sender: bob's "tap-1" is his own.
    let bob = app
        .client
        .post(format!("{}/v1/requests/{id}/approve", app.address))
        .bearer_auth(app.token("bob"))
        .header("Idempotency-Key", "tap-1")
        .json(&json!({"comment": "fine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_finds_its_first_answer_in_the_event_store_when_the_answer_was_lost() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-2")).await;
    // The first attempt appended its events, then the process died before storing its answer:
    // run it through the command path directly, which stores no answer.
    let ledger = Ledger::new(
        app.pool.clone(),
        CommitSignal::default(),
        Progress::new(&[]),
        app.settings.ledger.clone(),
        std::sync::Arc::new(Metrics::default()),
    );
    let request = RequestId(Uuid::parse_str(&id).unwrap());
    let meta = CommandMeta {
        actor: Some("alice".into()),
        idempotency_key: Some("lost-answer".into()),
        ..CommandMeta::default()
    };
    let command = ApprovalCommand::Decide(Decision {
        actor: Actor::person("alice"),
        verdict: Verdict::Approve,
        comment: None,
        expected_version: None,
        at: chrono::Utc::now(),
        authority: Default::default(),
    });
    let executed = ledger
        .execute_unseen(request, command, &meta)
        .await
        .unwrap();
    let events = app.event_count().await;

    let retry = app
        .client
        .post(format!("{}/v1/requests/{id}/approve", app.address))
        .bearer_auth(app.token("alice"))
        .header("Idempotency-Key", "lost-answer")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        retry.status(),
        StatusCode::OK,
        "not already_decided: the first attempt is found"
    );
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["version"], executed.request.version);
    assert_eq!(retry["status"], "pending");
    assert_eq!(app.event_count().await, events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_decisions_answer_each_item_in_order_and_replay_with_their_key() {
    let app = TestApp::spawn().await;
    let a = app.submit_ok(&single_step("B-1", &["alice"])).await;
    let b = app.submit_ok(&single_step("B-2", &["bob"])).await;
    let c = app.submit_ok(&single_step("B-3", &["alice"])).await;
    let stranger = Uuid::new_v4().to_string();
    let body = json!({
        "items": [
            {"id": a, "decision": "approve"},
            {"id": b, "decision": "approve"},
            {"id": stranger, "decision": "approve"},
            {"id": c, "decision": "reject", "expected_version": 1}
        ],
        "comment": "quarter-end batch"
    });
    let send = || {
        app.client
            .post(format!("{}/v1/decisions", app.address))
            .bearer_auth(app.token("alice"))
            .header("Idempotency-Key", "batch-1")
            .json(&body)
            .send()
    };
    let response = send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[0],
        json!({"id": a, "ok": true, "status": "approved", "version": 4})
    );
    assert_eq!(results[1]["ok"], false);
    assert_eq!(
        results[1]["error"]["code"], "not_found",
        "alice cannot see bob's request"
    );
    assert_eq!(results[2]["error"]["code"], "not_found");
    assert_eq!(
        results[3],
        json!({"id": c, "ok": true, "status": "rejected", "version": 2})
    );
    assert_eq!(
        app.inbox("alice").await["total"],
        0,
        "the batch is visible when it answers"
    );

    let events = app.event_count().await;
    let replay: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(replay, answer);
    assert_eq!(app.event_count().await, events);
}
