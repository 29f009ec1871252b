//! The operators' console: its data routes are for administrators (401 without a token, 403
//! without the role), the overview shows readers, relay, queues, deliveries, SLA breaches and
//! the last hour, a broker that cannot be reached never makes it a 5xx, and a dead letter made
//! for real (a legacy system that keeps failing, retries exhausted) is listed and re-driven
//! through the API as `dead-letters retry` would, and in a real headless Chromium from the page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use approval_ledger::startup::Roles;
use common::browser::Browser;
use common::fake::{app_calling, Call, FakeEndpoint};
use common::{eventually, expect_error, single_step, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A legacy system that answers 503 until `healthy` is set, then 200.
async fn flaky_system(healthy: Arc<AtomicBool>) -> FakeEndpoint {
    FakeEndpoint::start(Arc::new(move |_: &Call, _| {
        if healthy.load(Ordering::SeqCst) {
            (200, None)
        } else {
            (503, None)
        }
    }))
    .await
}

/// A service whose ERP callbacks go to `legacy` and give up after two attempts.
async fn app_giving_up_early(legacy: &FakeEndpoint, fcm: &FakeEndpoint) -> TestApp {
    app_calling(
        legacy,
        fcm,
        &[("APPROVAL_LEDGER_DELIVERY__MAX_ATTEMPTS", "2")],
    )
    .await
}

/// Waits until the dead-letter list, as `token` reads it, holds one for request `id`.
async fn dead_letter_of(app: &TestApp, token: &str, id: &str) -> Value {
    eventually(WAIT, || async {
        let answer: Value = app
            .call_with(Method::GET, token, "/v1/admin/dead-letters", None)
            .await
            .json()
            .await
            .ok()?;
        answer["items"]
            .as_array()?
            .iter()
            .find(|d| d["request_id"] == id)
            .cloned()
    })
    .await
    .expect("the failing callback became a dead letter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_administrator_reads_the_console_data_and_retry_re_drives_a_dead_letter() {
    let healthy = Arc::new(AtomicBool::new(false));
    let legacy = flaky_system(healthy.clone()).await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_giving_up_early(&legacy, &fcm).await;
    let admin = app.token_with("root", &["admin"]);
    let id = app.submit_ok(&single_step("CON-1", &["alice"])).await;
    app.decide("alice", &id, "reject", &json!({"comment": "no"}))
        .await;
    // A step due in a second: an SLA breach soon after.
    let late = app
        .submit_ok(&json!({
            "external_ref": "CON-LATE", "kind": "purchase_order", "title": "CON-LATE: overdue",
            "requester": "dina", "steps": [{"approvers": ["bob"], "rule": "any", "due_in": "PT1S"}]
        }))
        .await;

    // Nobody else: 401 without a token, 403 without the role.
    for (method, path) in [
        (Method::GET, "/v1/admin/overview"),
        (Method::GET, "/v1/admin/dead-letters"),
        (Method::POST, "/v1/admin/dead-letters/1/retry"),
    ] {
        let anonymous = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let auditor = app.token_with("audrey", &["auditor"]);
        for token in [app.token("alice"), auditor] {
            expect_error(
                app.call_with(method.clone(), &token, path, None).await,
                StatusCode::FORBIDDEN,
                "forbidden",
            )
            .await;
        }
    }

    let dead = dead_letter_of(&app, &admin, &id).await;
    assert_eq!(dead["channel"], "callback");
    assert_eq!(dead["target"], "erp");
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );
    let dead_id = dead["id"].as_i64().unwrap();

    // The overview: every section, the failing system's row among the deliveries.
    let overview = eventually(WAIT, || async {
        let overview: Value = app
            .call_with(Method::GET, &admin, "/v1/admin/overview", None)
            .await
            .json()
            .await
            .ok()?;
        (overview["sla"]["overdue"] == 1).then_some(overview)
    })
    .await
    .expect("the overdue step shows");
    let readers: Vec<&str> = overview["readers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for reader in ["requests", "inbox", "audit", "relay", "sweeper"] {
        assert!(readers.contains(&reader), "{reader} in {readers:?}");
    }
    assert!(overview["feed_head"]["global_id"].as_i64().unwrap() > 0);
    assert_eq!(overview["relay"]["broker_connected"], true);
    assert_eq!(overview["relay"]["connection"], "supervised");
    let queues = overview["queues"].as_array().expect("queues counted");
    let legacy_queue = format!("{}.legacy-sync", app.broker.exchange);
    let queue = queues
        .iter()
        .find(|q| q["name"] == legacy_queue.as_str())
        .expect("the legacy-sync queue");
    assert_eq!(queue["consumers"], 1, "{queue}");
    assert_eq!(queues.len(), 5, "{queues:?}");
    let erp = overview["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == "callback" && d["system"] == "erp")
        .expect("erp's row")
        .clone();
    assert_eq!(erp["dead"], 1, "{erp}");
    assert_eq!(erp["name"], "ERP");
    assert!(erp["last_error"].as_str().unwrap().contains("503"));
    assert!(overview["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["channel"] == "callback" && d["system"] == "hr" && d["dead"] == 0));
    assert_eq!(overview["sla"]["oldest"][0]["request_id"], late.as_str());
    assert_eq!(overview["sla"]["oldest"][0]["title"], "CON-LATE: overdue");
    assert_eq!(overview["sla"]["oldest"][0]["step"], 0);
    let minutes = overview["series"]["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    assert_eq!(overview["series"]["scope"], "process");
    let appended: f64 = minutes
        .iter()
        .filter_map(|m| m["commands_per_second"].as_f64())
        .sum();
    assert!(appended > 0.0, "the submissions and the rejection count");

    // Unknown ids are 404, whatever they look like.
    for unknown in ["999999", "0", "-1", "abc", "1.5"] {
        expect_error(
            app.call_with(
                Method::POST,
                &admin,
                &format!("/v1/admin/dead-letters/{unknown}/retry"),
                None,
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }

    // The system is back; the retry re-drives the dead letter, which is then delivered.
    healthy.store(true, Ordering::SeqCst);
    let retried = app
        .call_with(
            Method::POST,
            &admin,
            &format!("/v1/admin/dead-letters/{dead_id}/retry"),
            None,
        )
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried, json!({"id": dead_id, "status": "pending"}));
    let delivered = eventually(WAIT, || async {
        let (status,): (String,) = sqlx::query_as("SELECT status FROM deliveries WHERE id = $1")
            .bind(dead_id)
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (status == "delivered").then_some(())
    })
    .await;
    assert!(delivered.is_some(), "the re-driven callback was delivered");
    let calls: Vec<Call> = legacy
        .calls()
        .into_iter()
        .filter(|c| c.body["request_id"] == id.as_str())
        .collect();
    assert_eq!(
        calls.len(),
        3,
        "two failed attempts, then the re-driven one"
    );
    assert_eq!(calls[2].body["type"], "approval.rejected");
    assert_eq!(
        calls[0].header("x-ledger-event-id"),
        calls[2].header("x-ledger-event-id")
    );
    // Gone from the list; a second retry finds nothing.
    let listed: Value = app
        .call_with(Method::GET, &admin, "/v1/admin/dead-letters", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({"items": [], "total": 0}));
    expect_error(
        app.call_with(
            Method::POST,
            &admin,
            &format!("/v1/admin/dead-letters/{dead_id}/retry"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_to_anyone_and_a_broker_out_of_reach_is_no_5xx() {
    // An API instance with no worker, pointed at a port where no RabbitMQ listens.
    let app = TestApp::spawn_with(
        Roles {
            api: true,
            worker: false,
        },
        &[(
            "APPROVAL_LEDGER_BROKER__URL",
            "amqp://guest:guest@127.0.0.1:9/%2f",
        )],
    )
    .await;
    let page = app
        .client
        .get(format!("{}/console/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<label for="token">Admin bearer token</label>"#));
    for asset in ["console.js", "console.css"] {
        let answer = app
            .client
            .get(format!("{}/console/{asset}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{asset}");
        assert!(html.contains(asset), "the page links {asset}");
    }
    let posted = app
        .client
        .post(format!("{}/console/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.headers()["allow"], "GET, HEAD");
    expect_error(posted, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let head = app
        .client
        .head(format!("{}/console/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bare = no_redirects
        .get(format!("{}/console", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()["location"], "/console/");

    let admin = app.token_with("root", &["admin"]);
    let answer = app
        .call_with(Method::GET, &admin, "/v1/admin/overview", None)
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let overview: Value = answer.json().await.unwrap();
    assert_eq!(overview["queues"], Value::Null);
    assert!(overview["queues_error"]
        .as_str()
        .unwrap()
        .contains("RabbitMQ"));
    assert_eq!(overview["relay"]["broker_connected"], false);
    assert_eq!(overview["relay"]["connection"], "probe");
    assert_eq!(overview["sla"], json!({"overdue": 0, "oldest": []}));
}

/// Answers the page's analytics call with two groups shaped as `GET /v1/analytics/approvals`'s:
/// one with every count, one with no decision times.
const ANALYTICS_STAND_IN: &str = r#"
    const real = window.fetch;
    const groups = [
        {key: "erp", submitted: 12, decided: 9, approved: 6, rejected: 2, returned: 1, expired: 0,
         median_s: 340.5, p90_s: 4000, overdue: 1},
        {key: "hr", submitted: 3, decided: 3, approved: 1, rejected: 0, returned: 1, expired: 1,
         median_s: null, p90_s: null, overdue: 0},
    ];
    window.fetch = (url, options) => String(url).startsWith("/v1/analytics/")
        ? Promise.resolve(new Response(JSON.stringify({groups}),
            {status: 200, headers: {"content-type": "application/json"}}))
        : real(url, options);
    return true;
"#;

/// Whether the page scrolls sideways.
const SIDEWAYS: &str =
    "return document.documentElement.scrollWidth > document.documentElement.clientWidth;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_an_operator_sees_a_dead_letter_and_retries_it() {
    let healthy = Arc::new(AtomicBool::new(false));
    let legacy = flaky_system(healthy.clone()).await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_giving_up_early(&legacy, &fcm).await;
    let admin = app.token_with("root", &["admin"]);
    app.register_device("alice", "console-test-device").await;
    // Some traffic for the charts, a step past its deadline, and a rejection whose callback
    // keeps failing until it is a dead letter.
    for n in 0..5 {
        let id = app
            .submit_ok(&single_step(&format!("CON-B{n}"), &["alice"]))
            .await;
        app.approve("alice", &id).await;
    }
    app.submit_ok(&json!({
        "external_ref": "CON-B-LATE", "kind": "purchase_order", "title": "CON-B-LATE: overdue",
        "requester": "dina", "steps": [{"approvers": ["bob"], "rule": "any", "due_in": "PT1S"}]
    }))
    .await;
    let id = app.submit_ok(&single_step("CON-B", &["alice"])).await;
    app.decide("alice", &id, "reject", &json!({"comment": "over budget"}))
        .await;
    let dead = dead_letter_of(&app, &admin, &id).await;
    let dead_id = dead["id"].as_i64().unwrap();

    let browser = Browser::start(1280, 3000).await.expect("chromium starts");
    browser
        .goto(&format!("{}/console", app.address))
        .await
        .unwrap();
    browser
        .find("#token")
        .await
        .unwrap()
        .type_text(&admin)
        .await
        .unwrap();
    browser.find("#show").await.unwrap().click().await.unwrap();
    let row = browser
        .find(&format!("#dead-letters tr[data-id=\"{dead_id}\"]"))
        .await
        .expect("the dead letter is listed");
    let text = row.text().await.unwrap();
    assert!(text.contains("503"), "{text}");
    assert!(text.contains(&id), "{text}");
    // Every section has its data.
    browser
        .wait_until(
            "return document.querySelectorAll('#readers tbody tr').length >= 5 \
               && document.querySelector('#chart-commands svg path') !== null \
               && document.querySelector('#queues tbody td') !== null \
               && document.querySelector('#sla tbody td code') !== null \
               && !document.querySelector('#analytics-body').textContent.includes('Loading');",
            Duration::from_secs(15),
        )
        .await
        .expect("every section is drawn");
    let analytics = browser
        .eval("return document.querySelector('#analytics-body').textContent;")
        .await
        .unwrap();
    let analytics = analytics.as_str().unwrap_or_default().to_owned();
    let drawn = browser
        .eval("return document.querySelector('#analytics-body svg') !== null;")
        .await
        .unwrap();
    // GET /v1/analytics/approvals counts the requests above: erp's outcomes are charted.
    assert_eq!(drawn, json!(true), "{analytics}");
    assert!(analytics.contains("erp"), "{analytics}");
    assert_eq!(browser.eval(SIDEWAYS).await.unwrap(), json!(false));
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    browser
        .screenshot(&shots.join("console.png"))
        .await
        .unwrap();

    // The system is back; Retry re-drives the dead letter, which leaves the list.
    healthy.store(true, Ordering::SeqCst);
    browser
        .find(&format!("button.retry[data-id=\"{dead_id}\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            &format!(
                "return document.querySelector('#dead-letters tr[data-id=\"{dead_id}\"]') === null;"
            ),
            Duration::from_secs(10),
        )
        .await
        .expect("the dead letter leaves the list");
    let message = browser
        .find("#message")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(message.contains("re-driven"), "{message}");
    let delivered = eventually(WAIT, || async {
        let (status, attempts): (String, i32) =
            sqlx::query_as("SELECT status, attempts FROM deliveries WHERE id = $1")
                .bind(dead_id)
                .fetch_one(&app.pool)
                .await
                .ok()?;
        (status == "delivered").then_some(attempts)
    })
    .await;
    assert_eq!(
        delivered,
        Some(1),
        "re-driven with fresh attempts, delivered at the first"
    );
    let rejected = legacy
        .wait_for(WAIT, |calls| {
            calls
                .iter()
                .filter(|c| c.body["request_id"] == id.as_str())
                .count()
                >= 3
        })
        .await;
    assert_eq!(
        rejected
            .iter()
            .filter(|c| c.body["request_id"] == id.as_str())
            .count(),
        3,
        "two failed attempts, then the re-driven one"
    );
    browser.quit().await.unwrap();

    // At a phone's width, the same page never scrolls sideways.
    let phone = Browser::start(390, 844).await.expect("chromium starts");
    phone
        .goto(&format!("{}/console/", app.address))
        .await
        .unwrap();
    // Here the page's analytics call is answered with two groups, one without times, so that
    // the chart and the table are drawn for every kind of entry at a phone's width.
    phone
        .eval(ANALYTICS_STAND_IN)
        .await
        .expect("fetch is stood in for");
    phone
        .find("#token")
        .await
        .unwrap()
        .type_text(&admin)
        .await
        .unwrap();
    phone.find("#show").await.unwrap().click().await.unwrap();
    phone
        .wait_until(
            "return document.querySelector('#chart-latency svg') !== null \
               && document.querySelectorAll('#deliveries tbody tr').length >= 3 \
               && document.querySelectorAll('#analytics-body svg rect').length >= 4;",
            Duration::from_secs(15),
        )
        .await
        .expect("the page is drawn at 390 px");
    let analytics = phone
        .find("#analytics-body table")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        analytics.contains("erp") && analytics.contains("6 min"),
        "{analytics}"
    );
    assert_eq!(phone.eval(SIDEWAYS).await.unwrap(), json!(false));
    phone
        .eval("document.querySelector('#analytics').scrollIntoView(); return true;")
        .await
        .unwrap();
    phone
        .screenshot(&shots.join("console-390.png"))
        .await
        .unwrap();
    phone.quit().await.unwrap();
}
