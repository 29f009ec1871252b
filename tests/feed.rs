//! The global feed never skips an event: a transaction that commits late is delivered in its
//! place, and a rolled-back one leaves a hole nobody waits for.
//!
//! These tests hold a transaction open on purpose; snapshots are cluster-wide, so they keep it
//! open as briefly as the point needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use approval_aggregates::{ApprovalEvent, RequestId, Rule, StepSpec, SystemId, UserId};
use approval_ledger::store::{db, feed::Feed};
use approval_projections::Position;
use common::{eventually, settings_for, single_step, TestApp, TestDb};
use sqlx::PgConnection;

/// A submission event as the store holds it: the cqrs-es payload, tagged with its variant.
fn submitted(external_ref: &str, approver: &str) -> (String, serde_json::Value) {
    let system = SystemId::new("erp");
    let id = RequestId::for_submission(&system, external_ref);
    let event = ApprovalEvent::RequestSubmitted {
        request_id: id,
        system,
        external_ref: external_ref.into(),
        kind: "leave".into(),
        title: format!("Leave {external_ref}"),
        requester: UserId::new("dina"),
        amount: None,
        steps: vec![StepSpec {
            approvers: vec![UserId::new(approver)],
            rule: Rule::Any,
        }],
        due_at: None,
        details: None,
        link: None,
        at: chrono::Utc::now(),
    };
    (id.to_string(), serde_json::to_value(event).unwrap())
}

/// Appends a submission with the column list postgres-es uses, so the defaults apply.
async fn append(conn: &mut PgConnection, external_ref: &str, approver: &str) -> String {
    let (id, payload) = submitted(external_ref, approver);
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('ApprovalRequest', $1, 1, 'RequestSubmitted', '1.0', $2, '{}')",
    )
    .bind(&id)
    .bind(payload)
    .execute(conn)
    .await
    .unwrap();
    id
}

async fn global_id(pool: &sqlx::PgPool, id: &str) -> i64 {
    let (g,): (i64,) = sqlx::query_as("SELECT global_id FROM events WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_delivered_in_order_and_a_rollback_does_not_stall_the_feed() {
    let db_guard = TestDb::new();
    let settings = settings_for(&db_guard, &[]);
    let pool = db::prepare(&settings.database).await.unwrap();
    let feed = Feed::new(pool.clone());

    // A takes its transaction id first and holds it open; B and C commit meanwhile.
    let mut held = pool.begin().await.unwrap();
    let a = append(&mut held, "A", "ann").await;
    let mut conn = pool.acquire().await.unwrap();
    let b = append(&mut conn, "B", "ben").await;
    let c = append(&mut conn, "C", "cid").await;

    // A plain cursor over the sequence would deliver B and C now and move past A's id.
    assert!(global_id(&pool, &c).await > global_id(&pool, &b).await);
    let (visible_ids,): (Vec<i64>,) =
        sqlx::query_as("SELECT array_agg(global_id ORDER BY global_id) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(visible_ids.len(), 2, "A is not visible yet");

    // The feed holds B and C back behind A instead.
    let batch = feed.read_after(Position::START, 100).await.unwrap();
    assert!(
        batch.events.is_empty(),
        "nothing is delivered past a running transaction"
    );
    assert!(batch.held_back, "the reader is told to look again soon");

    held.commit().await.unwrap();
    assert!(
        global_id(&pool, &a).await < visible_ids[0],
        "A's id is lower than B's: a plain cursor would have skipped it"
    );

    let delivered = eventually(Duration::from_secs(20), || async {
        let batch = feed.read_after(Position::START, 100).await.unwrap();
        (batch.events.len() == 3).then_some(batch.events)
    })
    .await
    .expect("all three are delivered once A commits");
    let order: Vec<String> = delivered.iter().map(|e| e.request_id.to_string()).collect();
    assert_eq!(order, [a, b, c], "in commit (transaction) order, A first");
    assert!(delivered.windows(2).all(|w| w[0].position < w[1].position));
    let after = delivered[2].position;

    // A rolled-back transaction leaves a hole; the next event still flows.
    let mut doomed = pool.begin().await.unwrap();
    append(&mut doomed, "D", "dan").await;
    doomed.rollback().await.unwrap();
    let e = append(&mut conn, "E", "eve").await;
    let next = eventually(Duration::from_secs(20), || async {
        let batch = feed.read_after(after, 100).await.unwrap();
        (!batch.events.is_empty()).then_some(batch.events)
    })
    .await
    .expect("the feed moves on past the rolled-back transaction");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].request_id.to_string(), e);
    drop(conn);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_deliver_an_event_whose_transaction_committed_late() {
    let app = TestApp::spawn().await;
    let mut held = app.pool.begin().await.unwrap();
    append(&mut held, "HELD", "helen").await;
    let later = tokio::spawn({
        let address = app.address.clone();
        let body = single_step("LATER", &["nina"]);
        async move {
            // Submitted through the API while HELD is still open.
            let ts = chrono::Utc::now().timestamp();
            let text = body.to_string();
            reqwest::Client::new()
                .post(format!("{address}/v1/systems/erp/requests"))
                .header("X-Ledger-Timestamp", ts.to_string())
                .header(
                    "X-Ledger-Signature",
                    approval_ledger::http::auth::signature(common::ERP_SECRET, ts, text.as_bytes()),
                )
                .body(text)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.commit().await.unwrap();
    assert_eq!(later.await.unwrap(), reqwest::StatusCode::CREATED);
    let both = eventually(Duration::from_secs(20), || async {
        let helen = app.inbox("helen").await["total"].as_i64();
        let nina = app.inbox("nina").await["total"].as_i64();
        (helen == Some(1) && nina == Some(1)).then_some(())
    })
    .await;
    assert!(
        both.is_some(),
        "the late commit and the later one are both projected"
    );
}
