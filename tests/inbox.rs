//! The inbox: oldest due first, filtered by system and kind, paged with a cursor, with a total.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{single_step, TestApp, HR_SECRET};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_is_ordered_filtered_and_paged() {
    let app = TestApp::spawn().await;
    // Due times out of order, and some without one.
    let dues = [
        "2099-03-01T00:00:00Z",
        "",
        "2099-01-01T00:00:00Z",
        "2099-02-01T00:00:00Z",
        "",
    ];
    for (n, due) in dues.iter().enumerate() {
        let mut body = single_step(&format!("IN-{n}"), &["ivy"]);
        if !due.is_empty() {
            body["due_at"] = json!(due);
        }
        app.submit_ok(&body).await;
    }
    let mut hr = single_step("HR-1", &["ivy"]);
    hr["kind"] = json!("expense");
    let response = app
        .system_call(
            Method::POST,
            HR_SECRET,
            "/v1/systems/hr/requests",
            &hr.to_string(),
        )
        .await;
    assert_eq!(response.status(), 201);

    let all = app.inbox("ivy").await;
    assert_eq!(all["total"], 6);
    let dues_seen: Vec<Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["due_at"].clone())
        .collect();
    assert_eq!(dues_seen[0], "2099-01-01T00:00:00Z");
    assert_eq!(dues_seen[1], "2099-02-01T00:00:00Z");
    assert_eq!(dues_seen[2], "2099-03-01T00:00:00Z");
    assert!(
        dues_seen[3..].iter().all(Value::is_null),
        "no due time comes last"
    );

    let hr_only: Value = app
        .get_as("ivy", "/v1/inbox?system=hr")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(hr_only["total"], 1);
    assert_eq!(hr_only["items"][0]["system"], "hr");
    let expenses: Value = app
        .get_as("ivy", "/v1/inbox?kind=expense")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(expenses["total"], 1);

    // Pages of two, following the cursor, see every item once, with the same total.
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/inbox?limit=2&cursor={c}"),
            None => "/v1/inbox?limit=2".to_owned(),
        };
        let page: Value = app.get_as("ivy", &path).await.json().await.unwrap();
        assert_eq!(page["total"], 6);
        for item in page["items"].as_array().unwrap() {
            assert!(seen.insert(item["id"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (6, 3));
}
