//! Analytics (contract section 10), through the HTTP API and the CLI: requests of two systems
//! and kinds approved, rejected, returned and resubmitted, one decided after its step's
//! deadline, one expired, one still open; the counts, the times from a step becoming current to
//! its decision (median, p90) and the missed deadlines per system, kind, step and approver; who
//! may ask; bad input; `approval-ledger report` in every format; and a rebuild that gives the
//! same answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{eventually, expect_error, TestApp, ERP_SECRET, HR_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A two-step purchase order of the ERP: alice (due in an hour), then bob.
fn order(external_ref: &str) -> Value {
    json!({
        "external_ref": external_ref,
        "kind": "purchase_order",
        "title": format!("{external_ref}: chairs"),
        "requester": "dina",
        "steps": [
            {"approvers": ["alice"], "rule": "any", "due_in": "PT1H"},
            {"approvers": ["bob"], "rule": "any"}
        ]
    })
}

/// A one-step leave request of HR, decided by carol.
fn leave(external_ref: &str) -> Value {
    json!({
        "external_ref": external_ref,
        "kind": "leave",
        "title": format!("{external_ref}: a week off"),
        "requester": "dina",
        "steps": [{"approvers": ["carol"], "rule": "any"}]
    })
}

async fn ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn submit(app: &TestApp, system: &str, body: &Value) -> String {
    let secret = if system == "hr" {
        HR_SECRET
    } else {
        ERP_SECRET
    };
    let answer = ok(app
        .system_call(
            Method::POST,
            secret,
            &format!("/v1/systems/{system}/requests"),
            &body.to_string(),
        )
        .await)
    .await;
    answer["id"].as_str().unwrap().to_owned()
}

async fn decide(app: &TestApp, user: &str, id: &str, verdict: &str) {
    ok(app
        .decide(user, id, verdict, &json!({"comment": "see notes"}))
        .await)
    .await;
}

fn at(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// The seconds each decided step of a request's rounds took, by step index and by the person
/// who decided (a step's rule met, or its rejection or return), read from its detail.
fn step_times(
    detail: &Value,
    by_step: &mut BTreeMap<String, Vec<f64>>,
    by_person: &mut BTreeMap<String, Vec<f64>>,
) {
    let mut rounds: Vec<&Value> = detail["earlier_rounds"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    rounds.push(detail);
    for round in rounds {
        let mut current = at(&round["submitted_at"]);
        for (index, step) in round["steps"].as_array().unwrap().iter().enumerate() {
            let decisions = step["decisions"].as_array().unwrap();
            for d in decisions {
                let seconds = (at(&d["at"]) - current).num_microseconds().unwrap() as f64 / 1e6;
                by_person
                    .entry(d["by"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(seconds);
            }
            let ended = if step["completed_at"].is_string() {
                Some(at(&step["completed_at"]))
            } else {
                decisions
                    .iter()
                    .find(|d| d["decision"] != "approve")
                    .map(|d| at(&d["at"]))
            };
            let Some(ended) = ended else { break };
            let seconds = (ended - current).num_microseconds().unwrap() as f64 / 1e6;
            by_step.entry(index.to_string()).or_default().push(seconds);
            current = ended;
        }
    }
}

/// PostgreSQL's `percentile_cont(p)` of `values`.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

fn close(actual: &Value, expected: Option<f64>, what: &str) {
    match expected {
        None => assert!(actual.is_null(), "{what}: {actual} for nothing decided"),
        Some(e) => {
            let a = actual
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: {actual}"));
            assert!((a - e).abs() < 0.002, "{what}: {a} against {e}");
        }
    }
}

/// The groups of an answer by key, each as its counts in the order
/// submitted, decided, approved, rejected, returned, expired, overdue.
fn counts(answer: &Value) -> BTreeMap<String, [i64; 7]> {
    answer["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let n = |f: &str| g[f].as_i64().unwrap();
            (
                g["key"].as_str().unwrap().to_owned(),
                [
                    n("submitted"),
                    n("decided"),
                    n("approved"),
                    n("rejected"),
                    n("returned"),
                    n("expired"),
                    n("overdue"),
                ],
            )
        })
        .collect()
}

fn group<'a>(answer: &'a Value, key: &str) -> &'a Value {
    answer["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {answer}"))
}

