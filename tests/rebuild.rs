//! `projections rebuild` while the service serves: readers never see an empty or half-built
//! read model, commands made during the rebuild are not lost across the swap, and a rebuild of a
//! quiet store gives read models identical to the live ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use approval_ledger::startup::Roles;
use common::{eventually, purchase_order, single_step, TestApp};
use sqlx::PgPool;

/// Every read model table.
const TABLES: [&str; 5] = [
    "rm_requests",
    "rm_timeline",
    "rm_inbox",
    "rm_inbox_state",
    "rm_timers",
];

/// A digest of every row of every read model table.
async fn digest(pool: &PgPool) -> Vec<(String, Option<String>, i64)> {
    let mut out = vec![];
    for table in TABLES {
        let (md5, rows): (Option<String>, i64) = sqlx::query_as(&format!(
            "SELECT md5(string_agg(t::text, E'\\n' ORDER BY t::text)), count(*) FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((table.to_owned(), md5, rows));
    }
    out
}

/// The tables' identities and their indexes' names.
async fn oids_and_indexes(pool: &PgPool) -> (Vec<i64>, Vec<String>) {
    let oids: Vec<(i64,)> = sqlx::query_as(
        "SELECT c.oid::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relname = ANY($1) ORDER BY c.relname",
    )
    .bind(TABLES)
    .fetch_all(pool)
    .await
    .unwrap();
    let indexes: Vec<(String,)> = sqlx::query_as(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' \
         AND tablename = ANY($1) ORDER BY indexname",
    )
    .bind(TABLES)
    .fetch_all(pool)
    .await
    .unwrap();
    (
        oids.into_iter().map(|(o,)| o).collect(),
        indexes.into_iter().map(|(i,)| i).collect(),
    )
}

/// Waits until every projection has read every event.
async fn settled(app: &TestApp) {
    let pool = app.pool.clone();
    let done = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let (behind,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM feed_checkpoints c \
                 WHERE c.name IN ('requests', 'inbox') AND EXISTS ( \
                     SELECT 1 FROM events e WHERE (e.tx_id, e.global_id) > (c.tx_id, c.global_id))",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (behind == 0).then_some(())
        }
    })
    .await;
    assert!(done.is_some(), "the projections catch up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_api_serves_swaps_in_identical_read_models() {
    let app = Arc::new(TestApp::spawn().await);
    // alice awaits 12 requests; three purchase orders have moved on.
    let mut ids = vec![];
    for n in 0..12 {
        ids.push(
            app.submit_ok(&single_step(&format!("L-{n}"), &["alice", "bob"]))
                .await,
        );
    }
    for n in 0..3 {
        let po = app.submit_ok(&purchase_order(&format!("PO-{n}"))).await;
        assert_eq!(app.approve("alice", &po).await.status(), 200);
        assert_eq!(app.approve("carol", &po).await.status(), 200);
    }
    settled(&app).await;
    let before = oids_and_indexes(&app.pool).await;

    // Readers poll all the while; a writer submits requests for zed.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (app, stop, reads, wrong, ids) = (
            app.clone(),
            stop.clone(),
            reads.clone(),
            wrong.clone(),
            ids.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let inbox = app.inbox("alice").await;
                let items = inbox["items"].as_array().map_or(0, Vec::len);
                let detail = app
                    .get_as(
                        "bob",
                        &format!("/v1/requests/{}", ids[reads.load(Ordering::Relaxed) % 12]),
                    )
                    .await;
                let status = app
                    .system_call(
                        reqwest::Method::GET,
                        common::ERP_SECRET,
                        "/v1/systems/erp/requests/PO-1",
                        "",
                    )
                    .await;
                if inbox["total"] != 12
                    || items != 12
                    || detail.status() != 200
                    || status.status() != 200
                {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let writer = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                app.submit_ok(&single_step(&format!("Z-{written}"), &["zed"]))
                    .await;
                written += 1;
            }
            written
        })
    };

    let run = app
        .cli(&["projections", "rebuild", "--batch-size", "1"])
        .await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let written = writer.await.unwrap();
    assert!(run.ok(), "{run:?}");
    for name in ["requests", "inbox"] {
        assert!(
            run.stderr.contains(&format!("{name}: rebuilt from")),
            "{}",
            run.stderr
        );
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "no reader saw an empty or partial read model ({} reads)",
        reads.load(Ordering::Relaxed)
    );

    // New tables under the old names; nothing written during the rebuild was lost.
    let after = oids_and_indexes(&app.pool).await;
    assert_ne!(after.0, before.0, "the tables were swapped");
    assert_eq!(after.1, before.1, "the indexes keep their names");
    settled(&app).await;
    assert_eq!(app.inbox("zed").await["total"], written);
    let (mismatched,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT aggregate_id::uuid AS id, max(sequence) AS v, count(*) AS n \
             FROM events GROUP BY 1) e \
         LEFT JOIN rm_requests r ON r.id = e.id \
         WHERE r.version IS DISTINCT FROM e.v \
            OR e.n <> (SELECT count(*) FROM rm_timeline t WHERE t.request_id = e.id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        mismatched, 0,
        "every request's read models match its events"
    );
    let (schemas,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%' OR nspname LIKE 'retired\\_%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(schemas, 0, "nothing is left aside");

    // A quiet store rebuilds to exactly what the live projections hold.
    let live = digest(&app.pool).await;
    let again = app.cli(&["projections", "rebuild", "inbox"]).await;
    assert!(again.ok(), "{again:?}");
    let all = app.cli(&["projections", "rebuild"]).await;
    assert!(all.ok(), "{all:?}");
    assert_eq!(digest(&app.pool).await, live);

    // The live runners carry on with the new tables.
    let fresh = app.submit_ok(&single_step("L-after", &["alice"])).await;
    let inbox = app.inbox("alice").await;
    assert_eq!(inbox["total"], 13);
    assert!(inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == fresh.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_reader_and_unknown_projections_are_never_rebuilt() {
    let app = TestApp::spawn().await;
    let audit = app.cli(&["projections", "rebuild", "audit"]).await;
    assert_eq!(audit.code, Some(1));
    assert!(audit.stderr.contains("never rebuilt"), "{audit:?}");
    let unknown = app.cli(&["projections", "rebuild", "nope"]).await;
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("no projection is named"),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_folding_the_same_read_models_agree_with_a_rebuild() {
    // Both instances run the read models over one database: their batches race for the
    // checkpoints, and the loser of each race must fold nothing from the states it read before.
    let app = Arc::new(TestApp::spawn().await);
    let other = app
        .another_instance(Roles {
            api: false,
            worker: true,
        })
        .await;
    let mut tasks = vec![];
    for n in 0..6 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            for m in 0..4 {
                let po = app.submit_ok(&purchase_order(&format!("R-{n}-{m}"))).await;
                for approver in ["alice", "bob", "carol", "erin", "frank"] {
                    assert_eq!(app.approve(approver, &po).await.status(), 200);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    settled(&app).await;
    let live = digest(&app.pool).await;
    other.shutdown().await.unwrap();
    let run = app.cli(&["projections", "rebuild"]).await;
    assert!(run.ok(), "{run:?}");
    assert_eq!(
        digest(&app.pool).await,
        live,
        "the read models two instances folded are those a fresh fold gives"
    );
    assert_eq!(app.inbox("erin").await["total"], 0);
    let (approved,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rm_requests WHERE status = 'approved'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(approved, 24);
}
