//! Events leave the service: signed callbacks reach the legacy system once and in order per
//! request, pushes reach the phones, failures are retried or dead-lettered, and neither a
//! redelivered message nor a poison one does harm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use approval_aggregates::RequestId;
use approval_ledger::broker::Envelope;
use approval_ledger::broker::Topology;
use approval_ledger::handlers::legacy_sync::LegacySync;
use approval_ledger::handlers::push::Push;
use approval_ledger::handlers::{handle_batch, Handler, JobSignal};
use approval_ledger::signing::signature;
use approval_ledger::startup::Roles;
use common::fake::{Call, FakeEndpoint};
use common::{purchase_order, single_step, TestApp, AMQP, ERP_SECRET};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// A service whose ERP calls back to `legacy` and whose pushes go to `fcm`.
async fn app_with(legacy: &FakeEndpoint, fcm: &FakeEndpoint, extra: &[(&str, &str)]) -> TestApp {
    common::fake::app_calling(legacy, fcm, extra).await
}

/// A service with the API alone (no worker: the events wait in the store) and a request `reference`
/// that alice approved; returns the service and the envelope of its `RequestApproved`.
async fn approved_without_worker(
    legacy: &FakeEndpoint,
    fcm: &FakeEndpoint,
    reference: &str,
) -> (TestApp, Envelope) {
    let app = app_with(
        legacy,
        fcm,
        &[("APPROVAL_LEDGER_LEDGER__READ_YOUR_WRITES_MS", "50")],
    )
    .await
    .restart(Roles {
        api: true,
        worker: false,
    })
    .await;
    let id = app
        .submit(&single_step(reference, &["alice"]))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.approve("alice", &id).await;
    let history = approval_ledger::store::events::history(
        &app.pool,
        RequestId(Uuid::parse_str(&id).unwrap()),
        i64::MAX,
    )
    .await
    .unwrap();
    let approved = history.last().unwrap();
    assert_eq!(approved.event_type, "RequestApproved");
    let envelope = Envelope::of(approved, "erp", reference);
    (app, envelope)
}

