//! Event versioning: decision events stored in version 1.0 (before they recorded
//! `seen_version`) are read as 1.1 by the command path's aggregate, the feed and its
//! projections, and the audit replay, while the stored rows (and their hashes) stay as written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use approval_aggregates::RequestId;
use common::{eventually, expect_error, purchase_order, single_step, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// Appends an event the way the service did before decisions recorded `seen_version`: version
/// 1.0, with the column list postgres-es uses (the trigger chains it).
async fn append_v1_0(app: &TestApp, id: &str, sequence: i64, event_type: &str, body: Value) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) \
         VALUES ('ApprovalRequest', $1, $2, $3, '1.0', $4, '{\"actor\": \"legacy\"}')",
    )
    .bind(id)
    .bind(sequence)
    .bind(event_type)
    .bind(json!({ event_type: body }))
    .execute(&app.pool)
    .await
    .unwrap();
}

/// The version event `sequence` of request `id` is stored in.
async fn stored_version(app: &TestApp, id: &str, sequence: i64) -> String {
    let (version,): (String,) = sqlx::query_as(
        "SELECT event_version FROM events WHERE aggregate_id = $1 AND sequence = $2",
    )
    .bind(id)
    .bind(sequence)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    version
}

/// Waits until the read model shows request `id` at `version`, as `user` sees it.
async fn detail_at(app: &TestApp, user: &str, id: &str, version: u64) -> Value {
    eventually(Duration::from_secs(10), || async {
        let detail = app.detail(user, id).await;
        (detail["version"] == version).then_some(detail)
    })
    .await
    .expect("the projections fold the old events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_stored_in_version_1_0_are_read_as_1_1_everywhere() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-OLD")).await;
    let now = chrono::Utc::now().to_rfc3339();
    append_v1_0(
        &app,
        &id,
        2,
        "ApprovalRecorded",
        json!({"step": 0, "approver": "alice", "comment": "ok from the old app", "at": now}),
    )
    .await;
    append_v1_0(&app, &id, 3, "StepCompleted", json!({"step": 0, "at": now})).await;

    // The projections read them through the feed, upcast.
    let detail = detail_at(&app, "dina", &id, 3).await;
    let alice = &detail["steps"][0]["decisions"][0];
    assert_eq!(alice["by"], "alice");
    assert_eq!(alice["seen_version"], 1, "filled in by the upcaster");
    assert_eq!(detail["current_step"], 1);

    // The feed delivers 1.1 while the store keeps 1.0.
    let events = approval_ledger::store::events::history(
        &app.pool,
        RequestId(Uuid::parse_str(&id).unwrap()),
        i64::MAX,
    )
    .await
    .unwrap();
    assert_eq!(events[1].event_version, "1.1");
    assert_eq!(events[1].payload["seen_version"], 1);
    assert_eq!(stored_version(&app, &id, 2).await, "1.0");

    // The command path's aggregate folds them: bob decides at the second step, on version 3.
    let answer = app.approve("bob", &id).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let detail = app.detail("dina", &id).await;
    assert_eq!(detail["version"], 4);
    assert_eq!(detail["steps"][1]["decisions"][0]["seen_version"], 3);
    assert_eq!(
        stored_version(&app, &id, 4).await,
        "1.1",
        "new events are written in the current version"
    );

    // The replay folds them too, from the CLI and the API.
    let replay = app
        .cli(&["audit", "replay", &id, "--version", "3", "--json"])
        .await;
    assert!(replay.ok(), "{replay:?}");
    let state: Value = serde_json::from_str(&replay.stdout).unwrap();
    assert_eq!(state["steps"][0]["decisions"][0]["seen_version"], 1);
    let api: Value = app
        .get_as("alice", &format!("/v1/requests/{id}/history?version=3"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(api, state);

    // Upcasting reads; it never rewrites: the stored hashes still hold.
    let verify = app.cli(&["audit", "verify", &id]).await;
    assert!(verify.ok(), "{verify:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_stored_in_version_1_0_ends_the_request_for_the_aggregate() {
    let app = TestApp::spawn().await;
    let id = app
        .submit_ok(&single_step("L-OLD", &["alice", "bob"]))
        .await;
    append_v1_0(
        &app,
        &id,
        2,
        "RequestRejected",
        json!({"step": 0, "decided_by": "alice", "comment": "no", "at": chrono::Utc::now()}),
    )
    .await;
    let detail = detail_at(&app, "dina", &id, 2).await;
    assert_eq!(detail["status"], "rejected");
    assert_eq!(detail["steps"][0]["decisions"][0]["seen_version"], 1);
    expect_error(
        app.approve("bob", &id).await,
        StatusCode::CONFLICT,
        "not_pending",
    )
    .await;
}
