//! The contract's three-step purchase order, from submission to approval, as the legacy system
//! and the approvers' phones see it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{purchase_order, TestApp, ERP_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_order_walks_through_three_steps_to_approval() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-4711")).await;

    // Step 1: only alice sees it.
    let inbox = app.inbox("alice").await;
    assert_eq!(inbox["total"], 1);
    assert_eq!(inbox["items"][0]["id"], id.as_str());
    assert_eq!(
        inbox["items"][0]["amount"],
        json!({"value": "1250.00", "currency": "USD"})
    );
    assert_eq!(inbox["items"][0]["step"], 0);
    assert_eq!(app.inbox("bob").await["total"], 0);
    assert_eq!(
        app.inbox("dina").await["total"],
        0,
        "a requester is never an approver"
    );

    let answer: Value = app.approve("alice", &id).await.json().await.unwrap();
    assert_eq!(answer["status"], "pending");
    assert_eq!(
        answer["version"], 3,
        "submitted, approval recorded, step completed"
    );
    // Read-your-writes: the caller's inbox is already empty, the next step's are filled.
    assert_eq!(app.inbox("alice").await["total"], 0);
    for who in ["bob", "carol", "dave"] {
        assert_eq!(app.inbox(who).await["total"], 1, "{who} awaits step 2");
    }

    // Step 2: two of three.
    assert_eq!(app.approve("bob", &id).await.status(), StatusCode::OK);
    assert_eq!(app.inbox("bob").await["total"], 0, "bob decided");
    assert_eq!(app.inbox("carol").await["total"], 1, "carol still may");
    assert_eq!(app.approve("carol", &id).await.status(), StatusCode::OK);
    assert_eq!(
        app.inbox("dave").await["total"],
        0,
        "the step is complete without dave"
    );

    // Step 3: both.
    assert_eq!(app.approve("erin", &id).await.status(), StatusCode::OK);
    let detail = app.detail("dina", &id).await;
    assert_eq!(detail["status"], "pending");
    assert_eq!(detail["awaiting"], json!(["frank"]));
    let last: Value = app.approve("frank", &id).await.json().await.unwrap();
    assert_eq!(last["status"], "approved");
    assert_eq!(last["version"], 10);

    let detail = app.detail("dina", &id).await;
    assert_eq!(detail["status"], "approved");
    assert_eq!(detail["version"], 10);
    assert_eq!(detail["awaiting"], json!([]));
    assert_eq!(detail["details"], json!({"any": "JSON shown to approvers"}));
    assert_eq!(detail["link"], "https://erp.example/po/4711");
    let states: Vec<&str> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["completed", "completed", "completed"]);
    let decided: Vec<&str> = detail["steps"][1]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["by"].as_str().unwrap())
        .collect();
    assert_eq!(decided, ["bob", "carol"]);
    let types: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "RequestSubmitted",
            "ApprovalRecorded",
            "StepCompleted",
            "ApprovalRecorded",
            "ApprovalRecorded",
            "StepCompleted",
            "ApprovalRecorded",
            "ApprovalRecorded",
            "StepCompleted",
            "RequestApproved"
        ]
    );
    assert_eq!(detail["outcome"]["by"], "frank");

    // The legacy system reconciles.
    let status = app
        .system_call(
            Method::GET,
            ERP_SECRET,
            "/v1/systems/erp/requests/PO-4711",
            "",
        )
        .await;
    assert_eq!(status.status(), StatusCode::OK);
    let status: Value = status.json().await.unwrap();
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["status"], "approved");
    assert_eq!(status["version"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_ends_the_request_and_empties_every_inbox() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-1")).await;
    app.approve("alice", &id).await;
    let rejected: Value = app
        .decide("carol", &id, "reject", &json!({"comment": "over budget"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["status"], "rejected");
    for who in ["bob", "carol", "dave"] {
        assert_eq!(app.inbox(who).await["total"], 0);
    }
    let detail = app.detail("alice", &id).await;
    assert_eq!(detail["outcome"]["comment"], "over budget");
    assert_eq!(detail["steps"][2]["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_withdraw_cancel_and_delegate_do_what_they_say() {
    let app = TestApp::spawn().await;

    let returned = app.submit_ok(&purchase_order("PO-R")).await;
    let body: Value = app
        .decide(
            "alice",
            &returned,
            "return",
            &json!({"comment": "attach the quote"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "returned");

    let withdrawn = app.submit_ok(&purchase_order("PO-W")).await;
    let body: Value = app
        .post_as(
            "dina",
            &format!("/v1/requests/{withdrawn}/withdraw"),
            &json!({"comment": "not needed"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "withdrawn");

    let cancelled = app.submit_ok(&purchase_order("PO-C")).await;
    let response = app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests/PO-C/cancel",
            r#"{"reason":"PO deleted"}"#,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], cancelled.as_str());
    assert_eq!(body["status"], "cancelled");
    assert_eq!(
        app.inbox("alice").await["total"],
        0,
        "nothing final stays in an inbox"
    );

    let delegated = app.submit_ok(&purchase_order("PO-D")).await;
    let response = app
        .post_as(
            "alice",
            &format!("/v1/requests/{delegated}/delegate"),
            &json!({"to": "zoe", "comment": "on leave"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.inbox("alice").await["total"], 0);
    let zoe = app.inbox("zoe").await;
    assert_eq!(zoe["total"], 1, "the delegate's inbox holds the request");
    assert_eq!(zoe["items"][0]["id"], delegated.as_str());
    assert_eq!(
        app.approve("zoe", &delegated).await.status(),
        StatusCode::OK
    );
    // alice delegated, so she still sees the request she was part of.
    let detail = app.detail("alice", &delegated).await;
    assert_eq!(detail["steps"][0]["delegations"][0]["to"], "zoe");
    assert_eq!(detail["steps"][0]["state"], "completed");
}
