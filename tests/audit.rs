//! The tamper evidence, as an operator meets it: `audit verify` on an untouched ledger and on
//! ledgers tampered with by someone who bypasses the triggers as a database superuser can, the
//! append-only events table, exported checkpoints against a restored older backup, and
//! `audit export` in both formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use approval_ledger::audit::chain;
use approval_ledger::store::audit as stored;
use common::{eventually, purchase_order, single_step, TestApp};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

/// A service whose audit reader writes a checkpoint after every batch.
async fn spawn() -> TestApp {
    TestApp::spawn_with(
        approval_ledger::startup::Roles::ALL,
        &[("APPROVAL_LEDGER_AUDIT__CHECKPOINT_INTERVAL_SECS", "0")],
    )
    .await
}

/// Three requests with some history: a purchase order two decisions in, a leave request
/// approved, and a leave request rejected. Returns their ids.
async fn history(app: &TestApp) -> [String; 3] {
    let po = app.submit_ok(&purchase_order("PO-A")).await;
    assert_eq!(app.approve("alice", &po).await.status(), 200);
    assert_eq!(app.approve("bob", &po).await.status(), 200);
    let leave = app.submit_ok(&single_step("L-1", &["erin"])).await;
    assert_eq!(app.approve("erin", &leave).await.status(), 200);
    let rejected = app.submit_ok(&single_step("L-2", &["frank"])).await;
    let answer = app
        .decide(
            "frank",
            &rejected,
            "reject",
            &json!({"comment": "no budget"}),
        )
        .await;
    assert_eq!(answer.status(), 200);
    wait_audited(app).await;
    [po, leave, rejected]
}

/// Waits until the audit reader has folded every stored event.
async fn wait_audited(app: &TestApp) {
    let total = app.event_count().await;
    let pool = app.pool.clone();
    let seen = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let (count,): (i64,) = sqlx::query_as("SELECT event_count FROM audit_chain")
                .fetch_one(&pool)
                .await
                .ok()?;
            (count == total).then_some(())
        }
    })
    .await;
    assert!(seen.is_some(), "the audit reader folds all {total} events");
}

/// Runs `sql` as a superuser who bypasses triggers would.
async fn tamper(app: &TestApp, sql: &str) {
    let mut conn = PgConnection::connect(&app.db.url()).await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Runs `audit verify ARGS`, which must find the store not intact and name `needle` first, on
/// stdout and in its error line.
async fn not_intact(app: &TestApp, args: &[&str], needle: &str) -> common::cli::CliRun {
    let run = app.cli(&[&["audit", "verify"], args].concat()).await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stdout.contains(needle), "{run:?}");
    assert!(
        run.stderr.contains(needle),
        "the error line names it too: {run:?}"
    );
    run
}

