//! People and authority (contract section 7), through the HTTP API: absences with deputies
//! (in flight and new items, chains, circles refused, ends), decisions on someone's behalf,
//! an administrator's reassignment, group approvers, and the `[policy]` rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn ids(inbox: &Value) -> Vec<String> {
    inbox["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `person` is away from a minute ago for `secs` seconds, `deputy` standing in.
async fn away(app: &TestApp, person: &str, deputy: &str, secs: i64) -> Value {
    let now = Utc::now();
    let response = app
        .post_as(
            person,
            "/v1/me/absences",
            &json!({"deputy": deputy, "from": now - chrono::Duration::minutes(1),
                    "until": now + chrono::Duration::seconds(secs), "comment": "holiday"}),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "absence of {person}"
    );
    response.json().await.expect("json")
}

#[tokio::test]
async fn an_in_flight_item_reaches_the_deputy_and_leaves_when_the_absence_ends() {
    let app = TestApp::spawn().await;
    let in_flight = app.submit_ok(&single_step("L-1", &["alice"])).await;
    assert!(ids(&app.inbox("bob").await).is_empty());

    let absence = away(&app, "alice", "bob", 3600).await;
    assert_eq!(absence["deputy"], "bob");
    let new = app.submit_ok(&single_step("L-2", &["alice"])).await;
    let bobs = ids(&app.inbox("bob").await);
    assert!(bobs.contains(&in_flight) && bobs.contains(&new), "{bobs:?}");
    assert_eq!(app.inbox("alice").await["total"], 2, "alice keeps hers");
    let listed: Value = app
        .get_as("alice", "/v1/me/absences")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"][0]["id"], absence["id"]);
    // The deputy sees the request's detail as the absent person does.
    app.detail("bob", &in_flight).await;

    let id = absence["id"].as_str().expect("id");
    let ended = app
        .call_with(
            Method::DELETE,
            &app.token("alice"),
            &format!("/v1/me/absences/{id}"),
            None,
        )
        .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert!(ids(&app.inbox("bob").await).is_empty());
    expect_error(
        app.approve("bob", &in_flight).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let listed: Value = app
        .get_as("alice", "/v1/me/absences")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"], json!([]));
    // Someone else's absence, or one never made, is not theirs to end.
    let other = app
        .call_with(
            Method::DELETE,
            &app.token("bob"),
            &format!("/v1/me/absences/{id}"),
            None,
        )
        .await;
    expect_error(other, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_retried_absence_with_the_same_key_is_recorded_once() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    let body = json!({"deputy": "bob", "from": now, "until": now + chrono::Duration::hours(1)});
    let send = || {
        app.client
            .post(format!("{}/v1/me/absences", app.address))
            .bearer_auth(app.token("alice"))
            .header("Idempotency-Key", "away-1")
            .json(&body)
            .send()
    };
    let first = send().await.expect("request");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let again = send().await.expect("request");
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["Idempotency-Replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    let listed: Value = app
        .get_as("alice", "/v1/me/absences")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_deputy_loses_the_items_when_the_absence_runs_out() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&single_step("L-1", &["alice"])).await;
    away(&app, "alice", "bob", 2).await;
    assert_eq!(ids(&app.inbox("bob").await), vec![id.clone()]);
    let gone = eventually(Duration::from_secs(10), || async {
        ids(&app.inbox("bob").await).is_empty().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the item left the deputy's inbox once until passed"
    );
}

#[tokio::test]
async fn a_chained_deputy_decides_and_the_decision_records_by_and_on_behalf_of() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&single_step("L-1", &["alice"])).await;
    away(&app, "alice", "bob", 3600).await;
    away(&app, "bob", "carol", 3600).await;
    assert_eq!(ids(&app.inbox("carol").await), vec![id.clone()]);

    let approved = app.approve("carol", &id).await;
    assert_eq!(approved.status(), StatusCode::OK);
    let detail = app.detail("alice", &id).await;
    assert_eq!(detail["status"], "approved");
    let decision = &detail["steps"][0]["decisions"][0];
    assert_eq!(decision["by"], "carol");
    assert_eq!(decision["on_behalf_of"], "alice");
    assert!(ids(&app.inbox("bob").await).is_empty());
}

#[tokio::test]
async fn a_deputys_approval_counts_as_the_absent_persons() {
    let app = TestApp::spawn().await;
    let body = json!({"external_ref": "T-1", "kind": "k", "title": "Two of two",
        "requester": "dina", "steps": [{"approvers": ["alice", "erin"], "rule": "all"}]});
    let id = app.submit_ok(&body).await;
    away(&app, "alice", "bob", 3600).await;
    assert_eq!(app.approve("bob", &id).await.status(), StatusCode::OK);
    // Alice's place is taken: neither she nor her deputy decides it again.
    expect_error(
        app.approve("alice", &id).await,
        StatusCode::CONFLICT,
        "already_decided",
    )
    .await;
    expect_error(
        app.approve("bob", &id).await,
        StatusCode::CONFLICT,
        "already_decided",
    )
    .await;
    assert!(ids(&app.inbox("alice").await).is_empty());
    assert_eq!(app.approve("erin", &id).await.status(), StatusCode::OK);
    assert_eq!(app.detail("dina", &id).await["status"], "approved");
}

#[tokio::test]
async fn a_deputy_never_decides_a_request_they_submitted() {
    let app = TestApp::spawn().await;
    let mut body = single_step("L-1", &["alice"]);
    body["requester"] = json!("bob");
    let own = app.submit_ok(&body).await;
    let theirs = app.submit_ok(&single_step("L-2", &["alice"])).await;
    away(&app, "alice", "bob", 3600).await;
    assert_eq!(ids(&app.inbox("bob").await), vec![theirs]);
    expect_error(
        app.approve("bob", &own).await,
        StatusCode::FORBIDDEN,
        "own_request",
    )
    .await;
}

#[tokio::test]
async fn absences_that_cannot_be_are_refused() {
    let app = TestApp::spawn().await;
    away(&app, "alice", "bob", 3600).await;
    away(&app, "bob", "carol", 3600).await;
    let now = Utc::now();
    let hour = chrono::Duration::hours(1);
    for (person, body) in [
        // carol -> alice closes alice -> bob -> carol.
        (
            "carol",
            json!({"deputy": "alice", "from": now, "until": now + hour}),
        ),
        (
            "erin",
            json!({"deputy": "frank", "from": now + hour, "until": now}),
        ),
        (
            "erin",
            json!({"deputy": "frank", "from": now, "until": now}),
        ),
        (
            "erin",
            json!({"deputy": "erin", "from": now, "until": now + hour}),
        ),
        (
            "erin",
            json!({"deputy": "frank", "from": now - hour * 2, "until": now - hour}),
        ),
    ] {
        expect_error(
            app.post_as(person, "/v1/me/absences", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_absence",
        )
        .await;
    }
    // Past the absences, the same chain is no circle.
    let later = json!({"deputy": "alice", "from": now + hour * 2, "until": now + hour * 3});
    assert_eq!(
        app.post_as("carol", "/v1/me/absences", &later)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn an_administrator_reassigns_with_per_item_results() {
    let app = TestApp::spawn().await;
    let one = app.submit_ok(&single_step("L-1", &["alice"])).await;
    let two = app.submit_ok(&single_step("L-2", &["alice", "bob"])).await;
    let body = json!({"from": "alice", "to": "bob", "comment": "alice left"});
    let refused = app.post_as("carol", "/v1/admin/reassign", &body).await;
    expect_error(refused, StatusCode::FORBIDDEN, "forbidden").await;

    let answer = app
        .call_with(
            Method::POST,
            &app.token_with("root", &["admin"]),
            "/v1/admin/reassign",
            Some(&body),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.expect("json");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{answer}");
    let of = |id: &str| {
        results
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(of(&one)["ok"], true, "{answer}");
    assert_eq!(of(&one)["status"], "pending");
    // Bob is an approver of two already: that one item fails on its own.
    assert_eq!(of(&two)["ok"], false, "{answer}");
    assert_eq!(of(&two)["error"]["code"], "invalid_delegate");
    assert_eq!(ids(&app.inbox("bob").await).len(), 2);
    assert_eq!(ids(&app.inbox("alice").await), vec![two.clone()]);
    let detail = app.detail("bob", &one).await;
    assert_eq!(detail["steps"][0]["delegations"][0]["to"], "bob");
}

fn group_step(external_ref: &str, groups: &[&str], rule: Value) -> Value {
    json!({"external_ref": external_ref, "kind": "k", "title": "For a group",
        "requester": "dina", "steps": [{"groups": groups, "rule": rule}]})
}

#[tokio::test]
async fn a_group_member_decides_and_rules_count_distinct_people() {
    let app = TestApp::spawn().await;
    let fay = app.token_in_groups("fay", &[], &["finance", "legal"]);
    let gil = app.token_in_groups("gil", &[], &["legal"]);
    let gus = app.token_in_groups("gus", &[], &["sales"]);
    let inbox_of = |token: String| {
        let app = &app;
        async move {
            let response = app.call_with(Method::GET, &token, "/v1/inbox", None).await;
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.expect("json")
        }
    };
    let id = app
        .submit_ok(&group_step(
            "G-1",
            &["finance", "legal"],
            json!({"at_least": 2}),
        ))
        .await;
    assert_eq!(ids(&inbox_of(fay.clone()).await), vec![id.clone()]);
    assert_eq!(
        inbox_of(fay.clone()).await["total"],
        1,
        "once for two groups"
    );
    assert_eq!(ids(&inbox_of(gil.clone()).await), vec![id.clone()]);
    assert!(ids(&inbox_of(gus.clone()).await).is_empty());

    let approve = |token: String| {
        let app = &app;
        let path = format!("/v1/requests/{id}/approve");
        async move {
            app.call_with(Method::POST, &token, &path, Some(&json!({})))
                .await
        }
    };
    assert_eq!(approve(fay.clone()).await.status(), StatusCode::OK);
    // One person in two groups of an at_least 2 step counts once.
    expect_error(
        approve(fay.clone()).await,
        StatusCode::CONFLICT,
        "already_decided",
    )
    .await;
    assert!(ids(&inbox_of(fay.clone()).await).is_empty());
    expect_error(approve(gus).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(approve(gil).await.status(), StatusCode::OK);
    assert_eq!(app.detail("dina", &id).await["status"], "approved");

    let all = app
        .submit(&group_step("G-2", &["finance"], json!("all")))
        .await;
    expect_error(all, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

fn po(external_ref: &str, steps: Value, value: &str, currency: &str) -> Value {
    json!({"external_ref": external_ref, "kind": "purchase_order", "title": "A purchase",
        "requester": "dina", "amount": {"value": value, "currency": currency}, "steps": steps})
}

async fn spawn_with_policy() -> TestApp {
    TestApp::spawn_with(
        approval_ledger::startup::Roles::ALL,
        &[
            ("APPROVAL_LEDGER_POLICY__SEPARATION_OF_DUTIES", "true"),
            ("APPROVAL_LEDGER_POLICY__REQUIRE_VERSION_ABOVE", "5000.00"),
            ("APPROVAL_LEDGER_POLICY__LIMITS__ALICE__USD", "1000.00"),
            ("APPROVAL_LEDGER_POLICY__LIMITS__FINANCE__USD", "50000.00"),
        ],
    )
    .await
}

#[tokio::test]
async fn limits_refuse_approvals_above_them_the_highest_of_own_and_groups_per_currency() {
    let app = spawn_with_policy().await;
    let alice = json!([{"approvers": ["alice"], "rule": "any"}]);
    let usd = app
        .submit_ok(&po("P-1", alice.clone(), "1250.00", "USD"))
        .await;
    expect_error(
        app.approve("alice", &usd).await,
        StatusCode::FORBIDDEN,
        "over_authority_limit",
    )
    .await;
    // In finance, her limit is finance's: the higher one.
    let in_finance = app.token_in_groups("alice", &[], &["finance"]);
    let approved = app
        .call_with(
            Method::POST,
            &in_finance,
            &format!("/v1/requests/{usd}/approve"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(approved.status(), StatusCode::OK);
    // No limit in euros.
    let eur = app
        .submit_ok(&po("P-2", alice.clone(), "1250.00", "EUR"))
        .await;
    assert_eq!(app.approve("alice", &eur).await.status(), StatusCode::OK);
    // Rejecting and returning are never limited.
    let rejected = app
        .submit_ok(&po("P-3", alice.clone(), "1250.00", "USD"))
        .await;
    let answer = app
        .decide("alice", &rejected, "reject", &json!({"comment": "no"}))
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let returned = app.submit_ok(&po("P-4", alice, "1250.00", "USD")).await;
    let answer = app
        .decide("alice", &returned, "return", &json!({"comment": "quote?"}))
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn separation_of_duties_and_version_binding_refuse_with_their_codes() {
    let app = spawn_with_policy().await;
    let steps = json!([{"approvers": ["bob"], "rule": "any"},
                       {"approvers": ["bob", "carol"], "rule": "any"}]);
    let id = app.submit_ok(&po("S-1", steps, "100.00", "USD")).await;
    assert_eq!(app.approve("bob", &id).await.status(), StatusCode::OK);
    expect_error(
        app.approve("bob", &id).await,
        StatusCode::FORBIDDEN,
        "separation_of_duties",
    )
    .await;
    assert_eq!(app.approve("carol", &id).await.status(), StatusCode::OK);

    let big = json!([{"approvers": ["bob"], "rule": "any"}]);
    let id = app.submit_ok(&po("V-1", big, "6000.00", "USD")).await;
    expect_error(
        app.approve("bob", &id).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "expected_version_required",
    )
    .await;
    let bound = app
        .decide("bob", &id, "approve", &json!({"expected_version": 1}))
        .await;
    assert_eq!(bound.status(), StatusCode::OK);
}

#[tokio::test]
async fn absence_events_leave_no_reader_stalled_and_the_audit_still_verifies() {
    let app = TestApp::spawn_with(
        approval_ledger::startup::Roles::ALL,
        &[("APPROVAL_LEDGER_AUDIT__CHECKPOINT_INTERVAL_SECS", "0")],
    )
    .await;
    let absence = away(&app, "alice", "bob", 3600).await;
    let id = absence["id"].as_str().expect("id").to_owned();
    let ended = app
        .call_with(
            Method::DELETE,
            &app.token("alice"),
            &format!("/v1/me/absences/{id}"),
            None,
        )
        .await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let request = app.submit_ok(&single_step("L-1", &["erin"])).await;
    assert_eq!(app.approve("erin", &request).await.status(), StatusCode::OK);
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    // The relay and the audit reader pass the absence events and reach the last event.
    let caught_up = eventually(Duration::from_secs(15), || async {
        let (last,): (i64,) = sqlx::query_as(
            "SELECT global_id FROM events ORDER BY tx_id DESC, global_id DESC LIMIT 1",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        let behind: (i64,) = sqlx::query_as(
            "SELECT count(*) FROM feed_checkpoints \
             WHERE name IN ('relay', 'audit') AND global_id >= $1",
        )
        .bind(last)
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (behind.0 == 2).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "relay and audit passed the absence events"
    );
    let run = app.cli(&["audit", "verify"]).await;
    assert!(run.ok(), "{run:?}");
    assert!(
        run.stdout.contains(&format!("intact: {total} events")),
        "{run:?}"
    );
}

#[tokio::test]
async fn the_deputy_gets_the_push_for_a_new_item_of_the_absent_person() {
    let app = TestApp::spawn().await;
    app.register_device("bob", "token-bob").await;
    app.register_device("dina", "token-dina").await;
    away(&app, "alice", "bob", 3600).await;
    // The requester stands in for alice too, but never hears of her own request as its approver.
    away(&app, "alice", "dina", 3600).await;
    let id = app.submit_ok(&single_step("L-1", &["alice"])).await;
    let targets = eventually(Duration::from_secs(15), || async {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT target FROM deliveries WHERE channel = 'push' AND request_id = $1::uuid",
        )
        .bind(&id)
        .fetch_all(&app.pool)
        .await
        .ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(
        targets,
        Some(vec![("token-bob".to_owned(),)]),
        "bob's phone, not dina's"
    );
}
