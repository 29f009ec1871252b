//! Every refusal the contract names, with its status and stable code, and that none of them is
//! ever a 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use approval_ledger::http::auth::signature;
use common::{error_code, purchase_order, single_step, TestApp, ERP_SECRET, HR_SECRET};
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
    assert_eq!(
        error_code(response).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
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
    assert_eq!(
        error_code(response).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );

    // 404: a stranger, an unknown id, a malformed id.
    assert_eq!(
        error_code(app.get_as("mallory", &format!("/v1/requests/{id}")).await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        error_code(app.approve("mallory", &id).await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        error_code(
            app.approve("alice", &uuid::Uuid::new_v4().to_string())
                .await
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        error_code(app.approve("alice", "not-a-uuid").await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );

    // 403: not an approver of the current step, one's own request, withdrawing another's.
    assert_eq!(
        error_code(app.approve("bob", &id).await).await,
        (StatusCode::FORBIDDEN, "not_an_approver".into())
    );
    assert_eq!(
        error_code(app.approve("dina", &id).await).await,
        (StatusCode::FORBIDDEN, "own_request".into())
    );
    assert_eq!(
        error_code(app.post_as("alice", &path("withdraw"), &json!({})).await).await,
        (StatusCode::FORBIDDEN, "not_requester".into())
    );

    // 422: reject and return need a comment; a delegate must be someone new.
    assert_eq!(
        error_code(app.post_as("alice", &path("reject"), &json!({})).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "comment_required".into())
    );
    assert_eq!(
        error_code(
            app.post_as("alice", &path("return"), &json!({"comment": " "}))
                .await
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "comment_required".into())
    );
    assert_eq!(
        error_code(
            app.post_as("alice", &path("delegate"), &json!({"to": "dina"}))
                .await
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_delegate".into())
    );

    // 409: a stale expected_version; a decision made twice; a final request.
    assert_eq!(
        error_code(
            app.post_as("alice", &path("approve"), &json!({"expected_version": 7}))
                .await
        )
        .await,
        (StatusCode::CONFLICT, "version_conflict".into())
    );
    let ok: Value = app
        .post_as("alice", &path("approve"), &json!({"expected_version": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["version"], 3);
    assert_eq!(app.approve("bob", &id).await.status(), StatusCode::OK);
    assert_eq!(
        error_code(app.approve("bob", &id).await).await,
        (StatusCode::CONFLICT, "already_decided".into())
    );
    app.decide("carol", &id, "reject", &json!({"comment": "no"}))
        .await;
    assert_eq!(
        error_code(app.approve("dave", &id).await).await,
        (StatusCode::CONFLICT, "not_pending".into())
    );

    // 400: malformed JSON, a wrong type, an unknown field, money as a float.
    let raw = |body: &'static str| {
        app.client
            .post(format!("{}{}", app.address, path("approve")))
            .bearer_auth(app.token("alice"))
            .body(body)
            .send()
    };
    assert_eq!(
        error_code(raw("{not json").await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        error_code(raw(r#"{"expected_version": "three"}"#).await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        error_code(raw(r#"{"expected_verison": 3}"#).await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        error_code(app.get_as("alice", "/v1/inbox?limit=0").await).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        error_code(app.get_as("alice", "/v1/inbox?cursor=garbage").await).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
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
    assert_eq!(
        error_code(wrong).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let crossed = app
        .system_call(Method::POST, HR_SECRET, "/v1/systems/erp/requests", &body)
        .await;
    assert_eq!(
        error_code(crossed).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
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
    assert_eq!(
        error_code(stale).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let unsigned = app
        .client
        .post(format!("{}/v1/systems/erp/requests", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(unsigned).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let unknown = app
        .system_call(Method::POST, ERP_SECRET, "/v1/systems/sap/requests", &body)
        .await;
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );

    // 422: rules of the submission.
    let mut no_steps = purchase_order("PO-E");
    no_steps["steps"] = json!([]);
    assert_eq!(
        error_code(app.submit(&no_steps).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed".into())
    );
    let mut self_approval = single_step("PO-SA", &["alice", "dina"]);
    self_approval["requester"] = json!("dina");
    assert_eq!(
        error_code(app.submit(&self_approval).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed".into())
    );
    let mut negative = purchase_order("PO-N");
    negative["amount"]["value"] = json!("-5.00");
    assert_eq!(
        error_code(app.submit(&negative).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed".into())
    );
    let mut weird = purchase_order("PO-X");
    weird["amount"]["value"] = json!("12,50");
    assert_eq!(
        error_code(app.submit(&weird).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed".into())
    );

    // 400: money as a float, not JSON.
    let mut float = purchase_order("PO-F");
    float["amount"]["value"] = json!(12.5);
    assert_eq!(
        error_code(app.submit(&float).await).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    let garbage = app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests",
            "\u{0}\u{1}",
        )
        .await;
    assert_eq!(
        error_code(garbage).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );

    // 404: cancelling an unknown reference; 409: cancelling twice.
    let unknown = app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests/NOPE/cancel",
            "{}",
        )
        .await;
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
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
    assert_eq!(
        error_code(again).await,
        (StatusCode::CONFLICT, "not_pending".into())
    );
    // Another system cannot reach ERP's request through its own path.
    let hr = app
        .system_call(Method::GET, HR_SECRET, "/v1/systems/hr/requests/PO-CC", "")
        .await;
    assert_eq!(
        error_code(hr).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
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
    assert_eq!(
        error_code(response).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    let items: Vec<Value> = (0..101)
        .map(|_| json!({"id": uuid::Uuid::new_v4(), "decision": "approve"}))
        .collect();
    let response = app
        .post_as("alice", "/v1/decisions", &json!({"items": items}))
        .await;
    assert_eq!(
        error_code(response).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed".into())
    );
    let response = app
        .post_as("alice", "/v1/decisions", &json!({"items": []}))
        .await;
    assert_eq!(
        error_code(response).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed".into())
    );
    let response = app
        .client
        .get(format!("{}/v1/nothing-here", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(response).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert!(app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap()
        .headers()
        .contains_key("x-request-id"));
}
