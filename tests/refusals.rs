//! Every refusal the contract names, with its status and stable code, and that none of them is
//! ever a 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use approval_ledger::signing::signature;
use common::{expect_error, purchase_order, single_step, TestApp, ERP_SECRET, HR_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_get_the_codes_of_the_contract() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-9")).await;
    let path = |verb: &str| format!("/v1/requests/{id}/{verb}");

    // 401: no token, a token signed with another secret.
    let response = app
        .client
        .get(format!("{}/v1/inbox", app.address))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": 4_000_000_000_i64, "iss": "approval-ledger", "aud": "approval-mobile"}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let response = app
        .client
        .get(format!("{}/v1/inbox", app.address))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // 404: a stranger, an unknown id, a malformed id.
    expect_error(
        app.get_as("mallory", &format!("/v1/requests/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.approve("mallory", &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.approve("alice", &uuid::Uuid::new_v4().to_string())
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.approve("alice", "not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // 403: not an approver of the current step, one's own request, withdrawing another's.
    expect_error(
        app.approve("bob", &id).await,
        StatusCode::FORBIDDEN,
        "not_an_approver",
    )
    .await;
    expect_error(
        app.approve("dina", &id).await,
        StatusCode::FORBIDDEN,
        "own_request",
    )
    .await;
    expect_error(
        app.post_as("alice", &path("withdraw"), &json!({})).await,
        StatusCode::FORBIDDEN,
        "not_requester",
    )
    .await;

    // 422: reject and return need a comment; a delegate must be someone new.
    expect_error(
        app.post_as("alice", &path("reject"), &json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "comment_required",
    )
    .await;
    expect_error(
        app.post_as("alice", &path("return"), &json!({"comment": " "}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "comment_required",
    )
    .await;
    expect_error(
        app.post_as("alice", &path("delegate"), &json!({"to": "dina"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_delegate",
    )
    .await;

    // 409: a stale expected_version; a decision made twice; a final request.
    expect_error(
        app.post_as("alice", &path("approve"), &json!({"expected_version": 7}))
            .await,
        StatusCode::CONFLICT,
        "version_conflict",
    )
    .await;
    let ok: Value = app
        .post_as("alice", &path("approve"), &json!({"expected_version": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["version"], 3);
    assert_eq!(app.approve("bob", &id).await.status(), StatusCode::OK);
    expect_error(
        app.approve("bob", &id).await,
        StatusCode::CONFLICT,
        "already_decided",
    )
    .await;
    app.decide("carol", &id, "reject", &json!({"comment": "no"}))
        .await;
    expect_error(
        app.approve("dave", &id).await,
        StatusCode::CONFLICT,
        "not_pending",
    )
    .await;

    // 400: malformed JSON, a wrong type, an unknown field, money as a float.
    let raw = |body: &'static str| {
        app.client
            .post(format!("{}{}", app.address, path("approve")))
            .bearer_auth(app.token("alice"))
            .body(body)
            .send()
    };
    expect_error(
        raw("{not json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        raw(r#"{"expected_version": "three"}"#).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        raw(r#"{"expected_verison": 3}"#).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        app.get_as("alice", "/v1/inbox?limit=0").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        app.get_as("alice", "/v1/inbox?cursor=garbage").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systems_get_the_codes_of_the_contract() {
    let app = TestApp::spawn().await;
    let body = purchase_order("PO-S").to_string();

    // 401: wrong secret, another system's secret, a stale timestamp, no signature, an unknown system.
    let wrong = app
        .system_call(
            Method::POST,
            "wrong-secret",
            "/v1/systems/erp/requests",
            &body,
        )
        .await;
    expect_error(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let crossed = app
        .system_call(Method::POST, HR_SECRET, "/v1/systems/erp/requests", &body)
        .await;
    expect_error(crossed, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let stale_ts = chrono::Utc::now().timestamp() - 301;
    let stale = app
        .client
        .post(format!("{}/v1/systems/erp/requests", app.address))
        .header("X-Ledger-Timestamp", stale_ts.to_string())
        .header(
            "X-Ledger-Signature",
            signature(ERP_SECRET, stale_ts, body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect_error(stale, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let unsigned = app
        .client
        .post(format!("{}/v1/systems/erp/requests", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect_error(unsigned, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let unknown = app
        .system_call(Method::POST, ERP_SECRET, "/v1/systems/sap/requests", &body)
        .await;
    expect_error(unknown, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // 422: rules of the submission.
    let mut no_steps = purchase_order("PO-E");
    no_steps["steps"] = json!([]);
    expect_error(
        app.submit(&no_steps).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let mut self_approval = single_step("PO-SA", &["alice", "dina"]);
    self_approval["requester"] = json!("dina");
    expect_error(
        app.submit(&self_approval).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let mut negative = purchase_order("PO-N");
    negative["amount"]["value"] = json!("-5.00");
    expect_error(
        app.submit(&negative).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let mut weird = purchase_order("PO-X");
    weird["amount"]["value"] = json!("12,50");
    expect_error(
        app.submit(&weird).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // 400: money as a float, not JSON.
    let mut float = purchase_order("PO-F");
    float["amount"]["value"] = json!(12.5);
    expect_error(
        app.submit(&float).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let garbage = app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests",
            "\u{0}\u{1}",
        )
        .await;
    expect_error(garbage, StatusCode::BAD_REQUEST, "bad_request").await;

    // 404: cancelling an unknown reference; 409: cancelling twice.
    let unknown = app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests/NOPE/cancel",
            "{}",
        )
        .await;
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    app.submit_ok(&purchase_order("PO-CC")).await;
    let first = app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests/PO-CC/cancel",
            "{}",
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests/PO-CC/cancel",
            "{}",
        )
        .await;
    expect_error(again, StatusCode::CONFLICT, "not_pending").await;
    // Another system cannot reach ERP's request through its own path.
    let hr = app
        .system_call(Method::GET, HR_SECRET, "/v1/systems/hr/requests/PO-CC", "")
        .await;
    expect_error(hr, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_unknown_routes_answer_in_the_error_format() {
    let app = TestApp::spawn().await;
    let huge = "x".repeat(70 * 1024);
    let response = app
        .client
        .post(format!("{}/v1/decisions", app.address))
        .bearer_auth(app.token("alice"))
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let items: Vec<Value> = (0..101)
        .map(|_| json!({"id": uuid::Uuid::new_v4(), "decision": "approve"}))
        .collect();
    let response = app
        .post_as("alice", "/v1/decisions", &json!({"items": items}))
        .await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let response = app
        .post_as("alice", "/v1/decisions", &json!({"items": []}))
        .await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let response = app
        .client
        .get(format!("{}/v1/nothing-here", app.address))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap()
        .headers()
        .contains_key("x-request-id"));
}
