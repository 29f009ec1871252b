//! Point-in-time replay: a request as it stood between two decisions, from `audit replay` and
//! from `GET /v1/requests/{id}/history`, which share their code; and who may see it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, SecondsFormat, Utc};
use common::{expect_error, purchase_order, TestApp};
use reqwest::StatusCode;
use serde_json::Value;

/// A purchase order approved by alice, then bob, then carol; and the moment halfway between
/// bob's decision and carol's.
async fn three_decisions(app: &TestApp) -> (String, String) {
    let id = app.submit_ok(&purchase_order("PO-R")).await;
    for who in ["alice", "bob", "carol"] {
        assert_eq!(app.approve(who, &id).await.status(), 200, "{who} approves");
    }
    let detail = app.detail("dina", &id).await;
    let recorded = |sequence: u64| -> DateTime<Utc> {
        let entry = detail["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["sequence"] == sequence)
            .unwrap();
        entry["recorded_at"].as_str().unwrap().parse().unwrap()
    };
    // bob's approval is sequence 4; carol's, which completes step 2, is 5 and 6.
    let (bob, carol) = (recorded(4), recorded(5));
    assert!(bob < carol);
    let between = bob + (carol - bob) / 2;
    (id, between.to_rfc3339_opts(SecondsFormat::Micros, true))
}

async fn history(
    app: &TestApp,
    user: &str,
    roles: &[&str],
    id: &str,
    query: &[(&str, &str)],
) -> reqwest::Response {
    app.client
        .get(format!("{}/v1/requests/{id}/history", app.address))
        .bearer_auth(app.token_with(user, roles))
        .query(query)
        .send()
        .await
        .unwrap()
}

/// The request between bob's and carol's decisions.
fn assert_between(state: &Value) {
    assert_eq!(state["status"], "pending");
    assert_eq!(state["version"], 4);
    assert_eq!(state["current_step"], 1);
    assert_eq!(state["awaiting"], serde_json::json!(["carol", "dave"]));
    let step = &state["steps"][1];
    assert_eq!(step["state"], "active");
    let deciders: Vec<&str> = step["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["by"].as_str().unwrap())
        .collect();
    assert_eq!(deciders, ["bob"]);
    assert_eq!(step["decisions"][0]["seen_version"], 3);
    assert_eq!(state["timeline"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_replays_a_request_to_a_moment_between_two_decisions() {
    let app = TestApp::spawn().await;
    let (id, between) = three_decisions(&app).await;

    let json = app
        .cli(&["audit", "replay", &id, "--at", &between, "--json"])
        .await;
    assert!(json.ok(), "{json:?}");
    let state: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_between(&state);
    assert_eq!(state["as_of"], between.as_str());

    let text = app.cli(&["audit", "replay", &id, "--at", &between]).await;
    assert!(text.ok(), "{text:?}");
    assert!(
        text.stdout.contains("pending at version 4"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("approve by bob"), "{}", text.stdout);
    assert!(!text.stdout.contains("approve by carol"), "{}", text.stdout);
    assert!(
        text.stdout.contains("awaiting carol, dave"),
        "{}",
        text.stdout
    );

    let by_version = app
        .cli(&["audit", "replay", &id, "--version", "2", "--json"])
        .await;
    let state: Value = serde_json::from_str(&by_version.stdout).unwrap();
    assert_eq!(state["version"], 2);

    let now = app.cli(&["audit", "replay", &id, "--json"]).await;
    let state: Value = serde_json::from_str(&now.stdout).unwrap();
    assert_eq!(state["version"], 6);

    let before = app
        .cli(&["audit", "replay", &id, "--at", "2000-01-01T00:00:00Z"])
        .await;
    assert_eq!(before.code, Some(1));
    assert!(
        before.stderr.contains("not been submitted yet"),
        "{before:?}"
    );
    let unknown = app
        .cli(&["audit", "replay", "00000000-0000-0000-0000-000000000001"])
        .await;
    assert_eq!(unknown.code, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_replays_the_same_moment_for_participants_and_auditors_only() {
    let app = TestApp::spawn().await;
    let (id, between) = three_decisions(&app).await;
    let at = [("at", between.as_str())];

    let answer = history(&app, "dina", &[], &id, &at).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let state: Value = answer.json().await.unwrap();
    assert_between(&state);

    // The CLI prints exactly what the API answers.
    let cli = app
        .cli(&["audit", "replay", &id, "--at", &between, "--json"])
        .await;
    assert_eq!(serde_json::from_str::<Value>(&cli.stdout).unwrap(), state);

    for approver in ["alice", "erin"] {
        assert_eq!(history(&app, approver, &[], &id, &at).await.status(), 200);
    }
    assert_eq!(
        history(&app, "auditor-1", &["auditor"], &id, &at)
            .await
            .status(),
        200
    );
    let stranger = history(&app, "mallory", &[], &id, &at).await;
    expect_error(stranger, StatusCode::NOT_FOUND, "not_found").await;

    let before = history(&app, "dina", &[], &id, &[("at", "2000-01-01T00:00:00Z")]).await;
    assert_eq!(before.status(), StatusCode::NOT_FOUND);
    // Both: whichever cut comes first (the moment holds version 4).
    for (version, expected) in [("2", 2), ("6", 4)] {
        let both = history(
            &app,
            "dina",
            &[],
            &id,
            &[("at", between.as_str()), ("version", version)],
        )
        .await;
        assert_eq!(both.status(), StatusCode::OK);
        let state: Value = both.json().await.unwrap();
        assert_eq!(state["version"], expected, "at and version {version}");
    }
    let garbled = history(&app, "dina", &[], &id, &[("at", "yesterday")]).await;
    assert_eq!(garbled.status(), StatusCode::BAD_REQUEST);
    let by_version = history(&app, "dina", &[], &id, &[("version", "1")]).await;
    let state: Value = by_version.json().await.unwrap();
    assert_eq!(state["version"], 1);
    assert_eq!(state["status"], "pending");
    let latest: Value = history(&app, "dina", &[], &id, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(latest["version"], 6);
}