/// Waits until the report's read model has folded every event in the store: commands do not
/// wait for it (it follows the feed a moment behind), so a test that has just decided does.
async fn settled(app: &TestApp) {
    let caught_up = eventually(WAIT, || async {
        let head: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id, global_id FROM events ORDER BY tx_id DESC, global_id DESC LIMIT 1",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        let at: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id, global_id FROM feed_checkpoints WHERE name = 'analytics'",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        match (head, at) {
            (None, _) => Some(()),
            (Some(head), Some(at)) if at >= head => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the analytics read model did not catch up"
    );
}

async fn report(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    settled(app).await;
    app.call_with(
        Method::GET,
        token,
        &format!("/v1/analytics/approvals{query}"),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_counts_outcomes_times_and_missed_deadlines_by_system_kind_step_and_approver() {
    let app = TestApp::spawn().await;
    let auditor = app.token_with("audrey", &["auditor"]);

    // ERP: approved at both steps; rejected at the second; returned, then resubmitted and
    // approved in its second round.
    let approved = submit(&app, "erp", &order("PO-A")).await;
    decide(&app, "alice", &approved, "approve").await;
    decide(&app, "bob", &approved, "approve").await;
    let rejected = submit(&app, "erp", &order("PO-B")).await;
    decide(&app, "alice", &rejected, "approve").await;
    decide(&app, "bob", &rejected, "reject").await;
    let returned = submit(&app, "erp", &order("PO-C")).await;
    decide(&app, "alice", &returned, "return").await;
    ok(app
        .system_call(
            Method::POST,
            ERP_SECRET,
            "/v1/systems/erp/requests/PO-C/resubmit",
            &order("PO-C").to_string(),
        )
        .await)
    .await;
    decide(&app, "alice", &returned, "approve").await;
    decide(&app, "bob", &returned, "approve").await;

    // HR: one decided after its step's deadline of a second; one whose step is due in a second
    // and which expires at two; one still open, with no deadline.
    let mut late = leave("LV-LATE");
    late["steps"][0]["due_in"] = json!("PT1S");
    let late = submit(&app, "hr", &late).await;
    let mut expiring = leave("LV-EXP");
    expiring["steps"][0]["due_in"] = json!("PT1S");
    expiring["due_at"] = json!((Utc::now() + chrono::Duration::seconds(2)).to_rfc3339());
    let expiring = submit(&app, "hr", &expiring).await;
    let open = submit(&app, "hr", &leave("LV-OPEN")).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    decide(&app, "carol", &late, "approve").await;
    eventually(WAIT, || async {
        (app.detail("dina", &expiring).await["status"] == "expired").then_some(())
    })
    .await
    .expect("the request expired");

    // What the details say, to check the times against.
    let mut by_step: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_person: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut by_system: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (system, id) in [
        ("erp", &approved),
        ("erp", &rejected),
        ("erp", &returned),
        ("hr", &late),
        ("hr", &expiring),
        ("hr", &open),
    ] {
        let detail = app.detail("dina", id).await;
        let mut steps = BTreeMap::new();
        step_times(&detail, &mut steps, &mut by_person);
        for (step, times) in steps {
            by_system.entry(system).or_default().extend(&times);
            by_step.entry(step).or_default().extend(times);
        }
    }

    let by = ok(report(&app, &auditor, "?group_by=system").await).await;
    let expected_erp = [4, 4, 2, 1, 1, 0, 0];
    let expected_hr = [3, 1, 1, 0, 0, 1, 2];
    assert_eq!(
        counts(&by),
        BTreeMap::from([("erp".into(), expected_erp), ("hr".into(), expected_hr)])
    );
    for system in ["erp", "hr"] {
        let times = &by_system[system];
        close(
            &group(&by, system)["median_s"],
            percentile(times, 0.5),
            system,
        );
        close(&group(&by, system)["p90_s"], percentile(times, 0.9), system);
    }
    assert_eq!(
        ok(report(&app, &auditor, "").await).await,
        by,
        "group_by defaults to system"
    );

    let by_kind = ok(report(&app, &auditor, "?group_by=kind").await).await;
    assert_eq!(
        counts(&by_kind),
        BTreeMap::from([
            ("leave".into(), expected_hr),
            ("purchase_order".into(), expected_erp)
        ])
    );
    assert_eq!(
        group(&by_kind, "leave")["median_s"],
        group(&by, "hr")["median_s"]
    );

    let steps = ok(report(&app, &auditor, "?group_by=step").await).await;
    assert_eq!(
        counts(&steps),
        BTreeMap::from([
            ("0".into(), [7, 5, 4, 0, 1, 1, 2]),
            ("1".into(), [3, 3, 2, 1, 0, 0, 0]),
        ])
    );
    for step in ["0", "1"] {
        close(
            &group(&steps, step)["median_s"],
            percentile(&by_step[step], 0.5),
            step,
        );
        close(
            &group(&steps, step)["p90_s"],
            percentile(&by_step[step], 0.9),
            step,
        );
    }

    let people = ok(report(&app, &auditor, "?group_by=approver").await).await;
    assert_eq!(
        counts(&people),
        BTreeMap::from([
            ("alice".into(), [4, 4, 3, 0, 1, 0, 0]),
            ("bob".into(), [3, 3, 2, 1, 0, 0, 0]),
            ("carol".into(), [3, 1, 1, 0, 0, 1, 2]),
        ])
    );
    for person in ["alice", "bob", "carol"] {
        close(
            &group(&people, person)["median_s"],
            percentile(&by_person[person], 0.5),
            person,
        );
        close(
            &group(&people, person)["p90_s"],
            percentile(&by_person[person], 0.9),
            person,
        );
    }

    // The window: rounds submitted in [from, to).
    let before = "2020-01-01T00:00:00Z";
    let empty = ok(report(
        &app,
        &auditor,
        &format!("?from={before}&to=2020-02-01T00:00:00Z"),
    )
    .await)
    .await;
    assert_eq!(empty, json!({"groups": []}));
    let since = ok(report(&app, &auditor, &format!("?from={before}&group_by=step")).await).await;
    assert_eq!(since, steps);
    let stamp = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let later = ok(report(&app, &auditor, &format!("?from={}", urlencode(&stamp))).await).await;
    assert_eq!(
        later,
        json!({"groups": []}),
        "nothing submitted since {stamp}"
    );

    // The CLI prints the same figures.
    let json_out = app
        .cli(&["report", "--group-by", "approver", "--format", "json"])
        .await;
    assert!(json_out.ok(), "{json_out:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&json_out.stdout).unwrap(),
        people
    );
    let csv = app
        .cli(&["report", "--group-by", "step", "--format", "csv"])
        .await;
    assert!(csv.ok(), "{csv:?}");
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "key,submitted,decided,approved,rejected,returned,expired,median_s,p90_s,overdue"
    );
    assert_eq!(lines.len(), 3, "{}", csv.stdout);
    assert!(lines[1].starts_with("0,7,5,4,0,1,1,"), "{}", csv.stdout);
    assert!(lines[2].starts_with("1,3,3,2,1,0,0,"), "{}", csv.stdout);
    let table = app.cli(&["report"]).await;
    assert!(table.ok(), "{table:?}");
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][0], "key");
    assert_eq!(rows[1][..7], ["erp", "4", "4", "2", "1", "1", "0"]);
    assert_eq!(rows[2][..7], ["hr", "3", "1", "1", "0", "0", "1"]);
    let help = app.cli(&["report", "--help"]).await;
    assert!(help.ok() && help.stdout.contains("--group-by"), "{help:?}");
    let bad = app.cli(&["report", "--from", "yesterday"]).await;
    assert!(!bad.ok() && bad.stderr.contains("RFC 3339"), "{bad:?}");

    // A rebuild gives the same answer.
    let rebuilt = app.cli(&["projections", "rebuild", "analytics"]).await;
    assert!(rebuilt.ok(), "{rebuilt:?}");
    for (query, before) in [
        ("?group_by=system", &by),
        ("?group_by=kind", &by_kind),
        ("?group_by=step", &steps),
        ("?group_by=approver", &people),
    ] {
        assert_eq!(
            &ok(report(&app, &auditor, query).await).await,
            before,
            "{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_administrators_see_analytics_and_bad_input_is_a_400() {
    let app = TestApp::spawn().await;
    submit(&app, "erp", &order("PO-R")).await;
    let admin = app.token_with("root", &["admin"]);
    let auditor = app.token_with("audrey", &["auditor"]);
    for token in [&admin, &auditor] {
        let answer = ok(report(&app, token, "").await).await;
        assert_eq!(answer["groups"][0]["key"], "erp");
        assert_eq!(answer["groups"][0]["submitted"], 1);
        assert!(answer["groups"][0]["median_s"].is_null());
    }
    expect_error(
        report(&app, &app.token("alice"), "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let anonymous = app
        .client
        .get(format!("{}/v1/analytics/approvals", app.address))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for query in [
        "?from=yesterday",
        "?to=2026-13-01T00:00:00Z",
        "?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "?group_by=team",
        "?group_by=",
        "?limit=3",
        "?from=2026-01-01%00",
    ] {
        expect_error(
            report(&app, &auditor, query).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
