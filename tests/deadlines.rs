//! Deadlines move work on: a step due in seconds reminds its approvers, goes overdue and
//! escalates, once each, also with two workers and across a kill -9; an expired request takes no
//! decision; the new callbacks are signed and ordered with the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use approval_ledger::signing::signature;
use approval_ledger::startup::Roles;
use common::fake::{Call, FakeEndpoint};
use common::{eventually, expect_error, TestApp, ERP_SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(40);

const API_ONLY: Roles = Roles {
    api: true,
    worker: false,
};

/// A service whose ERP calls back to `legacy`, whose pushes go to `fcm`, and whose steps remind
/// two seconds before their deadline.
async fn app_with(legacy: &FakeEndpoint, fcm: &FakeEndpoint) -> TestApp {
    common::fake::app_calling(
        legacy,
        fcm,
        &[("APPROVAL_LEDGER_SLA__REMIND_BEFORE", "PT2S")],
    )
    .await
}

/// A one-step request of alice's, due in `due_in`, escalating to grace.
fn timed(external_ref: &str, due_in: &str) -> Value {
    json!({
        "external_ref": external_ref,
        "kind": "purchase_order",
        "title": format!("{external_ref}: a deadline"),
        "requester": "dina",
        "steps": [{"approvers": ["alice"], "rule": "any", "due_in": due_in,
                   "escalate_to": ["grace"]}]
    })
}

/// The types of request `id`'s timeline.
fn timeline_types(detail: &Value) -> Vec<String> {
    detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// A timestamp of an answer, to the microsecond (what the read models' columns keep).
fn micros(value: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .timestamp_micros()
}

fn count(types: &[String], kind: &str) -> usize {
    types.iter().filter(|t| *t == kind).count()
}

fn pushes_to<'a>(calls: &'a [Call], token: &str) -> Vec<&'a Call> {
    calls
        .iter()
        .filter(|c| c.body["message"]["token"] == token)
        .collect()
}

fn title(call: &Call) -> String {
    call.body["message"]["notification"]["title"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The events of each type the store holds, per request.
async fn events_by_request(app: &TestApp) -> BTreeMap<String, Vec<String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type FROM events ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut by_request: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, kind) in rows {
        by_request.entry(id).or_default().push(kind);
    }
    by_request
}