async fn sequences(app: &TestApp, id: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT max(sequence) FROM events WHERE aggregate_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_ledger_verifies_and_the_database_hashes_as_the_verifier_does() {
    let app = spawn().await;
    let [po, ..] = history(&app).await;

    let total = app.event_count().await;
    let run = app.cli(&["audit", "verify"]).await;
    assert!(run.ok(), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("intact: {total} events of 3 requests")),
        "{run:?}"
    );

    let one = app.cli(&["audit", "verify", &po]).await;
    assert!(one.ok(), "{one:?}");

    // The trigger's hash of every event is the one Rust computes from the stored content.
    let events = stored::events_of(&app.pool, "ApprovalRequest", &po)
        .await
        .unwrap();
    let mut prev = chain::GENESIS;
    for e in &events {
        let expected = chain::event_hash(&prev, e);
        assert_eq!(e.hash, expected.to_vec(), "sequence {}", e.sequence);
        prev = expected;
    }
    let (checkpoints,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_checkpoints")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(checkpoints > 0, "the audit reader wrote checkpoints");
}

/// The trigger's hash function is inlined by the planner (migration 0005): declared more
/// volatile than its body allows, it ran as a separate SQL function, parsed and planned again for
/// every append. The hash it gives is checked against Rust's in the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_hash_is_inlined_into_the_statement_that_calls_it() {
    let app = TestApp::spawn().await;
    let plan: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN (VERBOSE) SELECT ledger_event_hash(ledger_genesis(), 'ApprovalRequest', \
             gen_random_uuid()::text, 1, 'RequestSubmitted', '1.0', '{}', '{}', \
             gen_random_uuid(), clock_timestamp())",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let plan: String = plan.into_iter().map(|(line,)| line + "\n").collect();
    assert!(plan.contains("sha256("), "{plan}");
    assert!(!plan.contains("ledger_event_hash("), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_row_append_chains_each_event_to_the_one_before_it() {
    let app = spawn().await;
    let id = app.submit_ok(&single_step("L-multi", &["erin"])).await;
    // Several events of one command in one statement, as an append may write them: each row's
    // trigger sees the rows the statement inserted before it.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) \
         SELECT 'ApprovalRequest', $1, s, t, '1.0', p, '{}' \
         FROM UNNEST($2::int8[], $3::text[], $4::jsonb[]) WITH ORDINALITY AS u(s, t, p, o) \
         ORDER BY o",
    )
    .bind(&id)
    .bind(vec![2i64, 3])
    .bind(vec!["StepCompleted", "RequestExpired"])
    .bind(vec![
        json!({"StepCompleted": {"step": 0, "at": "2026-11-20T09:00:00Z"}}),
        json!({"RequestExpired": {"at": "2026-11-20T09:00:00Z"}}),
    ])
    .execute(&app.pool)
    .await
    .unwrap();
    let one = app.cli(&["audit", "verify", &id]).await;
    assert!(one.ok(), "{one:?}");
    assert!(one.stdout.contains("3 events chained"), "{one:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_table_refuses_updates_and_deletes() {
    let app = spawn().await;
    let [po, ..] = history(&app).await;
    let total = app.event_count().await;
    for sql in [
        "UPDATE events SET payload = '{}' WHERE aggregate_id = $1",
        "DELETE FROM events WHERE aggregate_id = $1",
    ] {
        let refused = sqlx::query(sql).bind(&po).execute(&app.pool).await;
        let message = refused.expect_err("refused").to_string();
        assert!(message.contains("append-only"), "{message}");
    }
    let truncate = sqlx::query("TRUNCATE events").execute(&app.pool).await;
    assert!(truncate.is_err());
    let checkpoints = sqlx::query("DELETE FROM audit_checkpoints")
        .execute(&app.pool)
        .await;
    assert!(checkpoints.is_err());
    assert_eq!(app.event_count().await, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_edited_payload_when_the_triggers_were_bypassed() {
    let app = spawn().await;
    let [po, ..] = history(&app).await;
    tamper(
        &app,
        &format!(
            "UPDATE events SET payload = \
             jsonb_set(payload, '{{ApprovalRecorded,approver}}', '\"mallory\"') \
             WHERE aggregate_id = '{po}' AND sequence = 2"
        ),
    )
    .await;

    let first = format!("request {po} sequence 2 ");
    let run = not_intact(&app, &[], &first).await;
    assert!(run.stdout.contains("was changed"), "{run:?}");
    not_intact(&app, &[&po], &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_deleted_last_event_of_a_request() {
    let app = spawn().await;
    let [po, ..] = history(&app).await;
    let last = sequences(&app, &po).await;
    tamper(
        &app,
        &format!("DELETE FROM events WHERE aggregate_id = '{po}' AND sequence = {last}"),
    )
    .await;

    // The request's own chain is still whole: only the audit ledger can tell.
    let named = format!("request {po} sequence {last}: missing");
    let run = not_intact(&app, &[], &named).await;
    assert!(
        run.stdout.contains("events were removed"),
        "the checkpoints disagree too: {run:?}"
    );
    not_intact(&app, &[&po], &named).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_request_removed_whole() {
    let app = spawn().await;
    let [_, leave, _] = history(&app).await;
    tamper(
        &app,
        &format!("DELETE FROM events WHERE aggregate_id = '{leave}'"),
    )
    .await;

    let named = format!("request {leave} sequence 1: missing: the whole request was removed");
    not_intact(&app, &[], &named).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_checkpoints_catch_an_older_backup_restored_with_its_audit_tables() {
    let app = spawn().await;
    history(&app).await;
    let before_last = app.event_count().await;
    let late = app.submit_ok(&single_step("L-late", &["gina"])).await;
    wait_audited(&app).await;

    let exported = app.cli(&["audit", "checkpoints"]).await;
    assert!(exported.ok(), "{exported:?}");
    let lines: Vec<Value> = exported
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["event_count"], before_last + 1);
    let file = std::env::temp_dir().join(format!("{}-checkpoints.jsonl", app.db.name));
    std::fs::write(
        &file,
        format!("# countersigned by ops\n{}", exported.stdout),
    )
    .unwrap();

    // Restore "the backup from before the last request": its events and everything the audit
    // reader wrote after them are gone, consistently.
    for sql in [
        format!("DELETE FROM events WHERE aggregate_id = '{late}'"),
        format!("DELETE FROM audit_heads WHERE aggregate_id = '{late}'"),
        format!("DELETE FROM audit_checkpoints WHERE event_count > {before_last}"),
        "UPDATE audit_chain SET (tx_id, global_id, event_count, running_hash) = \
         (SELECT tx_id, global_id, event_count, running_hash FROM audit_checkpoints \
          ORDER BY id DESC LIMIT 1)"
            .to_owned(),
    ] {
        tamper(&app, &sql).await;
    }

    let inside = app.cli(&["audit", "verify"]).await;
    assert!(
        inside.ok(),
        "the restored database agrees with itself: {inside:?}"
    );
    let path = file.to_string_lossy().to_string();
    let removed = format!("the store has {before_last}: events were removed");
    let against = not_intact(&app, &["--checkpoints", &path], &removed).await;
    std::fs::remove_file(&file).ok();
    assert!(
        against.stdout.contains("checkpoints were rewritten"),
        "{against:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_one_line_per_event_in_both_formats() {
    let app = spawn().await;
    let [po, ..] = history(&app).await;
    let total = app.event_count().await as usize;

    let jsonl = app.cli(&["audit", "export"]).await;
    assert!(jsonl.ok(), "{jsonl:?}");
    let lines: Vec<Value> = jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), total);
    let first = &lines[0];
    assert_eq!(first["request_id"], po.as_str());
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["event_type"], "RequestSubmitted");
    assert_eq!(first["payload"]["RequestSubmitted"]["external_ref"], "PO-A");
    assert_eq!(first["hash"].as_str().map(str::len), Some(64));
    assert!(jsonl.stderr.contains(&format!("exported {total} events")));

    let csv = app.cli(&["audit", "export", "--format", "csv"]).await;
    assert!(csv.ok(), "{csv:?}");
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(rows.len(), total + 1, "a header and one line per event");
    assert!(rows[0].starts_with("tx_id,global_id,event_id,aggregate_type,request_id,sequence"));
    assert!(rows[1].contains(&format!(",ApprovalRequest,{po},1,RequestSubmitted,1.0,")));
    assert!(rows
        .iter()
        .any(|r| r.contains(r#"""comment"": ""no budget"""#)));

    // --since keeps the events recorded from then on.
    let since = lines[5]["recorded_at"].as_str().unwrap().to_owned();
    let later = app.cli(&["audit", "export", "--since", &since]).await;
    assert!(later.ok(), "{later:?}");
    let expected = lines
        .iter()
        .filter(|l| l["recorded_at"].as_str().unwrap() >= since.as_str())
        .count();
    assert_eq!(later.stdout.lines().count(), expected);
}
