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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_behind_the_others_catches_up_alone() {
    let mut app = TestApp::spawn().await;
    let mut ids = vec![];
    for n in 0..3 {
        ids.push(app.submit_ok(&purchase_order(&format!("PO-LAG-{n}"))).await);
    }
    app.approve("alice", &ids[0]).await;
    app.stop().await;
    // The inbox loses its tables' contents and its checkpoint, as if it were new.
    for sql in [
        "DELETE FROM rm_inbox",
        "DELETE FROM rm_inbox_state",
        "UPDATE feed_checkpoints SET tx_id = 0, global_id = 0 WHERE name = 'inbox'",
    ] {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    }
    let app = app.restart(Roles::ALL).await;
    let caught_up = eventually(Duration::from_secs(20), || async {
        let alice = app.inbox("alice").await["total"].as_i64();
        let bob = app.inbox("bob").await["total"].as_i64();
        (alice == Some(2) && bob == Some(1)).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the inbox is folded again from the start"
    );
    let detail = app.detail("dina", &ids[0]).await;
    assert_eq!(
        detail["timeline"].as_array().unwrap().len(),
        3,
        "the others applied nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_store_restored_into_another_cluster_from_a_logical_dump_is_refused() {
    let db = common::TestDb::new();
    let settings = common::settings_for(&db, &[]);
    let pool = approval_ledger::store::db::prepare(&settings.database)
        .await
        .unwrap();
    // A row as a logical restore into a younger cluster leaves it: its transaction id was handed
    // out by the old cluster, far ahead of this one's counter.
    let (next,): (i64,) =
        sqlx::query_as("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&pool)
            .await
            .unwrap();
    let payload = serde_json::json!({"RequestCancelled": {"reason": "restored", "at": "2026-11-26T00:00:00Z"}});
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, tx_id) \
         VALUES ('ApprovalRequest', 'restored', 1, 'RequestCancelled', '1.0', $1, '{}', $2)",
    )
    .bind(payload)
    .bind(next + 1_000_000)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let refused = approval_ledger::store::db::prepare(&settings.database).await;
    let error = refused
        .expect_err("a store ahead of the server is refused")
        .to_string();
    assert!(error.contains("logical dump"), "{error}");
    assert!(error.contains("physical backup"), "{error}");
}
