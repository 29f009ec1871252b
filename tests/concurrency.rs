//! Under peak traffic two approvers tap at once: exactly one decision counts, nobody gets a 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{single_step, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_approvers_racing_on_an_any_step_give_exactly_one_decision() {
    let app = TestApp::spawn().await;
    let approvers: Vec<String> = (0..10).map(|i| format!("approver{i}")).collect();
    let names: Vec<&str> = approvers.iter().map(String::as_str).collect();
    let id = app.submit_ok(&single_step("RACE-1", &names)).await;

    let answers =
        futures_util::future::join_all(names.iter().map(|who| app.approve(who, &id))).await;
    let mut ok = 0;
    let mut conflicts = 0;
    for answer in answers {
        match answer.status() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {
                let body: Value = answer.json().await.unwrap();
                let code = body["error"]["code"].as_str().unwrap().to_owned();
                assert!(
                    code == "not_pending" || code == "version_conflict",
                    "{code}"
                );
                conflicts += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 9));
    let detail = app.detail("dina", &id).await;
    assert_eq!(detail["status"], "approved");
    assert_eq!(detail["steps"][0]["decisions"].as_array().unwrap().len(), 1);
    let (appended,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE event_type = 'ApprovalRecorded'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(appended, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racers_on_an_all_step_are_retried_on_the_server_and_all_count() {
    let app = TestApp::spawn().await;
    let approvers: Vec<String> = (0..8).map(|i| format!("member{i}")).collect();
    let names: Vec<&str> = approvers.iter().map(String::as_str).collect();
    let mut body = single_step("RACE-ALL", &names);
    body["steps"][0]["rule"] = json!("all");
    let id = app.submit_ok(&body).await;
    let answers =
        futures_util::future::join_all(names.iter().map(|who| app.approve(who, &id))).await;
    assert!(
        answers.iter().all(|a| a.status() == StatusCode::OK),
        "conflicts are retried, not shown"
    );
    let detail = app.detail("dina", &id).await;
    assert_eq!(detail["status"], "approved");
    assert_eq!(detail["steps"][0]["decisions"].as_array().unwrap().len(), 8);
}
