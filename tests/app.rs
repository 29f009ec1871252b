//! The approvers' web app at `/app/`: its files served from the binary with their content
//! types, `GET /app/config.json` telling the page how to sign in, the development sign-in
//! `POST /v1/dev/token` (404 unless the development secret is in use), and, in a real headless
//! Chromium at a phone's width, the page itself: sign-in, a new item appearing live, approving,
//! bulk approval, and a decision tapped offline that is sent once when the connection is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use approval_ledger::config::DEVELOPMENT_JWT_SECRET;
use approval_ledger::startup::Roles;
use common::browser::Browser;
use common::{expect_error, purchase_order, single_step, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A phone's viewport, in CSS pixels.
const WIDTH: u32 = 390;
const HEIGHT: u32 = 844;
/// How long the page may take to show what the service already did (generous: a loaded CI
/// machine runs these tests' browsers side by side).
const SHOWS: Duration = Duration::from_secs(30);

/// The extra settings of a service whose HS256 key is the development secret.
const DEV_SECRET: (&str, &str) = ("APPROVAL_LEDGER_AUTH__JWT_SECRET", DEVELOPMENT_JWT_SECRET);

async fn dev_app() -> TestApp {
    TestApp::spawn_with(Roles::ALL, &[DEV_SECRET]).await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Gives the page its network back (the real `fetch`, an `online` event) and waits until the
/// queued decision has been sent and answered.
async fn back_online(browser: &Browser) {
    browser
        .eval(
            "window.fetch = window.realFetch; window.dispatchEvent(new Event('online')); return 1",
        )
        .await
        .unwrap();
    browser
        .wait_until(
            "return document.querySelector('#decide-result').dataset.state === 'done'",
            SHOWS,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_from_the_binary_with_their_types() {
    let app = TestApp::spawn_with(
        Roles {
            api: true,
            worker: false,
        },
        &[],
    )
    .await;
    let moved = no_redirects()
        .get(format!("{}/app", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(moved.headers()["location"], "/app/");

    let page = app
        .client
        .get(format!("{}/app/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    assert!(html.contains(r#"<meta name="theme-color""#));

    // Every file the page names is served, with its type; nothing comes from elsewhere.
    let mut named: Vec<String> = html
        .split(['"', '\''])
        .filter(|s| {
            [".js", ".css", ".svg", ".png", ".webmanifest"]
                .iter()
                .any(|ext| s.ends_with(ext))
        })
        .map(str::to_owned)
        .collect();
    named.sort();
    named.dedup();
    assert_eq!(
        named,
        [
            "app.css",
            "app.js",
            "icon-192.png",
            "icon.svg",
            "manifest.webmanifest"
        ],
        "the page names only its own files, by relative paths"
    );
    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
        ("icon-192.png", "image/png"),
        ("icon-512.png", "image/png"),
        ("manifest.webmanifest", "application/manifest+json"),
    ] {
        let response = app
            .client
            .get(format!("{}/app/{file}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(response.headers()["content-type"], content_type, "{file}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = response.bytes().await.unwrap();
        if file.ends_with(".png") {
            assert_eq!(&body[1..4], b"PNG");
            continue;
        }
        // The SVG names its XML namespace, which is no fetch.
        let text = String::from_utf8(body.to_vec()).unwrap();
        let text = text.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{file} fetches nothing from elsewhere"
        );
    }

    // Installable: a manifest with a start URL in scope, a standalone display, icons and colours.
    let manifest: Value = app.get_json("/app/manifest.webmanifest").await;
    assert_eq!(manifest["start_url"], "/app/");
    assert_eq!(manifest["scope"], "/app/");
    assert_eq!(manifest["display"], "standalone");
    assert!(manifest["theme_color"].is_string());
    let icons = manifest["icons"].as_array().unwrap();
    for size in ["192x192", "512x512"] {
        assert!(
            icons
                .iter()
                .any(|i| i["sizes"] == size && i["type"] == "image/png"),
            "{size}"
        );
    }

    // The page's routes take GET (and HEAD) only; an unknown file is not there.
    let post = app
        .client
        .post(format!("{}/app/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    expect_error(post, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let head = app
        .client
        .head(format!("{}/app/app.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let missing = app
        .client
        .get(format!("{}/app/secret.txt", app.address))
        .send()
        .await
        .unwrap();
    expect_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_tells_the_page_how_to_sign_in() {
    let api = Roles {
        api: true,
        worker: false,
    };
    // A real secret and no provider: neither way (the page says that an operator must set one).
    let plain = TestApp::spawn_with(api, &[]).await;
    assert_eq!(
        plain.get_json("/app/config.json").await,
        json!({"oidc": null, "dev_sign_in": false})
    );

    let dev = TestApp::spawn_with(api, &[DEV_SECRET]).await;
    assert_eq!(
        dev.get_json("/app/config.json").await,
        json!({"oidc": null, "dev_sign_in": true})
    );

    let oidc = TestApp::spawn_with(
        api,
        &[
            (
                "APPROVAL_LEDGER_AUTH__OIDC_ISSUER",
                "http://127.0.0.1:9/realms/corp",
            ),
            ("APPROVAL_LEDGER_AUTH__OIDC_CLIENT_ID", "approvals-web"),
            (
                "APPROVAL_LEDGER_AUTH__OIDC_SCOPE",
                "openid api://ledger/approve",
            ),
            (
                "APPROVAL_LEDGER_AUTH__JWKS_URL",
                "http://127.0.0.1:9/realms/corp/keys",
            ),
        ],
    )
    .await;
    assert_eq!(
        oidc.get_json("/app/config.json").await,
        json!({"oidc": {"issuer": "http://127.0.0.1:9/realms/corp", "client_id": "approvals-web",
                        "scope": "openid api://ledger/approve"},
               "dev_sign_in": false})
    );
    // The page may call the provider (discovery, the code exchange), and nothing else.
    let page = oidc
        .client
        .get(format!("{}/app/", oidc.address))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("connect-src 'self' http://127.0.0.1:9;"),
        "{csp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_tokens_exist_only_while_the_development_secret_is_in_use() {
    let api = Roles {
        api: true,
        worker: false,
    };
    let plain = TestApp::spawn_with(api, &[]).await;
    let refused = plain
        .client
        .post(format!("{}/v1/dev/token", plain.address))
        .json(&json!({"user": "alice", "roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    expect_error(refused, StatusCode::NOT_FOUND, "not_found").await;

    let dev = TestApp::spawn_with(api, &[DEV_SECRET]).await;
    let issued = dev
        .client
        .post(format!("{}/v1/dev/token", dev.address))
        .json(&json!({"user": "alice", "roles": ["auditor", "admin", "admin"], "groups": ["finance"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), StatusCode::OK);
    assert_eq!(issued.headers()["cache-control"], "no-store");
    let issued: Value = issued.json().await.unwrap();
    let token = issued["token"].as_str().unwrap();
    let expires_at = chrono::DateTime::parse_from_rfc3339(issued["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let ttl = expires_at - chrono::Utc::now();
    assert!(ttl > chrono::Duration::hours(11) && ttl <= chrono::Duration::hours(12));
    // It is a token like `approval-ledger token`'s: the API takes it.
    let inbox = dev
        .call_with(reqwest::Method::GET, token, "/v1/inbox", None)
        .await;
    assert_eq!(inbox.status(), StatusCode::OK);
    let claims = jsonwebtoken::decode::<approval_ledger::signing::Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(DEVELOPMENT_JWT_SECRET.as_bytes()),
        &{
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            v.set_audience(&[&dev.settings.auth.audience]);
            v
        },
    )
    .unwrap()
    .claims;
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.roles, ["auditor", "admin"]);
    assert_eq!(claims.groups, ["finance"]);

    let post = |body: Value| {
        dev.client
            .post(format!("{}/v1/dev/token", dev.address))
            .json(&body)
            .send()
    };
    for (body, status, code) in [
        (
            json!({"user": "a b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"user": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"user": "x", "groups": ["g g"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"user": "x", "groups": ["g", "g"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"user": "x", "roles": ["root"]}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"user": "x", "ttl": 1}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        expect_error(post(body.clone()).await.unwrap(), status, code).await;
    }
}

fn screenshot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/screenshots/app-{name}.png"))
}

/// Fails unless the page fits the phone's width: it never scrolls sideways.
async fn fits(browser: &Browser, screen: &str) {
    let width = browser
        .eval("return document.documentElement.scrollWidth")
        .await
        .unwrap();
    assert!(
        width.as_u64().unwrap() <= u64::from(WIDTH),
        "the {screen} screen is {width} px wide: it scrolls sideways at {WIDTH} px"
    );
}

/// Fails unless every visible control has a name a screen reader says: inputs by their label.
async fn labelled(browser: &Browser, screen: &str) {
    let unnamed = browser
        .eval(
            "return [...document.querySelectorAll('input, textarea, select, button')] \
                 .filter((e) => e.offsetParent !== null) \
                 .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') \
                                && !(e.tagName === 'BUTTON' && e.textContent.trim())) \
                 .map((e) => e.outerHTML)",
        )
        .await
        .unwrap();
    assert_eq!(
        unnamed,
        json!([]),
        "unnamed controls on the {screen} screen"
    );
}

/// Opens the app and signs in with the development form as `user`, until the inbox is live.
async fn sign_in(browser: &Browser, app: &TestApp, user: &str) {
    browser
        .goto(&format!("{}/app/", app.address))
        .await
        .unwrap();
    browser
        .find("#dev-user")
        .await
        .unwrap()
        .type_text(user)
        .await
        .unwrap();
    browser
        .find("#dev-sign-in")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return !document.querySelector('#view-inbox').hidden \
                 && document.querySelector('#live').dataset.state === 'live'",
            SHOWS,
        )
        .await
        .unwrap();
}

async fn wait_for_item(browser: &Browser, id: &str) {
    browser
        .wait_until(
            &format!("return document.querySelector('#inbox-list li[data-id=\"{id}\"]') !== null"),
            SHOWS,
        )
        .await
        .unwrap();
}

/// A one-step purchase order that alice decides.
fn order_for_alice(external_ref: &str) -> Value {
    let mut order = purchase_order(external_ref);
    order["steps"] = json!([{"approvers": ["alice"], "rule": "any"}]);
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_signs_in_sees_a_new_request_arrive_and_approves_it_on_a_phone() {
    let app = dev_app().await;
    let browser = Browser::start(WIDTH, HEIGHT).await.unwrap();
    browser
        .goto(&format!("{}/app/", app.address))
        .await
        .unwrap();
    browser.find("#dev-form:not([hidden])").await.unwrap();
    fits(&browser, "sign-in").await;
    labelled(&browser, "sign-in").await;
    browser.screenshot(&screenshot("signin")).await.unwrap();
    sign_in(&browser, &app, "alice").await;
    browser
        .wait_until(
            "return !document.querySelector('#inbox-empty').hidden",
            SHOWS,
        )
        .await
        .unwrap();
    // A mark the page keeps only as long as it is not reloaded.
    browser
        .eval("window.notReloaded = true; return 1")
        .await
        .unwrap();

    // A legacy system submits: the item appears while the page is open, without a reload.
    let in_hours = |h: i64| (chrono::Utc::now() + chrono::Duration::hours(h)).to_rfc3339();
    let mut order = order_for_alice("PO-4711");
    order["due_at"] = json!(in_hours(26));
    let id = app.submit_ok(&order).await;
    wait_for_item(&browser, &id).await;
    let other = app
        .submit_ok(&json!({
            "external_ref": "HR-208", "kind": "leave", "requester": "erin",
            "title": "Leave: Erin, 22 to 24 December", "due_at": in_hours(5 * 24),
            "steps": [{"approvers": ["alice"], "rule": "any"}]
        }))
        .await;
    wait_for_item(&browser, &other).await;
    assert_eq!(
        browser
            .eval("return window.notReloaded === true")
            .await
            .unwrap(),
        true
    );
    fits(&browser, "inbox").await;
    labelled(&browser, "inbox").await;
    browser.screenshot(&screenshot("inbox")).await.unwrap();

    browser
        .find(&format!("#inbox-list li[data-id=\"{id}\"] button.open"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let title = browser
        .wait_until(
            "return !document.querySelector('#detail').hidden \
                 && document.querySelector('#detail-title').textContent",
            SHOWS,
        )
        .await
        .unwrap();
    assert_eq!(title, "PO-4711: 12 laptops");
    let steps = browser
        .find("#detail-steps")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(steps.contains("alice"), "{steps}");
    let timeline = browser
        .find("#detail-timeline")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(timeline.contains("Request submitted"), "{timeline}");
    fits(&browser, "detail").await;
    labelled(&browser, "detail").await;
    browser.screenshot(&screenshot("detail")).await.unwrap();

    browser
        .find("#approve")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = browser
        .wait_until(
            "const r = document.querySelector('#decide-result'); \
             return r.dataset.state === 'done' && r.textContent",
            SHOWS,
        )
        .await
        .unwrap();
    assert!(done.as_str().unwrap().contains("approved"), "{done}");
    assert_eq!(app.detail("alice", &id).await["status"], "approved");
    fits(&browser, "decided").await;

    // Back in the inbox only the other request waits.
    browser.find("#back").await.unwrap().click().await.unwrap();
    browser
        .wait_until(
            &format!(
                "return document.querySelectorAll('#inbox-list li').length === 1 \
                      && document.querySelector('#inbox-list li[data-id=\"{other}\"]') !== null"
            ),
            SHOWS,
        )
        .await
        .unwrap();
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_requests_are_approved_at_once_with_each_ones_result_shown() {
    let app = dev_app().await;
    let first = app.submit_ok(&order_for_alice("PO-1")).await;
    let second = app.submit_ok(&single_step("LV-2", &["alice"])).await;
    let browser = Browser::start(WIDTH, HEIGHT).await.unwrap();
    sign_in(&browser, &app, "alice").await;
    for id in [&first, &second] {
        wait_for_item(&browser, id).await;
        browser
            .find(&format!("#inbox-list li[data-id=\"{id}\"] input.select"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    assert_eq!(
        browser.find("#bulk-n").await.unwrap().text().await.unwrap(),
        "2"
    );
    fits(&browser, "bulk").await;
    browser
        .find("#bulk-approve")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return document.querySelector('#bulk-results').dataset.state === 'done' \
                 && document.querySelectorAll('#bulk-list li[data-ok=\"true\"]').length === 2",
            SHOWS,
        )
        .await
        .unwrap();
    let results = browser
        .find("#bulk-list")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(results.contains("PO-1: 12 laptops"), "{results}");
    assert!(results.contains("Leave LV-2"), "{results}");
    fits(&browser, "bulk results").await;
    browser.screenshot(&screenshot("bulk")).await.unwrap();
    for id in [&first, &second] {
        assert_eq!(app.detail("alice", id).await["status"], "approved");
    }
    browser
        .wait_until(
            "return !document.querySelector('#inbox-empty').hidden",
            SHOWS,
        )
        .await
        .unwrap();
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_whose_answer_is_lost_or_made_offline_is_queued_and_decides_once() {
    let app = dev_app().await;
    let lost = app.submit_ok(&order_for_alice("PO-LOST")).await;
    let offline = app.submit_ok(&order_for_alice("PO-OFFLINE")).await;
    let browser = Browser::start(WIDTH, HEIGHT).await.unwrap();
    sign_in(&browser, &app, "alice").await;
    let queued = "return JSON.parse(localStorage.getItem('approval-ledger.queue') || '[]')";

    // The approval reaches the service, but its answer is lost on the way back.
    let open = |id: &str| format!("{}/app/#/requests/{id}", app.address);
    let shown = |title: &str| {
        format!(
            "return !document.querySelector('#detail').hidden \
                 && document.querySelector('#detail-title').textContent === '{title}'"
        )
    };
    browser.goto(&open(&lost)).await.unwrap();
    browser
        .wait_until(&shown("PO-LOST: 12 laptops"), SHOWS)
        .await
        .unwrap();
    browser
        .eval(
            "window.realFetch = window.fetch; \
             window.fetch = (...call) => window.realFetch(...call) \
                 .then(() => { throw new TypeError('the answer was lost'); }); \
             return 1",
        )
        .await
        .unwrap();
    browser
        .find("#approve")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return document.querySelector('#decide-result').dataset.state === 'queued'",
            SHOWS,
        )
        .await
        .unwrap();
    fits(&browser, "queued").await;
    browser.screenshot(&screenshot("queued")).await.unwrap();
    let waiting = browser.eval(queued).await.unwrap();
    assert_eq!(waiting.as_array().unwrap().len(), 1, "{waiting}");
    let key = waiting[0]["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.detail("alice", &lost).await["status"],
        "approved",
        "it did arrive"
    );
    let events = app.event_count().await;

    // The connection is back: the queued tap is sent again with its key, and decides nothing more.
    back_online(&browser).await;
    assert_eq!(browser.eval(queued).await.unwrap(), json!([]));
    assert_eq!(app.event_count().await, events, "the retry wrote nothing");
    let detail = app.detail("alice", &lost).await;
    assert_eq!(detail["steps"][0]["decisions"].as_array().unwrap().len(), 1);
    let replayed = app
        .client
        .post(format!("{}/v1/requests/{lost}/approve", app.address))
        .bearer_auth(app.token("alice"))
        .header("Idempotency-Key", &key)
        .json(&waiting[0]["body"])
        .send()
        .await
        .unwrap();
    assert_eq!(
        replayed.headers()["idempotency-replayed"],
        "true",
        "the page sent the key"
    );

    // Offline: nothing leaves the page until the connection is back.
    browser.goto(&open(&offline)).await.unwrap();
    browser
        .wait_until(&shown("PO-OFFLINE: 12 laptops"), SHOWS)
        .await
        .unwrap();
    browser
        .eval(
            "window.realFetch = window.fetch; \
             window.fetch = () => Promise.reject(new TypeError('offline')); \
             return 1",
        )
        .await
        .unwrap();
    browser
        .find("#approve")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return document.querySelector('#decide-result').dataset.state === 'queued' \
                 && !document.querySelector('#detail-queued').hidden",
            SHOWS,
        )
        .await
        .unwrap();
    assert_eq!(app.detail("alice", &offline).await["status"], "pending");
    back_online(&browser).await;
    let detail = app.detail("alice", &offline).await;
    assert_eq!(detail["status"], "approved");
    assert_eq!(detail["steps"][0]["decisions"].as_array().unwrap().len(), 1);
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absence_is_recorded_listed_and_ended_from_the_app() {
    let app = dev_app().await;
    let browser = Browser::start(WIDTH, HEIGHT).await.unwrap();
    sign_in(&browser, &app, "alice").await;
    browser
        .find("#nav-absences")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find("#abs-deputy")
        .await
        .unwrap()
        .type_text("bob")
        .await
        .unwrap();
    browser
        .find("#abs-comment")
        .await
        .unwrap()
        .type_text("Conference")
        .await
        .unwrap();
    browser
        .find("#abs-save")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return document.querySelectorAll('#absence-list li').length === 1",
            SHOWS,
        )
        .await
        .unwrap();
    fits(&browser, "absences").await;
    labelled(&browser, "absences").await;
    browser.screenshot(&screenshot("absences")).await.unwrap();
    let listed: Value = app
        .get_as("alice", "/v1/me/absences")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["deputy"], "bob");
    assert_eq!(listed["items"][0]["comment"], "Conference");
    browser
        .find("#absence-list li button")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return !document.querySelector('#absence-empty').hidden",
            SHOWS,
        )
        .await
        .unwrap();
    let listed: Value = app
        .get_as("alice", "/v1/me/absences")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
    browser.quit().await.unwrap();
}

/// A source system's file server: `/quote` serves [`QUOTE`].
async fn serve_quote() -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/quote",
        listener.local_addr().unwrap().port()
    );
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().route(
            "/quote",
            actix_web::web::get().to(|| async { actix_web::HttpResponse::Ok().body(QUOTE) }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (url, handle)
}

const QUOTE: &[u8] = b"%PDF-1.4 a quote for 12 laptops";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_downloads_an_attachment_asks_and_rejects_with_a_comment() {
    use sha2::Digest as _;
    let (url, files) = serve_quote().await;
    let app = dev_app().await;
    let mut order = order_for_alice("PO-ASK");
    order["attachments"] = json!([{"name": "quote.pdf", "media_type": "application/pdf",
        "size": QUOTE.len(), "sha256": hex::encode(sha2::Sha256::digest(QUOTE)), "url": url}]);
    let id = app.submit_ok(&order).await;
    let browser = Browser::start(WIDTH, HEIGHT).await.unwrap();
    sign_in(&browser, &app, "alice").await;
    browser
        .goto(&format!("{}/app/#/requests/{id}", app.address))
        .await
        .unwrap();
    browser
        .wait_until("return !document.querySelector('#detail').hidden", SHOWS)
        .await
        .unwrap();

    // The file comes through fetch() with the bearer, whole, into a blob that is saved.
    browser
        .eval(
            "window.saved = []; const make = URL.createObjectURL; \
             URL.createObjectURL = (blob) => { window.saved.push(blob.size); return make(blob); }; \
             return 1",
        )
        .await
        .unwrap();
    let button = browser.find("#detail-attachments button").await.unwrap();
    assert!(button.text().await.unwrap().contains("quote.pdf"));
    button.click().await.unwrap();
    let saved = browser
        .wait_until("return window.saved.length === 1 && window.saved", SHOWS)
        .await
        .unwrap();
    assert_eq!(saved, json!([QUOTE.len()]));

    // Rejecting needs a comment: the page says so and sends nothing.
    let outcome = "const r = document.querySelector('#decide-result'); \
                   return ['done', 'failed'].includes(r.dataset.state) && r.dataset.state";
    browser
        .find("#reject")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.wait_until(outcome, SHOWS).await.unwrap(), "failed");
    assert_eq!(app.detail("alice", &id).await["status"], "pending");

    // Ask: the comment is the question, and the request stays pending with it open.
    let comment = browser.find("#decide-comment").await.unwrap();
    comment.type_text("Which supplier is this?").await.unwrap();
    browser.find("#ask").await.unwrap().click().await.unwrap();
    assert_eq!(browser.wait_until(outcome, SHOWS).await.unwrap(), "done");
    let detail = app.detail("alice", &id).await;
    assert_eq!(
        detail["awaiting_answer"]["question"],
        "Which supplier is this?"
    );
    browser
        .wait_until(
            "return !document.querySelector('#detail-question').hidden",
            SHOWS,
        )
        .await
        .unwrap();

    browser
        .find("#decide-comment")
        .await
        .unwrap()
        .type_text("Too expensive for this quarter")
        .await
        .unwrap();
    browser
        .find("#reject")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return document.querySelector('#decide-result').textContent.includes('rejected')",
            SHOWS,
        )
        .await
        .unwrap();
    let detail = app.detail("alice", &id).await;
    assert_eq!(detail["status"], "rejected");
    assert_eq!(
        detail["outcome"]["comment"],
        "Too expensive for this quarter"
    );
    browser
        .wait_until(
            "return document.querySelector('#decide-form').hidden",
            SHOWS,
        )
        .await
        .unwrap();
    browser.quit().await.unwrap();
    files.stop(false).await;
}

/// A fake OpenID Connect provider: discovery, an authorization endpoint that signs in `carol`
/// at once, a token endpoint that checks the PKCE verifier against the challenge, and its keys.
mod provider {
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use actix_web::{web, App, HttpResponse, HttpServer};
    use base64::Engine as _;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use p256::pkcs8::EncodePrivateKey as _;
    use serde_json::json;
    use sha2::Digest as _;

    pub const CLIENT_ID: &str = "approvals-web";
    pub const AUDIENCE: &str = "approval-api";
    const CODE: &str = "the-one-code";

    /// What the provider saw.
    #[derive(Default, Clone, Debug)]
    pub struct Seen {
        /// The authorization request's parameters.
        pub authorize: HashMap<String, String>,
        /// Whether a code exchange brought the verifier of the challenge.
        pub verified: bool,
    }

    struct Shared {
        base: String,
        key: EncodingKey,
        jwk: Jwk,
        seen: Mutex<Seen>,
    }

    pub struct Provider {
        pub base: String,
        shared: Arc<Shared>,
        handle: actix_web::dev::ServerHandle,
    }

    fn cors(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
        response.insert_header(("Access-Control-Allow-Origin", "*"));
        response
    }

    async fn discovery(shared: web::Data<Shared>) -> HttpResponse {
        let base = &shared.base;
        cors(HttpResponse::Ok()).json(json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/keys"),
            "code_challenge_methods_supported": ["S256"],
        }))
    }

    async fn authorize(
        shared: web::Data<Shared>,
        query: web::Query<HashMap<String, String>>,
    ) -> HttpResponse {
        let query = query.into_inner();
        let redirect = format!(
            "{}?code={CODE}&state={}",
            query.get("redirect_uri").cloned().unwrap_or_default(),
            query.get("state").cloned().unwrap_or_default()
        );
        shared.seen.lock().unwrap().authorize = query;
        HttpResponse::Found()
            .insert_header(("Location", redirect))
            .finish()
    }

    async fn token(
        shared: web::Data<Shared>,
        form: web::Form<HashMap<String, String>>,
    ) -> HttpResponse {
        let form = form.into_inner();
        let mut seen = shared.seen.lock().unwrap();
        let challenge = seen
            .authorize
            .get("code_challenge")
            .cloned()
            .unwrap_or_default();
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let fits = form.get("grant_type").map(String::as_str) == Some("authorization_code")
            && form.get("code").map(String::as_str) == Some(CODE)
            && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && form.get("redirect_uri") == seen.authorize.get("redirect_uri")
            && !verifier.is_empty()
            && computed == challenge;
        if !fits {
            return cors(HttpResponse::BadRequest()).json(json!({"error": "invalid_grant"}));
        }
        seen.verified = true;
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-app".into());
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(&header, &claims, &shared.key).unwrap()
        };
        let base = &shared.base;
        let access = sign(json!({"sub": "carol", "iss": base, "aud": AUDIENCE,
                                  "iat": now, "exp": now + 600}));
        let id = sign(
            json!({"sub": "carol", "iss": base, "aud": CLIENT_ID, "iat": now,
                              "exp": now + 600,
                              "nonce": seen.authorize.get("nonce").cloned().unwrap_or_default()}),
        );
        cors(HttpResponse::Ok()).json(json!({"access_token": access, "id_token": id,
                                             "token_type": "Bearer", "expires_in": 600}))
    }

    async fn keys(shared: web::Data<Shared>) -> HttpResponse {
        HttpResponse::Ok().json(JwkSet {
            keys: vec![shared.jwk.clone()],
        })
    }

    impl Provider {
        pub async fn start() -> Self {
            let private = p256::ecdsa::SigningKey::random(&mut rsa::rand_core::OsRng);
            let der = private.to_pkcs8_der().unwrap();
            let key = EncodingKey::from_ec_der(der.as_bytes());
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
            jwk.common.key_id = Some("ec-app".into());
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
            let shared = Arc::new(Shared {
                base: base.clone(),
                key,
                jwk,
                seen: Mutex::new(Seen::default()),
            });
            let data = web::Data::from(shared.clone());
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .route(
                        "/.well-known/openid-configuration",
                        web::get().to(discovery),
                    )
                    .route("/authorize", web::get().to(authorize))
                    .route("/token", web::post().to(token))
                    .route("/keys", web::get().to(keys))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            let handle = server.handle();
            tokio::spawn(server);
            Self {
                base,
                shared,
                handle,
            }
        }

        pub fn seen(&self) -> Seen {
            self.shared.seen.lock().unwrap().clone()
        }

        pub async fn stop(self) {
            self.handle.stop(false).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_at_the_openid_connect_provider_with_pkce() {
    let idp = provider::Provider::start().await;
    let keys = format!("{}/keys", idp.base);
    let app = TestApp::spawn_with(
        Roles::ALL,
        &[
            ("APPROVAL_LEDGER_AUTH__OIDC_ISSUER", idp.base.as_str()),
            ("APPROVAL_LEDGER_AUTH__OIDC_CLIENT_ID", provider::CLIENT_ID),
            ("APPROVAL_LEDGER_AUTH__JWKS_URL", keys.as_str()),
            ("APPROVAL_LEDGER_AUTH__JWKS_ISSUER", idp.base.as_str()),
            ("APPROVAL_LEDGER_AUTH__JWKS_AUDIENCE", provider::AUDIENCE),
        ],
    )
    .await;
    let browser = Browser::start(WIDTH, HEIGHT).await.unwrap();
    browser
        .goto(&format!("{}/app/", app.address))
        .await
        .unwrap();
    // No development form with a real secret: only the provider.
    browser
        .find("#oidc-sign-in:not([hidden])")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_until(
            "return !document.querySelector('#view-inbox').hidden \
                 && document.querySelector('#live').dataset.state === 'live'",
            SHOWS,
        )
        .await
        .unwrap();
    assert!(browser
        .find_all("#dev-form:not([hidden])")
        .await
        .unwrap()
        .is_empty());
    // The code is gone from the address bar; the page is who the provider said.
    assert_eq!(browser.eval("return location.search").await.unwrap(), "");
    assert_eq!(
        browser.find("#who").await.unwrap().text().await.unwrap(),
        "Signed in as carol"
    );
    let seen = idp.seen();
    assert!(
        seen.verified,
        "the code was exchanged with the PKCE verifier"
    );
    assert_eq!(seen.authorize["code_challenge_method"], "S256");
    assert_eq!(seen.authorize["response_type"], "code");
    assert_eq!(seen.authorize["client_id"], provider::CLIENT_ID);
    assert_eq!(
        seen.authorize["redirect_uri"],
        format!("{}/app/", app.address)
    );
    assert_eq!(seen.authorize["scope"], "openid profile");
    // The provider's token is the bearer: carol's inbox shows her new item live.
    let id = app.submit_ok(&single_step("LV-OIDC", &["carol"])).await;
    wait_for_item(&browser, &id).await;
    browser.quit().await.unwrap();
    idp.stop().await;
}
