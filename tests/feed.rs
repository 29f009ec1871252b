//! The global feed never skips an event: a transaction that commits late is delivered in its
//! place, and a rolled-back one leaves a hole nobody waits for.
//!
//! These tests hold a transaction open on purpose; snapshots are cluster-wide, so they keep it
//! open as briefly as the point needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use approval_aggregates::{ApprovalEvent, RequestId, Rule, StepSpec, SystemId, UserId};
use approval_ledger::feed::{Batch, Feed, Position, StatesQuery};
use approval_ledger::store::db;
use approval_projections::LoadedStates;
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
        steps: vec![StepSpec::new(vec![UserId::new(approver)], Rule::Any)],
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

/// A migrated database of the test's own (dropped with the guard), a pool and a feed reader on it.
async fn migrated() -> (TestDb, sqlx::PgPool, Feed) {
    let db_guard = TestDb::new();
    let settings = settings_for(&db_guard, &[]);
    let pool = db::prepare(&settings.database).await.unwrap();
    (db_guard, pool, Feed::new())
}

/// Up to `limit` events after `after`, read on a connection of `pool`.
async fn read_after(pool: &sqlx::PgPool, feed: &Feed, after: Position, limit: i64) -> Batch {
    let mut conn = pool.acquire().await.unwrap();
    feed.read_after_on(&mut conn, after, limit).await.unwrap()
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
    let (_db_guard, pool, feed) = migrated().await;

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
    let batch = read_after(&pool, &feed, Position::START, 100).await;
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
        let batch = read_after(&pool, &feed, Position::START, 100).await;
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
        let batch = read_after(&pool, &feed, after, 100).await;
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
                    approval_ledger::signing::signature(common::ERP_SECRET, ts, text.as_bytes()),
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

/// Reads from the start of the feed with `states` until the batch holds `n` events.
async fn read_until(
    feed: &Feed,
    conn: &mut PgConnection,
    states: &StatesQuery,
    n: usize,
) -> (Batch, Option<Vec<LoadedStates>>) {
    for _ in 0..400 {
        let mut read = feed
            .read_with_states_on(conn, states, Position::START, 100)
            .await
            .unwrap();
        if read.events.len() == n {
            let states = read.states.take();
            return (read, states);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed did not deliver {n} events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_read_with_states_carries_each_requests_stored_state_once() {
    let (_db_guard, pool, feed) = migrated().await;
    let states = StatesQuery::new(&[
        ("public.rm_requests", "id"),
        ("public.rm_inbox_state", "request_id"),
    ]);
    let mut conn = pool.acquire().await.unwrap();
    let a = append(&mut conn, "A", "ann").await;
    let b = append(&mut conn, "B", "ben").await;
    // A has a stored state in the requests model only; B has none yet.
    sqlx::query(
        "INSERT INTO rm_requests (id, system, external_ref, requester, status, version, state, \
             submitted_at, updated_at) \
         VALUES ($1::uuid, 'erp', 'A', 'dina', 'pending', 1, '{\"marker\": 1}', now(), now())",
    )
    .bind(&a)
    .execute(&mut *conn)
    .await
    .unwrap();

    // Snapshots are cluster-wide: other tests' transactions may hold the feed back a moment.
    let (batch, loaded) = read_until(&feed, &mut conn, &states, 2).await;
    let order: Vec<String> = batch
        .events
        .iter()
        .map(|e| e.request_id.to_string())
        .collect();
    assert_eq!(order, [a.clone(), b.clone()]);
    let loaded = loaded.expect("canonical ids: the states are read with the batch");
    assert_eq!(loaded.len(), 2, "one map per table");
    let id_a = batch.events[0].request_id.0;
    assert_eq!(
        loaded[0].get(&id_a),
        Some(&serde_json::json!({"marker": 1}))
    );
    assert_eq!(loaded[0].len(), 1, "B has no state");
    assert!(loaded[1].is_empty(), "nothing in the inbox model yet");

    // An id the tables are not keyed by as written is left to the projections to read.
    let (_, payload) = submitted("C", "cid");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('ApprovalRequest', upper($1), 1, 'RequestSubmitted', '1.0', $2, '{}')",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(payload)
    .execute(&mut *conn)
    .await
    .unwrap();
    let (batch, loaded) = read_until(&feed, &mut conn, &states, 3).await;
    assert!(loaded.is_none());

    // Past the last event: an empty batch.
    let empty = feed
        .read_with_states_on(&mut conn, &states, batch.events[2].position, 100)
        .await
        .unwrap();
    assert!(empty.events.is_empty());
    drop(conn);
    pool.close().await;
}

/// Where checkpoint `name` stands, and when it was last written.
async fn checkpoint(pool: &sqlx::PgPool, name: &str) -> (Position, chrono::DateTime<chrono::Utc>) {
    let (tx_id, global_id, updated_at): (i64, i64, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT tx_id, global_id, updated_at FROM feed_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await
            .unwrap();
    (Position { tx_id, global_id }, updated_at)
}

async fn request_rows(pool: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM rm_requests")
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

/// The read models' usual batch is one statement: it moves the checkpoints and writes the batch
/// only when they stand where this runner left them and nobody wrote them since (the gate).
/// Otherwise it writes nothing at all, and says how it found them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_one_statement_writes_only_when_the_checkpoints_are_as_this_runner_left_them() {
    use approval_ledger::feed::checkpoints;
    use approval_projections::requests::RequestsProjection;
    use approval_projections::{Projection, Schema};
    use std::collections::BTreeMap;

    let (_db_guard, pool, feed) = migrated().await;
    let states = StatesQuery::new(&[]);
    let requests = RequestsProjection::new(&Schema::live());
    let mut conn = pool.acquire().await.unwrap();
    append(&mut conn, "A", "ann").await;
    let (batch, _) = read_until(&feed, &mut conn, &states, 1).await;
    let last = batch.events[0].position;
    checkpoints::load(&mut conn, RequestsProjection::NAME)
        .await
        .unwrap();
    let (start, written) = checkpoint(&pool, RequestsProjection::NAME).await;
    assert_eq!(start, Position::START);
    let at = BTreeMap::from([(RequestsProjection::NAME.to_owned(), start)]);
    let run = |expected: BTreeMap<String, Position>, when: chrono::DateTime<chrono::Utc>| {
        let mut write = checkpoints::gated_move(
            &expected,
            &BTreeMap::from([(RequestsProjection::NAME.to_owned(), when)]),
            last,
        )
        .unwrap()
        .expect("a time for every checkpoint");
        assert!(requests
            .write(&mut write, &batch.events, LoadedStates::new())
            .unwrap());
        write
    };

    // Written by someone else since (a rebuild's swap, say): nothing moves, nothing is written.
    let elsewhere = written + chrono::Duration::microseconds(1);
    let (found, held) = checkpoints::run_gated(&mut conn, run(at.clone(), elsewhere))
        .await
        .unwrap();
    assert!(!held);
    assert_eq!(found[RequestsProjection::NAME].position, start);
    assert_eq!(request_rows(&pool).await, 0);
    assert_eq!(
        checkpoint(&pool, RequestsProjection::NAME).await,
        (start, written)
    );

    // Moved by another instance: the same, and the positions found say where it stands.
    let ahead = BTreeMap::from([(RequestsProjection::NAME.to_owned(), last)]);
    let (found, held) = checkpoints::run_gated(&mut conn, run(ahead, written))
        .await
        .unwrap();
    assert!(!held);
    assert_eq!(found[RequestsProjection::NAME].position, start);
    assert_eq!(request_rows(&pool).await, 0);

    // As this runner left it: moved and written together.
    let (found, held) = checkpoints::run_gated(&mut conn, run(at, written))
        .await
        .unwrap();
    assert!(held);
    let (now_at, rewritten) = checkpoint(&pool, RequestsProjection::NAME).await;
    assert_eq!(now_at, last);
    assert_eq!(found[RequestsProjection::NAME].written, rewritten);
    assert!(rewritten > written);
    assert_eq!(request_rows(&pool).await, 1);

    // A time missing for a checkpoint: no statement at all.
    assert!(checkpoints::gated_move(
        &BTreeMap::from([(RequestsProjection::NAME.to_owned(), last)]),
        &BTreeMap::new(),
        last
    )
    .unwrap()
    .is_none());
    drop(conn);
    pool.close().await;
}

/// The feed position of request `id`'s first event.
async fn position_of(pool: &sqlx::PgPool, id: &str) -> Position {
    let (tx_id, global_id): (i64, i64) =
        sqlx::query_as("SELECT tx_id, global_id FROM events WHERE aggregate_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    Position { tx_id, global_id }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_events_says_whether_more_wait_behind_a_running_transaction() {
    let (_db_guard, pool, feed) = migrated().await;
    let mut conn = pool.acquire().await.unwrap();

    // X commits, T takes its transaction id and stays open, Y commits behind it.
    let x = append(&mut conn, "X", "xena").await;
    let mut held = pool.begin().await.unwrap();
    append(&mut held, "T", "tom").await;
    let y = append(&mut conn, "Y", "yan").await;

    // Other tests' transactions hold every feed of the server back for a moment (snapshots
    // are cluster-wide): read until X shows.
    let ids_of = |batch: &Batch| -> Vec<String> {
        batch
            .events
            .iter()
            .map(|e| e.request_id.to_string())
            .collect()
    };
    let batch = eventually(Duration::from_secs(20), || async {
        let batch = read_after(&pool, &feed, Position::START, 100).await;
        (!batch.events.is_empty()).then_some(batch)
    })
    .await
    .expect("X is delivered");
    assert_eq!(ids_of(&batch), std::slice::from_ref(&x), "Y waits behind T");
    assert!(
        batch.held_back,
        "the reader is told that more is coming soon"
    );

    held.rollback().await.unwrap();
    let x_at = position_of(&pool, &x).await;
    let batch = eventually(Duration::from_secs(20), || async {
        let batch = read_after(&pool, &feed, x_at, 100).await;
        (!batch.events.is_empty() && !batch.held_back).then_some(batch)
    })
    .await
    .expect("once T rolled back, Y is delivered and nothing waits any more");
    assert_eq!(ids_of(&batch), [y], "T rolled back: Y comes next");
    drop(conn);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_what_a_rolled_back_transaction_held_back_without_a_wake_up() {
    // The relay waits for the next commit after a batch, and polls only every minute here: it
    // must find Y through the held-back check alone, for nothing commits after T rolls back.
    let app = TestApp::spawn_with(
        approval_ledger::startup::Roles::ALL,
        &[
            ("APPROVAL_LEDGER_FEED__POLL_INTERVAL_MS", "60000"),
            ("APPROVAL_LEDGER_LEDGER__READ_YOUR_WRITES_MS", "50"),
        ],
    )
    .await;
    // X takes its transaction id first and T the next; both stay open while Y is submitted
    // through the API, whose commit wakes the relay. Every reader is held back behind X.
    let mut first = app.pool.begin().await.unwrap();
    let x = append(&mut first, "X", "xena").await;
    let mut held = app.pool.begin().await.unwrap();
    append(&mut held, "T", "tom").await;
    let submitted = app.submit(&single_step("Y", &["yan"])).await;
    assert_eq!(submitted.status(), reqwest::StatusCode::CREATED);
    let y: serde_json::Value = submitted.json().await.unwrap();
    let y = y["id"].as_str().unwrap().to_owned();

    // X commits without waking anyone: the relay, looking again soon because events are held
    // back, publishes X while Y still waits behind T. Then T rolls back: no commit, no wake.
    first.commit().await.unwrap();
    let x_at = position_of(&app.pool, &x).await;
    // The relay's checkpoint appears once it leads and RabbitMQ has answered.
    let relay_at = || async {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT tx_id, global_id FROM feed_checkpoints WHERE name = 'relay'")
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        row.map_or(Position::START, |(tx_id, global_id)| Position {
            tx_id,
            global_id,
        })
    };
    let published_x = eventually(Duration::from_secs(20), || async {
        (relay_at().await >= x_at).then_some(())
    })
    .await;
    assert!(published_x.is_some(), "X is published once it commits");
    held.rollback().await.unwrap();

    let y_at = position_of(&app.pool, &y).await;
    let published_y = eventually(Duration::from_secs(20), || async {
        (relay_at().await >= y_at).then_some(())
    })
    .await;
    assert!(
        published_y.is_some(),
        "Y is published after T rolls back, long before the relay's next poll: the relay at {:?}, \
         X at {x_at:?}, Y at {y_at:?}",
        relay_at().await
    );
}
