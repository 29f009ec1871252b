//! A restart loses nothing: acknowledged commands stay, and read models catch up with events
//! appended while no projection ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use approval_ledger::startup::Roles;
use common::{eventually, purchase_order, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_the_service_loses_nothing() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-RS")).await;
    assert_eq!(app.approve("alice", &id).await.status(), StatusCode::OK);
    assert_eq!(app.approve("bob", &id).await.status(), StatusCode::OK);
    let before = app.detail("dina", &id).await;

    let app = app.restart(Roles::ALL).await;
    let after = app.detail("dina", &id).await;
    assert_eq!(after, before);
    assert_eq!(app.inbox("carol").await["total"], 1);
    // Decisions continue where they stopped, with no event applied twice.
    assert_eq!(app.approve("carol", &id).await.status(), StatusCode::OK);
    let detail = app.detail("dina", &id).await;
    assert_eq!(detail["version"], 6);
    assert_eq!(detail["timeline"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_catch_up_with_what_was_written_while_no_worker_ran() {
    // An API without workers still takes commands; their answers come once the wait runs out.
    let app = TestApp::spawn_with(
        Roles {
            api: true,
            worker: false,
        },
        &[("APPROVAL_LEDGER_LEDGER__READ_YOUR_WRITES_MS", "50")],
    )
    .await;
    let mut ids = vec![];
    for n in 0..5 {
        let response = app.submit(&purchase_order(&format!("PO-OFF-{n}"))).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "commands succeed without workers"
        );
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        app.inbox("alice").await["total"],
        0,
        "nothing projected yet"
    );

    let app = app.restart(Roles::ALL).await;
    let caught_up = eventually(Duration::from_secs(10), || async {
        let inbox = app.inbox("alice").await;
        (inbox["total"] == 5).then_some(inbox)
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the worker projects what was written before it started"
    );
    for id in &ids {
        assert_eq!(app.detail("dina", id).await["status"], "pending");
    }
}