async fn timers_left(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM rm_timers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_due_in_seconds_reminds_goes_overdue_and_escalates_once_each() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(&legacy, &fcm).await;
    app.register_device("alice", "token-alice").await;
    app.register_device("grace", "token-grace").await;

    let id = app.submit_ok(&timed("PO-SLA-1", "PT4S")).await;
    let detail = app.detail("dina", &id).await;
    let due_at = detail["steps"][0]["due_at"].as_str().unwrap().to_owned();
    assert_eq!(detail["steps"][0]["overdue"], false);
    let inbox = app.inbox("alice").await;
    assert_eq!(
        micros(&inbox["items"][0]["step_due_at"]),
        micros(&json!(due_at))
    );
    assert_eq!(inbox["items"][0]["overdue"], false);
    assert_eq!(app.inbox("grace").await["total"], 0);

    let escalated = eventually(WAIT, || async {
        let detail = app.detail("dina", &id).await;
        let types = timeline_types(&detail);
        // The state and the timeline are two reads: wait for both to show the escalation.
        let both = detail["version"] == 4 && count(&types, "StepEscalated") == 1;
        (both && count(&types, "ReminderSent") == 2).then_some(detail)
    })
    .await
    .expect("the step reminded, went overdue and escalated");
    // A few ticks later, nothing fired again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let detail = app.detail("dina", &id).await;
    let types = timeline_types(&detail);
    assert_eq!(
        types,
        [
            "RequestSubmitted",
            "ReminderSent",
            "ReminderSent",
            "StepEscalated"
        ],
        "each timer fired once, the overdue notice before the escalation"
    );
    assert_eq!(detail, escalated);
    let step = &detail["steps"][0];
    assert_eq!(step["overdue"], true);
    assert_eq!(step["approvers"], json!(["alice", "grace"]));
    assert_eq!(detail["awaiting"], json!(["alice", "grace"]));
    assert_eq!(detail["timeline"][3]["step"], 0);
    assert_eq!(timers_left(&app).await, 0, "no timer is left to fire");

    // The escalated approver has the item, overdue, and decides it.
    let inbox = app.inbox("grace").await;
    assert_eq!(inbox["total"], 1);
    assert_eq!(inbox["items"][0]["overdue"], true);
    assert_eq!(app.approve("grace", &id).await.status(), StatusCode::OK);
    assert_eq!(app.detail("dina", &id).await["status"], "approved");

    // Alice's phone: the new item, "due in", "overdue"; grace's: the escalation.
    let pushes = fcm
        .wait_for(WAIT, |c| {
            pushes_to(c, "token-alice").len() >= 3 && !pushes_to(c, "token-grace").is_empty()
        })
        .await;
    let alice: Vec<String> = pushes_to(&pushes, "token-alice")
        .into_iter()
        .map(title)
        .collect();
    assert_eq!(alice.len(), 3, "{alice:?}");
    assert!(alice[1].starts_with("Due in"), "{alice:?}");
    assert_eq!(alice[2], "Overdue");
    let grace: Vec<String> = pushes_to(&pushes, "token-grace")
        .into_iter()
        .map(title)
        .collect();
    assert_eq!(grace, ["Escalated to you: approval needed"]);

    // The source system hears of the escalation, then of the approval: signed, in order.
    let calls = legacy
        .wait_for(WAIT, |c| {
            c.iter()
                .any(|call| call.body["type"] == "approval.approved")
        })
        .await;
    let types: Vec<&str> = calls
        .iter()
        .map(|c| c.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["approval.escalated", "approval.approved"]);
    let escalation = &calls[0];
    assert_eq!(escalation.body["request_id"], id.as_str());
    assert_eq!(escalation.body["status"], "pending");
    assert_eq!(escalation.body["step"], 0);
    assert_eq!(escalation.body["escalated_to"], json!(["grace"]));
    assert_eq!(escalation.body["version"], 4);
    for call in &calls {
        let ts: i64 = call.header("x-ledger-timestamp").unwrap().parse().unwrap();
        assert_eq!(
            call.header("x-ledger-signature").unwrap(),
            signature(ERP_SECRET, ts, call.raw.as_bytes()),
        );
        assert_eq!(
            call.header("x-ledger-event-id"),
            call.body["event_id"].as_str()
        );
    }

    let metrics = app.metrics().await;
    for line in [
        "approval_ledger_timers_fired_total{kind=\"reminder\",outcome=\"fired\"} 1",
        "approval_ledger_timers_fired_total{kind=\"overdue\",outcome=\"fired\"} 1",
        "approval_ledger_timers_fired_total{kind=\"escalation\",outcome=\"fired\"} 1",
        "approval_ledger_timer_lag_seconds_count 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("approval_ledger_overdue_steps"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_takes_no_decision_and_its_system_hears_it_signed() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_with(&legacy, &fcm).await;
    let due_at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let mut body = common::single_step("LV-EXP", &["alice"]);
    body["due_at"] = json!(due_at);
    let id = app.submit_ok(&body).await;
    assert_eq!(
        micros(&app.inbox("alice").await["items"][0]["due_at"]),
        micros(&json!(due_at))
    );

    let expired = eventually(WAIT, || async {
        let detail = app.detail("dina", &id).await;
        (detail["status"] == "expired").then_some(detail)
    })
    .await
    .expect("the request expired");
    assert_eq!(timeline_types(&expired).last().unwrap(), "RequestExpired");
    expect_error(
        app.approve("alice", &id).await,
        StatusCode::CONFLICT,
        "not_pending",
    )
    .await;
    assert_eq!(app.inbox("alice").await["total"], 0);

    let calls = legacy.wait_for(WAIT, |c| !c.is_empty()).await;
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.body["type"], "approval.expired");
    assert_eq!(call.body["status"], "expired");
    let ts: i64 = call.header("x-ledger-timestamp").unwrap().parse().unwrap();
    assert_eq!(
        call.header("x-ledger-signature").unwrap(),
        signature(ERP_SECRET, ts, call.raw.as_bytes()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deadlines_are_refused_with_422() {
    let app = TestApp::spawn_with(
        API_ONLY,
        &[("APPROVAL_LEDGER_LEDGER__READ_YOUR_WRITES_MS", "50")],
    )
    .await;
    for (due_in, needle) in [
        (json!("P1M"), "months"),
        (json!("8 hours"), "ISO 8601"),
        (json!("PT0S"), "longer than zero"),
        (json!("PT1.5H"), "whole numbers"),
    ] {
        let mut body = timed("PO-BAD", "PT1H");
        body["steps"][0]["due_in"] = due_in.clone();
        let response = app.submit(&body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{due_in}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_failed");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    let mut body = timed("PO-BAD", "PT1H");
    body["steps"][0]["escalate_to"] = json!(["dina"]);
    expect_error(
        app.submit(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let mut body = timed("PO-BAD", "PT1H");
    body["steps"][0]["due_in"] = json!(8);
    expect_error(
        app.submit(&body).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}

/// `approval-ledger serve --role worker` as its own process on the test's database.
fn worker(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_approval-ledger"))
        .args(["serve", "--role", "worker"])
        .env("APPROVAL_LEDGER_DATABASE__URL", app.db.url())
        .env("APPROVAL_LEDGER_DATABASE__MAX_CONNECTIONS", "4")
        .env("APPROVAL_LEDGER_AUTH__JWT_SECRET", "test-jwt-secret")
        .env("APPROVAL_LEDGER_BROKER__EXCHANGE", &app.broker.exchange)
        .env("APPROVAL_LEDGER_FEED__POLL_INTERVAL_MS", "100")
        .env("APPROVAL_LEDGER_SYSTEMS__ERP__NAME", "ERP")
        .env("APPROVAL_LEDGER_SYSTEMS__ERP__SECRET", ERP_SECRET)
        .env(
            "APPROVAL_LEDGER_SYSTEMS__ERP__CALLBACK_URL",
            "http://127.0.0.1:9/cb",
        )
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts")
}

fn kill_nine(child: &mut Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// Two workers fire the timers of many requests while one and then the other is killed with
/// SIGKILL; a third starts late. Every timer fired once: none twice, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_with_two_workers_and_across_a_kill_9() {
    let app =
        TestApp::spawn_with(API_ONLY, &[("APPROVAL_LEDGER_SLA__REMIND_BEFORE", "PT3S")]).await;
    let mut a = worker(&app);
    let mut b = worker(&app);
    let requests = 12;
    let mut ids = vec![];
    for n in 0..requests {
        // Deadlines 4 to 7 seconds out fall due while the workers are killed, one after the
        // other; the reminders (3 seconds before) while the second still runs.
        let due_in = format!("PT{}S", 4 + n % 4);
        ids.push(app.submit_ok(&timed(&format!("PO-K9-{n}"), &due_in)).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill_nine(&mut a);
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill_nine(&mut b);
    // Timers fall due while no worker runs; a new one fires them late, each once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut c = worker(&app);
    let all_fired = eventually(WAIT, || async {
        let events = events_by_request(&app).await;
        let done = events
            .values()
            .filter(|types| types.iter().any(|t| t == "StepEscalated"))
            .count();
        (done == requests && timers_left(&app).await == 0).then_some(events)
    })
    .await;
    // A moment more, for a doubled fire to show if there were one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = events_by_request(&app).await;
    kill_nine(&mut c);
    let all_fired = all_fired.expect("every timer fired");
    assert_eq!(events, all_fired, "nothing fired after");
    assert_eq!(events.len(), requests);
    for types in events.values() {
        assert_eq!(
            types,
            &[
                "RequestSubmitted",
                "ReminderSent",
                "ReminderSent",
                "StepEscalated"
            ],
            "each timer fired once"
        );
    }
    // The read models saw it all.
    for id in &ids {
        let detail = eventually(WAIT, || async {
            let detail = app.detail("dina", id).await;
            (detail["version"] == 4).then_some(detail)
        })
        .await
        .expect("the detail shows every firing");
        assert_eq!(detail["steps"][0]["approvers"], json!(["alice", "grace"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_orders_by_the_nearest_of_the_steps_and_the_requests_deadline() {
    let app = TestApp::spawn().await;
    let plain = app
        .submit_ok(&common::single_step("LV-PLAIN", &["alice"]))
        .await;
    let mut far = common::single_step("LV-FAR", &["alice"]);
    far["due_at"] = json!("2099-12-01T17:00:00Z");
    let far = app.submit_ok(&far).await;
    let soon = app.submit_ok(&timed("PO-SOON", "PT1H")).await;
    let mut both = timed("PO-BOTH", "P2D");
    both["due_at"] = json!((chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339());
    let both = app.submit_ok(&both).await;
    let inbox = app.inbox("alice").await;
    let order: Vec<&str> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [&both, &soon, &far, &plain]);
    let items = inbox["items"].as_array().unwrap();
    assert!(items[1]["step_due_at"].is_string() && items[1]["due_at"].is_null());
    assert!(items[3]["step_due_at"].is_null() && items[3]["overdue"] == false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_the_deadlines_fields() {
    let app = TestApp::spawn_with(API_ONLY, &[]).await;
    let doc: Value = app.get_json("/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    for (schema, fields) in [
        ("StepDto", &["due_in", "escalate_to"][..]),
        ("InboxItem", &["step_due_at", "overdue"][..]),
        ("StepOut", &["due_at", "overdue"][..]),
    ] {
        for field in fields {
            assert!(
                schemas[schema]["properties"][field].is_object(),
                "{schema}.{field} in {}",
                schemas[schema]
            );
        }
    }
}

/// Each timer row of the store with the transaction that last wrote it.
async fn timer_rows(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT timer, xmin::text FROM rm_timers ORDER BY timer")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_leaves_the_timers_as_they_were_does_not_rewrite_them() {
    let app = TestApp::spawn().await;
    let due_at = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let id = app
        .submit_ok(&json!({
            "external_ref": "PO-TIMERS",
            "kind": "purchase_order",
            "title": "PO-TIMERS: two of three",
            "requester": "dina",
            "due_at": due_at,
            "steps": [{"approvers": ["alice", "bob", "carol"], "rule": {"at_least": 2},
                       "due_in": "P1D"},
                      {"approvers": ["erin"], "rule": "any", "due_in": "P1D"}]
        }))
        .await;
    let first = timer_rows(&app).await;
    assert!(
        first.iter().any(|(t, _)| t.starts_with("expiry")),
        "{first:?}"
    );
    assert!(
        first.len() >= 2,
        "the expiry and the first step's: {first:?}"
    );

    // One approval of two: same step, same deadlines: the rows stay as written.
    assert_eq!(app.approve("alice", &id).await.status(), StatusCode::OK);
    assert_eq!(timer_rows(&app).await, first);

    // The step completes: the next step's timers replace the first's; the expiry stays.
    assert_eq!(app.approve("bob", &id).await.status(), StatusCode::OK);
    let second = timer_rows(&app).await;
    assert_ne!(second, first);
    let expiry =
        |rows: &[(String, String)]| rows.iter().find(|(t, _)| t.starts_with("expiry")).cloned();
    assert_eq!(
        expiry(&second),
        expiry(&first),
        "the expiry row was left alone"
    );

    // Approved: no timers left.
    assert_eq!(app.approve("erin", &id).await.status(), StatusCode::OK);
    assert_eq!(timers_left(&app).await, 0);
}