fn of_type<'a>(calls: &'a [Call], kind: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.body["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_reaches_the_legacy_system_signed_and_phones_get_their_pushes() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(&legacy, &fcm, &[]).await;
    app.register_device("alice", "token-alice").await;
    app.register_device("bob", "token-bob").await;
    app.register_device("dina", "token-dina").await;

    let id = app.submit_ok(&purchase_order("PO-4711")).await;
    // A new inbox item: alice's phone buzzes.
    let pushes = fcm.wait_for(WAIT, |c| !c.is_empty()).await;
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert_eq!(push.path, "/v1/projects/ledger-test/messages:send");
    assert_eq!(push.header("authorization"), Some("Bearer fcm-test-bearer"));
    assert_eq!(push.body["message"]["token"], "token-alice");
    assert_eq!(push.body["message"]["data"]["request_id"], id.as_str());
    assert_eq!(
        push.body["message"]["data"]["deep_link"],
        format!("approvals://requests/{id}")
    );
    assert!(push.body["message"]["notification"]["title"].is_string());

    // Step 2 opens: bob is notified (carol and dave have no device).
    app.approve("alice", &id).await;
    let pushes = fcm.wait_for(WAIT, |c| c.len() >= 2).await;
    assert_eq!(pushes[1].body["message"]["token"], "token-bob");

    for who in ["bob", "carol", "erin", "frank"] {
        assert_eq!(app.approve(who, &id).await.status(), StatusCode::OK);
    }
    let calls = legacy
        .wait_for(WAIT, |c| !of_type(c, "approval.approved").is_empty())
        .await;
    let approved = of_type(&calls, "approval.approved");
    assert_eq!(approved.len(), 1, "one callback for the decision");
    let call = approved[0];
    assert_eq!(call.path, "/approvals/callback");
    assert_eq!(call.body["request_id"], id.as_str());
    assert_eq!(call.body["external_ref"], "PO-4711");
    assert_eq!(call.body["status"], "approved");
    assert_eq!(call.body["decided_by"], "frank");
    assert_eq!(call.body["version"], 10);
    assert_eq!(
        call.header("x-ledger-event-id"),
        call.body["event_id"].as_str()
    );
    let ts: i64 = call.header("x-ledger-timestamp").unwrap().parse().unwrap();
    assert_eq!(
        call.header("x-ledger-signature").unwrap(),
        signature(ERP_SECRET, ts, call.raw.as_bytes()),
        "signed with the system's secret over timestamp and raw body"
    );
    assert!(
        of_type(&calls, "approval.step_completed").is_empty(),
        "progress callbacks are off by default"
    );

    // The requester hears of the final status.
    let pushes = fcm
        .wait_for(WAIT, |c| {
            c.iter().any(|p| p.body["message"]["token"] == "token-dina")
        })
        .await;
    assert!(pushes
        .iter()
        .any(|p| p.body["message"]["token"] == "token-dina"));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("approval_ledger_commit_to_callback_seconds_count 1"),
        "{metrics}"
    );
    assert!(metrics.contains("approval_ledger_commit_to_publish_seconds_count"));
    // The pushes were made leased and handed to the scheduler (no claim); the callback, whose
    // order per request the claim decides, was claimed.
    let taken = |how: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "approval_ledger_deliveries_taken_total{{how=\"{how}\"}} "
                ))
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(taken("handed") >= 3, "{metrics}");
    assert!(taken("claimed") >= 1, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_503_then_200_gets_the_same_event_id_twice_and_the_decision_once() {
    let legacy = FakeEndpoint::start(Arc::new(|_: &Call, before| {
        if before == 0 {
            (503, None)
        } else {
            (200, None)
        }
    }))
    .await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(&legacy, &fcm, &[]).await;
    let id = app.submit_ok(&single_step("L-1", &["alice"])).await;
    app.approve("alice", &id).await;
    legacy.wait_for(WAIT, |c| c.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = legacy.calls();
    assert_eq!(
        calls.len(),
        2,
        "one retry after the 503, then nothing: {calls:?}"
    );
    assert_eq!(
        calls[0].header("x-ledger-event-id"),
        calls[1].header("x-ledger-event-id")
    );
    assert_eq!(calls[0].body, calls[1].body, "the same decision both times");
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM deliveries WHERE channel = 'callback'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("delivered", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_lands_in_dead_letters_and_retry_delivers_it() {
    let legacy = FakeEndpoint::start(Arc::new(|_: &Call, before| {
        if before == 0 {
            (400, None)
        } else {
            (200, None)
        }
    }))
    .await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(&legacy, &fcm, &[]).await;
    let id = app.submit_ok(&single_step("L-2", &["alice"])).await;
    app.decide("alice", &id, "reject", &json!({"comment": "no"}))
        .await;
    legacy.wait_for(WAIT, |c| !c.is_empty()).await;

    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_approval-ledger"))
            .args(args)
            .env("APPROVAL_LEDGER_DATABASE__URL", app.db.url())
            .env("APPROVAL_LEDGER_BROKER__EXCHANGE", &app.broker.exchange)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed = common::eventually(WAIT, || async {
        let out = cli(&["dead-letters", "list"]);
        out.contains("answered 400").then_some(out)
    })
    .await
    .expect("the refused callback is a dead letter");
    assert!(listed.contains(&id), "{listed}");
    assert!(listed.contains("callback"));

    assert!(cli(&["dead-letters", "retry", "--all"]).contains("re-driven: 1"));
    let calls = legacy.wait_for(WAIT, |c| c.len() >= 2).await;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].body["type"], "approval.rejected");
    assert_eq!(
        calls[0].header("x-ledger-event-id"),
        calls[1].header("x-ledger-event-id")
    );
    assert!(cli(&["dead-letters", "list"]).contains("no dead letters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_event_never_overtakes_an_earlier_one_still_retrying_and_other_requests_flow() {
    // The step-completed callback of PO-A fails three times; PO-A's approval must wait for it,
    // while PO-B's callbacks go through.
    let legacy = FakeEndpoint::start(Arc::new(|call: &Call, before| {
        if call.body["external_ref"] == "PO-A"
            && call.body["type"] == "approval.step_completed"
            && before < 3
        {
            (503, Some(0))
        } else {
            (200, None)
        }
    }))
    .await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(
        &legacy,
        &fcm,
        &[("APPROVAL_LEDGER_SYSTEMS__ERP__PROGRESS_CALLBACKS", "true")],
    )
    .await;
    let two_steps = |reference: &str| {
        json!({"external_ref": reference, "kind": "leave", "title": reference, "requester": "dina",
               "steps": [{"approvers": ["alice"], "rule": "any"}, {"approvers": ["bob"], "rule": "any"}]})
    };
    let a = app.submit_ok(&two_steps("PO-A")).await;
    let b = app.submit_ok(&two_steps("PO-B")).await;
    for id in [&a, &b] {
        app.approve("alice", id).await;
        app.approve("bob", id).await;
    }
    let calls = legacy
        .wait_for(WAIT, |c| {
            c.iter()
                .filter(|x| x.body["type"] == "approval.approved")
                .count()
                == 2
        })
        .await;
    let for_a: Vec<(String, usize)> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.body["external_ref"] == "PO-A")
        .map(|(i, c)| {
            (
                format!("{}#{}", c.body["type"].as_str().unwrap(), c.body["step"]),
                i,
            )
        })
        .collect();
    let kinds: Vec<&str> = for_a.iter().map(|(k, _)| k.as_str()).collect();
    let step = |n: u32| format!("approval.step_completed#{n}");
    let (s0, s1) = (step(0), step(1));
    assert_eq!(
        kinds,
        [&s0, &s0, &s0, &s0, &s1, &s1, &s1, &s1, "approval.approved#null"],
        "each step's callback fails three times and succeeds; only then the next, and the approval last"
    );
    let b_approved = calls
        .iter()
        .position(|c| c.body["external_ref"] == "PO-B" && c.body["type"] == "approval.approved")
        .unwrap();
    assert!(
        b_approved < for_a[7].1,
        "PO-B did not wait for PO-A's retries"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.body["external_ref"] == "PO-B")
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_dies_after_its_effect_before_the_ack_does_not_duplicate_the_effect() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    // No worker at first: the events wait in the store. A consumer of our own takes the
    // approval's message from the legacy-sync queue, makes its effect durable (the callback
    // job), and dies before acknowledging it.
    let (mut app, envelope) = approved_without_worker(&legacy, &fcm, "L-3").await;
    let topology = Topology::new(&app.broker.exchange);
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            topology.legacy_sync.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&envelope).unwrap(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            topology.legacy_sync.as_str().into(),
            "dies-before-ack".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    let taken: Envelope = serde_json::from_slice(&delivery.data).unwrap();
    let handler = LegacySync {
        pool: app.pool.clone(),
        systems: Arc::new(app.settings.systems.clone()),
        jobs: JobSignal::default(),
    };
    handler.handle(std::slice::from_ref(&taken)).await.unwrap();
    drop(delivery);
    conn.close(320, "the consumer dies".into()).await.unwrap();

    // The service's worker starts: it gets the redelivered message and the relay's own copy.
    app.stop().await;
    let app = app.restart(Roles::ALL).await;
    let calls = legacy.wait_for(WAIT, |c| !c.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(legacy.calls().len(), 1, "one callback: {calls:?}");
    let (jobs,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE channel = 'callback'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(jobs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_the_next_event_still_flows() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(&legacy, &fcm, &[]).await;
    // Wait for the topology, then publish garbage where both work queues receive it.
    app.wait_ready().await;
    let topology = Topology::new(&app.broker.exchange);
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_publish(
            topology.exchange.as_str().into(),
            "approval.erp.RequestApproved".into(),
            BasicPublishOptions::default(),
            b"\xff not an envelope",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let dead_count = |queue: String| {
        let channel = channel.clone();
        async move {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|q| q.message_count())
                .unwrap_or(0)
        }
    };
    let dead = common::eventually(WAIT, || async {
        let legacy_dead = dead_count(Topology::dead_letter_queue(&topology.legacy_sync)).await;
        let push_dead = dead_count(Topology::dead_letter_queue(&topology.push)).await;
        (legacy_dead == 1 && push_dead == 1).then_some(())
    })
    .await;
    assert!(
        dead.is_some(),
        "both work queues dead-lettered the poison message"
    );

    let id = app.submit_ok(&single_step("L-4", &["alice"])).await;
    app.approve("alice", &id).await;
    let calls = legacy.wait_for(WAIT, |c| !c.is_empty()).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["request_id"], id.as_str());
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_register_and_one_the_provider_reports_unregistered_is_removed() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::start(Arc::new(|call: &Call, _| {
        if call.body["message"]["token"] == "stale-token" {
            (404, None)
        } else {
            (200, None)
        }
    }))
    .await;
    let app = app_with(&legacy, &fcm, &[]).await;
    app.register_device("alice", "stale-token").await;
    app.register_device("alice", "fresh-token").await;
    app.register_device("bob", "gone-token").await;
    let response = app
        .client
        .delete(format!("{}/v1/devices/gone-token", app.address))
        .bearer_auth(app.token("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .client
        .delete(format!("{}/v1/devices/fresh-token", app.address))
        .bearer_auth(app.token("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "not bob's device");
    let bad = app
        .post_as(
            "alice",
            "/v1/devices",
            &json!({"platform": "windows", "token": "x"}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    app.submit_ok(&single_step("L-5", &["alice", "bob"])).await;
    let calls = fcm.wait_for(WAIT, |c| c.len() >= 2).await;
    let mut tokens: Vec<&str> = calls
        .iter()
        .map(|c| c.body["message"]["token"].as_str().unwrap())
        .collect();
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        ["fresh-token", "stale-token"],
        "one push per device; bob has none left"
    );
    let gone = common::eventually(WAIT, || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM devices WHERE token = 'stale-token'")
                .fetch_one(&app.pool)
                .await
                .ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the unregistered device is removed");
    // The device went in the same statement that recorded the outcomes: its job dropped, the
    // other delivered, the other device kept.
    let recorded = common::eventually(WAIT, || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT target, status FROM deliveries WHERE channel = 'push' ORDER BY target",
        )
        .fetch_all(&app.pool)
        .await
        .ok()?;
        (rows.iter().all(|(_, s)| s != "pending")).then_some(rows)
    })
    .await;
    let expected = [("fresh-token", "delivered"), ("stale-token", "dropped")]
        .map(|(t, s)| (t.to_owned(), s.to_owned()));
    assert_eq!(recorded.as_deref(), Some(&expected[..]));
    let (kept,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM devices WHERE token = 'fresh-token'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(kept, 1, "the device that took its push is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_never_reaches_the_legacy_sync_queue_is_swept_into_its_callback() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(
        &legacy,
        &fcm,
        &[("APPROVAL_LEDGER_BROKER__SWEEP_AFTER_MS", "300")],
    )
    .await;
    let id = app.submit_ok(&single_step("SWEEP-1", &["alice"])).await;

    // Someone removes the legacy-sync queue's bindings by hand. The push queue still takes every
    // event, so the approval's publish is routed (to it alone) and nothing comes back: only the
    // sweeper can notice that the legacy-sync handler never saw it.
    let topology = approval_ledger::handlers::topology(&app.broker.exchange);
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    for key in topology.keys_of(&topology.legacy_sync) {
        channel
            .queue_unbind(
                topology.legacy_sync.as_str().into(),
                topology.exchange.as_str().into(),
                key.as_str().into(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(app.approve("alice", &id).await.status(), StatusCode::OK);

    let calls = legacy
        .wait_for(WAIT, |c| !of_type(c, "approval.approved").is_empty())
        .await;
    assert_eq!(of_type(&calls, "approval.approved").len(), 1, "{calls:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(legacy.calls().len(), 1, "one callback, not two");
    let (queued,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM deliveries WHERE channel = 'callback' AND request_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(queued, 1);
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_message_from_elsewhere_refuses_that_one_and_handles_the_rest() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    // The API alone: no consumer of the service's own makes jobs behind the test's back.
    let (app, good) = approved_without_worker(&legacy, &fcm, "L-9").await;
    // The same request and sequence, but an event this ledger never stored.
    let foreign = Envelope {
        event_id: Uuid::new_v4(),
        ..good.clone()
    };
    let batch = [foreign, good.clone()];

    let legacy_sync = LegacySync {
        pool: app.pool.clone(),
        systems: Arc::new(app.settings.systems.clone()),
        jobs: JobSignal::default(),
    };
    let refused = handle_batch(&legacy_sync, &batch).await.unwrap().refused;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 0, "the foreign message is the one refused");
    let (callbacks,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM deliveries WHERE channel = 'callback' AND event_id = $1",
    )
    .bind(good.event_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(callbacks, 1, "the stored event got its callback job");

    app.register_device("dina", "dinas-phone").await;
    let push = Push {
        pool: app.pool.clone(),
        jobs: JobSignal::default(),
    };
    let refused = handle_batch(&push, &batch).await.unwrap().refused;
    assert_eq!(
        refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0],
        "{refused:?}"
    );
    let (pushes,): (String,) =
        sqlx::query_as("SELECT target FROM deliveries WHERE channel = 'push' AND event_id = $1")
            .bind(good.event_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(pushes, "dinas-phone", "the requester's phone is told");
}

/// How many rows of `table` the current transaction has read so far, by any scan.
async fn rows_read(conn: &mut sqlx::PgConnection, table: &str) -> i64 {
    let (read,): (i64,) = sqlx::query_as(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) \
         FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .unwrap();
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_pipelines_plans_made_on_empty_tables_read_only_what_they_name_once_full() {
    use approval_ledger::store::{db, deliveries, devices, events};
    use sqlx::Connection as _;
    use std::collections::HashMap;

    let test_db = common::TestDb::new();
    let settings = common::settings_for(&test_db, &[]);
    let pool = db::prepare(&settings.database).await.unwrap();
    // The delivery pipeline's session plans each statement once, at its first use: here, on
    // empty tables that statistics say are empty (the worst case: on a new ledger, or at the start
    // of a burst of jobs after the table was analyzed empty).
    sqlx::query("ANALYZE deliveries, events, devices")
        .execute(&pool)
        .await
        .unwrap();
    let planned = db::connect_delivery(&settings.database).unwrap();
    let mut conn = planned.acquire().await.unwrap();
    let nobody = Uuid::new_v4();
    let outcome = |id| deliveries::Recorded {
        id,
        state: deliveries::JobState::Delivered,
        error: None,
        forget_device: None,
    };
    assert!(deliveries::claim(&mut *conn, 10, 30.0)
        .await
        .unwrap()
        .is_empty());
    deliveries::record(&mut *conn, &[outcome(-1)])
        .await
        .unwrap();
    assert!(events::histories(&mut *conn, &HashMap::from([(nobody, 5)]))
        .await
        .unwrap()
        .is_empty());
    assert!(devices::of_users(&mut *conn, &["nobody".into()])
        .await
        .unwrap()
        .is_empty());

    // Then the tables fill: 20,000 due jobs (a few callbacks among the pushes), 4,000 events of
    // 1,000 requests (fewer: the append trigger's own look-up, planned on the empty table too,
    // makes a larger insert slow), 5,000 devices.
    let committed_at = chrono::Utc::now();
    let jobs: Vec<deliveries::NewJob> = (0..20_000)
        .map(|i| deliveries::NewJob {
            channel: if i % 100 == 0 {
                deliveries::Channel::Callback
            } else {
                deliveries::Channel::Push
            },
            event_id: Uuid::new_v4(),
            request_id: Uuid::new_v4(),
            sequence: 1,
            target: format!("device-{i}"),
            body: json!({}),
            committed_at,
        })
        .collect();
    assert_eq!(deliveries::create(&pool, &jobs).await.unwrap(), 20_000);
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT 'ApprovalRequest', 'filler-' || (i / 4), i % 4 + 1, 'Filler', '1.0', '{}', '{}' \
         FROM generate_series(0, 3999) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO devices (token, user_id, platform) \
         SELECT 'token-' || i, 'user-' || i, 'android' FROM generate_series(1, 5000) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();

    // The same plans, on the same connection, now read only the rows their statement names.
    let mut tx = conn.begin().await.unwrap();
    let claimed = deliveries::claim(&mut *tx, 10, 30.0).await.unwrap();
    assert_eq!(claimed.len(), 10);
    let claim_read = rows_read(&mut tx, "deliveries").await;
    let outcomes: Vec<_> = claimed.iter().map(|job| outcome(job.id)).collect();
    deliveries::record(&mut *tx, &outcomes).await.unwrap();
    let record_read = rows_read(&mut tx, "deliveries").await - claim_read;
    let history = events::histories(&mut *tx, &HashMap::from([(nobody, 5)]))
        .await
        .unwrap();
    assert!(history.is_empty());
    let histories_read = rows_read(&mut tx, "events").await;
    let found = devices::of_users(&mut *tx, &["user-7".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let devices_read = rows_read(&mut tx, "devices").await;
    tx.rollback().await.unwrap();
    drop(conn);
    planned.close().await;
    pool.close().await;

    // A plan that joined the other way round, or scanned, would read thousands.
    let read = format!(
        "rows read: claim {claim_read}, record {record_read}, histories {histories_read}, \
         devices {devices_read}"
    );
    assert!(claim_read <= 100, "the claim of 10 jobs: {read}");
    assert!(record_read <= 100, "10 outcomes: {read}");
    assert!(histories_read <= 10, "a missing request's history: {read}");
    assert!(devices_read <= 10, "one user's devices: {read}");
}
