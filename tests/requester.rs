//! Working with the requester (contract section 8), through the HTTP API: questions and answers
//! with their callbacks and pushes, comments, resubmission in rounds, attachments streamed from
//! the source system, and the caller's own lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use approval_ledger::signing::verifies;
use common::fake::{app_calling, FakeEndpoint};
use common::{
    eventually, expect_error, purchase_order, single_step, TestApp, ERP_SECRET, HR_SECRET,
};
use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(20);

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn system_post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.system_call(Method::POST, ERP_SECRET, path, &body.to_string())
        .await
}

fn timeline_types(detail: &Value) -> Vec<String> {
    detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_owned())
        .collect()
}

// --- questions and answers ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_asks_the_requester_answers_and_the_system_answers_signed() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_calling(&legacy, &fcm, &[]).await;
    app.register_device("dina", "dina-phone").await;
    app.register_device("alice", "alice-phone").await;
    let id = app.submit_ok(&purchase_order("PO-ASK")).await;
    let ask = |who: &'static str, question: &'static str| {
        let path = format!("/v1/requests/{id}/ask");
        let app = &app;
        async move {
            app.post_as(who, &path, &json!({"question": question}))
                .await
        }
    };

    // bob decides step 1, not the current step; mallory is nobody here.
    expect_error(
        ask("bob", "Why?").await,
        StatusCode::FORBIDDEN,
        "not_an_approver",
    )
    .await;
    expect_error(
        ask("mallory", "Why?").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let asked = ok_json(ask("alice", "Which supplier?").await).await;
    assert_eq!(asked["status"], "pending");
    assert_eq!(asked["version"], 2);
    expect_error(
        ask("alice", "And?").await,
        StatusCode::CONFLICT,
        "question_open",
    )
    .await;

    let detail = app.detail("dina", &id).await;
    assert_eq!(detail["awaiting_answer"]["question"], "Which supplier?");
    assert_eq!(detail["awaiting_answer"]["asked_by"], "alice");
    assert!(detail["awaiting_answer"]["asked_at"].is_string());
    assert_eq!(detail["round"], 1);

    // Only the requester answers in the app; decisions stay possible meanwhile.
    let answer = format!("/v1/requests/{id}/answer");
    expect_error(
        app.post_as("alice", &answer, &json!({"answer": "me?"}))
            .await,
        StatusCode::FORBIDDEN,
        "not_requester",
    )
    .await;
    let answered = ok_json(
        app.post_as("dina", &answer, &json!({"answer": "Acme"}))
            .await,
    )
    .await;
    assert_eq!(answered["version"], 3);
    expect_error(
        app.post_as("dina", &answer, &json!({"answer": "again"}))
            .await,
        StatusCode::CONFLICT,
        "no_open_question",
    )
    .await;
    let detail = app.detail("alice", &id).await;
    assert!(detail["awaiting_answer"].is_null());

    // A second question, answered by the source system for dina, signed; then a return.
    ok_json(ask("alice", "Which cost center?").await).await;
    let system_answer = "/v1/systems/erp/requests/PO-ASK/answer";
    let unsigned = app
        .client
        .post(format!("{}{system_answer}", app.address))
        .json(&json!({"answer": "4100", "by": "dina"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let by_hr = app
        .system_call(
            Method::POST,
            HR_SECRET,
            "/v1/systems/hr/requests/PO-ASK/answer",
            &json!({"answer": "4100", "by": "dina"}).to_string(),
        )
        .await;
    expect_error(by_hr, StatusCode::NOT_FOUND, "not_found").await;
    let answered = ok_json(
        system_post(
            &app,
            system_answer,
            &json!({"answer": "4100", "by": "dina"}),
        )
        .await,
    )
    .await;
    assert_eq!(answered["version"], 5);
    app.decide("alice", &id, "return", &json!({"comment": "wrong quote"}))
        .await;

    let detail = app.detail("dina", &id).await;
    assert_eq!(
        timeline_types(&detail),
        [
            "RequestSubmitted",
            "InfoRequested",
            "InfoProvided",
            "InfoRequested",
            "InfoProvided",
            "RequestReturned"
        ]
    );
    assert_eq!(detail["timeline"][1]["actor"], "alice");
    assert_eq!(detail["timeline"][1]["comment"], "Which supplier?");
    assert_eq!(detail["timeline"][2]["actor"], "dina");

    // The callbacks: each question, then the return, in order, each signed.
    let calls = legacy
        .wait_for(WAIT, |calls| {
            calls.iter().any(|c| c.body["type"] == "approval.returned")
        })
        .await;
    let types: Vec<&str> = calls
        .iter()
        .map(|c| c.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "approval.info_requested",
            "approval.info_requested",
            "approval.returned"
        ]
    );
    for call in &calls {
        let ts: i64 = call.header("x-ledger-timestamp").unwrap().parse().unwrap();
        let signature = call.header("x-ledger-signature").unwrap();
        assert!(verifies(ERP_SECRET, ts, call.raw.as_bytes(), signature));
    }
    assert_eq!(calls[0].body["question"], "Which supplier?");
    assert_eq!(calls[0].body["asked_by"], "alice");
    assert_eq!(calls[0].body["status"], "pending");
    assert_eq!(calls[0].body["version"], 2);

    // Pushes: dina hears of each question, alice of each answer.
    let pushes = fcm
        .wait_for(WAIT, |calls| {
            let titles: Vec<String> = calls
                .iter()
                .map(|c| c.body["message"]["notification"]["title"].to_string())
                .collect();
            titles.iter().filter(|t| t.contains("Answer from")).count() == 2
                && titles
                    .iter()
                    .filter(|t| t.contains("Question from"))
                    .count()
                    == 2
        })
        .await;
    let to = |token: &str, needle: &str| {
        pushes
            .iter()
            .filter(|c| {
                c.body["message"]["token"] == token
                    && c.body["message"]["notification"]["title"]
                        .as_str()
                        .is_some_and(|t| t.contains(needle))
            })
            .count()
    };
    assert_eq!(to("dina-phone", "Question from alice"), 2);
    assert_eq!(to("alice-phone", "Answer from dina"), 2);
}

// --- comments ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_comment_and_a_stranger_cannot_see_the_request() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-COMMENT")).await;
    let path = format!("/v1/requests/{id}/comments");
    for who in ["dina", "bob"] {
        ok_json(
            app.post_as(who, &path, &json!({"text": format!("note by {who}")}))
                .await,
        )
        .await;
    }
    expect_error(
        app.post_as("mallory", &path, &json!({"text": "hi"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let auditor = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(app.token_with("audrey", &["auditor"]))
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    expect_error(auditor, StatusCode::FORBIDDEN, "not_a_participant").await;
    expect_error(
        app.post_as("dina", &path, &json!({"text": "  "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let detail = app.detail("alice", &id).await;
    let comments: Vec<(&str, &str)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "CommentAdded")
        .map(|t| (t["actor"].as_str().unwrap(), t["comment"].as_str().unwrap()))
        .collect();
    assert_eq!(comments, [("dina", "note by dina"), ("bob", "note by bob")]);
}

// --- resubmission ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_request_is_resubmitted_in_a_new_round_with_its_history_kept() {
    let legacy = FakeEndpoint::ok().await;
    let fcm = FakeEndpoint::ok().await;
    let app = app_calling(&legacy, &fcm, &[]).await;
    let mut body = single_step("PO-ROUND", &["alice"]);
    body["steps"][0]["due_in"] = json!("PT8H");
    let id = app.submit_ok(&body).await;
    let resubmit = "/v1/systems/erp/requests/PO-ROUND/resubmit";

    // Pending: nothing to resubmit.
    expect_error(
        system_post(&app, resubmit, &body).await,
        StatusCode::CONFLICT,
        "not_returned",
    )
    .await;
    let returned = app
        .decide(
            "alice",
            &id,
            "return",
            &json!({"comment": "attach the quote"}),
        )
        .await;
    assert_eq!(returned.status(), StatusCode::OK);
    let (timers,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM rm_timers WHERE request_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(timers, 0, "a returned request sets no timers");

    // Another reference in the body, or another requester, is refused.
    let mut other = body.clone();
    other["external_ref"] = json!("PO-OTHER");
    expect_error(
        system_post(&app, resubmit, &other).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let mut round_two = body.clone();
    round_two["title"] = json!("Leave PO-ROUND, with the quote");
    let answer = ok_json(system_post(&app, resubmit, &round_two).await).await;
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(answer["status"], "pending");
    assert_eq!(answer["round"], 2);
    assert_eq!(answer["version"], 3);

    // A second resubmission while pending again is refused.
    expect_error(
        system_post(&app, resubmit, &round_two).await,
        StatusCode::CONFLICT,
        "not_returned",
    )
    .await;
    // The same submission again still writes nothing.
    let before = app.event_count().await;
    assert_eq!(app.submit(&body).await.status(), StatusCode::OK);
    assert_eq!(app.event_count().await, before);

    let detail = app.detail("alice", &id).await;
    assert_eq!(detail["round"], 2);
    assert_eq!(detail["status"], "pending");
    assert_eq!(detail["title"], "Leave PO-ROUND, with the quote");
    assert_eq!(detail["steps"][0]["state"], "active");
    assert!(detail["steps"][0]["decisions"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(detail["steps"][0]["due_at"].is_string());
    let first = &detail["earlier_rounds"][0];
    assert_eq!(first["round"], 1);
    assert_eq!(first["steps"][0]["decisions"][0]["decision"], "return");
    assert_eq!(first["steps"][0]["state"], "closed");
    assert_eq!(first["outcome"]["by"], "alice");
    assert_eq!(
        timeline_types(&detail),
        ["RequestSubmitted", "RequestReturned", "RequestResubmitted"]
    );

    // Every read model follows the new round: inbox, timers, lookup.
    let inbox = app.inbox("alice").await;
    assert_eq!(inbox["items"][0]["id"], id.as_str());
    let timers = eventually(WAIT, || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM rm_timers WHERE request_id = $1::uuid")
                .bind(&id)
                .fetch_one(&app.pool)
                .await
                .ok()?;
        (n > 0).then_some(n)
    })
    .await;
    assert!(timers.is_some(), "the new round's deadline sets its timers");
    let status = ok_json(
        app.system_call(
            Method::GET,
            ERP_SECRET,
            "/v1/systems/erp/requests/PO-ROUND",
            "",
        )
        .await,
    )
    .await;
    assert_eq!(status["status"], "pending");
    assert_eq!(status["version"], 3);

    // Round two is decided as any round is.
    let approved = app.approve("alice", &id).await;
    assert_eq!(ok_json(approved).await["status"], "approved");

    // The callbacks: returned, resubmitted (pending, round 2), approved, in order.
    let calls = legacy
        .wait_for(WAIT, |calls| {
            calls.iter().any(|c| c.body["type"] == "approval.approved")
        })
        .await;
    let types: Vec<&str> = calls
        .iter()
        .map(|c| c.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "approval.returned",
            "approval.resubmitted",
            "approval.approved"
        ]
    );
    assert_eq!(calls[1].body["status"], "pending");
    assert_eq!(calls[1].body["round"], 2);

    // The audit: replay shows both rounds, at any version; verify holds.
    let replay = app.cli(&["audit", "replay", &id]).await;
    assert!(replay.ok(), "{replay:?}");
    assert!(replay.stdout.contains("round 2"), "{}", replay.stdout);
    assert!(replay.stdout.contains("Round 1"), "{}", replay.stdout);
    assert!(
        replay.stdout.contains("return by alice"),
        "{}",
        replay.stdout
    );
    let at_two = app
        .cli(&["audit", "replay", &id, "--version", "2", "--json"])
        .await;
    let state: Value = serde_json::from_str(&at_two.stdout).unwrap();
    assert_eq!(state["status"], "returned");
    assert_eq!(state["round"], 1);
    let verify = app.cli(&["audit", "verify", &id]).await;
    assert!(verify.ok(), "{verify:?}");
}

// --- attachments -------------------------------------------------------------------------

/// The bytes of the test file: 300 KiB, so it crosses several pieces on its way.
fn file_bytes() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i * 31 % 251) as u8).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A source system's file server: `/good` serves the file, `/tampered` the same size with one
/// byte changed, `/longer` more bytes than described (with no length announced), `/missing`
/// a 404. It records the headers of every call.
/// Each call's path, `X-Ledger-Timestamp` and `X-Ledger-Signature`.
type Seen = Mutex<Vec<(String, Option<String>, Option<String>)>>;

struct Files {
    url: String,
    headers: Arc<Seen>,
    _handle: actix_web::dev::ServerHandle,
}

async fn serve_file(req: HttpRequest, seen: web::Data<Seen>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    seen.lock().unwrap().push((
        req.path().to_owned(),
        header("x-ledger-timestamp"),
        header("x-ledger-signature"),
    ));
    let mut bytes = file_bytes();
    match req.path() {
        "/good" => HttpResponse::Ok().body(bytes),
        "/tampered" => {
            bytes[1000] ^= 0xff;
            HttpResponse::Ok().body(bytes)
        }
        "/longer" => {
            bytes.extend_from_slice(b"and a little more");
            let pieces: Vec<Result<web::Bytes, actix_web::Error>> = bytes
                .chunks(64 * 1024)
                .map(|c| Ok(web::Bytes::copy_from_slice(c)))
                .collect();
            HttpResponse::Ok().streaming(futures_util::stream::iter(pieces))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            HttpResponse::Ok().body(bytes)
        }
        "/stall" => {
            // Half the file, then silence past the service's idle timeout.
            let half = web::Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
            let pieces = futures_util::stream::once(async move { Ok::<_, actix_web::Error>(half) })
                .chain(futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<_, actix_web::Error>(web::Bytes::new())
                }));
            HttpResponse::Ok()
                .no_chunking(file_bytes().len() as u64)
                .streaming(pieces)
        }
        _ => HttpResponse::NotFound().finish(),
    }
}

impl Files {
    async fn start() -> Self {
        let headers = Arc::new(Mutex::new(Vec::new()));
        let data = web::Data::from(headers.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(serve_file))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            headers,
            _handle: handle,
        }
    }
}

fn attachment(url: String, size: usize, sha256: &str) -> Value {
    json!({"name": "quote 4711.pdf", "media_type": "application/pdf", "size": size,
           "sha256": sha256, "url": url})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_stream_from_the_source_checked_and_signed() {
    let files = Files::start().await;
    let app = TestApp::spawn_with(
        approval_ledger::startup::Roles::ALL,
        &[("APPROVAL_LEDGER_ATTACHMENTS__IDLE_TIMEOUT_MS", "700")],
    )
    .await;
    let bytes = file_bytes();
    let hash = sha256_hex(&bytes);
    let mut body = purchase_order("PO-FILES");
    body["attachments"] = json!([
        attachment(format!("{}/good", files.url), bytes.len(), &hash),
        attachment(format!("{}/tampered", files.url), bytes.len(), &hash),
        attachment(format!("{}/longer", files.url), bytes.len(), &hash),
        attachment(format!("{}/missing", files.url), bytes.len(), &hash),
        attachment("http://127.0.0.1:9/refused".into(), bytes.len(), &hash),
        attachment(format!("{}/slow", files.url), bytes.len(), &hash),
        attachment(format!("{}/stall", files.url), bytes.len(), &hash),
    ]);
    let id = app.submit_ok(&body).await;
    let detail = app.detail("alice", &id).await;
    assert_eq!(detail["attachments"].as_array().unwrap().len(), 7);
    assert_eq!(detail["attachments"][0]["sha256"], hash.as_str());
    let href = detail["attachments"][0]["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(href, format!("/v1/requests/{id}/attachments/0"));

    // The good one: every byte, the described hash, the media type.
    let good = app.get_as("alice", &href).await;
    assert_eq!(good.status(), StatusCode::OK);
    assert_eq!(good.headers()["content-type"], "application/pdf");
    assert_eq!(
        good.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    let got = good.bytes().await.unwrap();
    assert_eq!(got.len(), bytes.len());
    assert_eq!(sha256_hex(&got), hash);
    // The source got a signed GET with an empty body.
    let (path, ts, signature) = files.headers.lock().unwrap()[0].clone();
    assert_eq!(path, "/good");
    let ts: i64 = ts.unwrap().parse().unwrap();
    assert!(verifies(ERP_SECRET, ts, b"", &signature.unwrap()));

    // Tampered, too long, or stalled midway: the download breaks off, never ends cleanly.
    for index in [1, 2, 6] {
        let response = app
            .get_as("dina", &format!("/v1/requests/{id}/attachments/{index}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "headers go out first");
        let body = response.bytes().await;
        assert!(
            body.is_err(),
            "attachment {index} must not download cleanly"
        );
    }

    // Missing at the source, the source unreachable, or silent before its answer: 502.
    for index in [3, 4, 5] {
        expect_error(
            app.get_as("alice", &format!("/v1/requests/{id}/attachments/{index}"))
                .await,
            StatusCode::BAD_GATEWAY,
            "attachment_unavailable",
        )
        .await;
    }
    // A stranger, or an index that is not there: 404.
    expect_error(
        app.get_as("mallory", &href).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get_as("alice", &format!("/v1/requests/{id}/attachments/7"))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let auditor = app
        .client
        .get(format!("{}{href}", app.address))
        .bearer_auth(app.token_with("audrey", &["auditor"]))
        .send()
        .await
        .unwrap();
    assert_eq!(auditor.status(), StatusCode::OK);
    assert_eq!(auditor.bytes().await.unwrap().len(), bytes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_beyond_the_configured_limits_are_refused() {
    let app = TestApp::spawn_with(
        approval_ledger::startup::Roles::ALL,
        &[
            ("APPROVAL_LEDGER_ATTACHMENTS__MAX_COUNT", "2"),
            ("APPROVAL_LEDGER_ATTACHMENTS__MAX_BYTES", "1000"),
        ],
    )
    .await;
    let hash = "0".repeat(64);
    let one = attachment("https://erp.example/f".into(), 10, &hash);
    let mut body = purchase_order("PO-LIMITS");
    body["attachments"] = json!([one, one, one]);
    expect_error(
        app.submit(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    body["attachments"] = json!([attachment("https://erp.example/f".into(), 1001, &hash)]);
    expect_error(
        app.submit(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    body["attachments"] = json!([attachment("https://erp.example/f".into(), 10, "ABC")]);
    expect_error(
        app.submit(&body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    body["attachments"] = json!([attachment("https://erp.example/f".into(), 1000, &hash)]);
    assert_eq!(app.submit(&body).await.status(), StatusCode::CREATED);
}

// --- lists -------------------------------------------------------------------------------

async fn list(app: &TestApp, user: &str, query: &str) -> Value {
    ok_json(app.get_as(user, &format!("/v1/requests?{query}")).await).await
}

/// Every item of a list, page by page, `limit` at a time.
async fn all_pages(app: &TestApp, user: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut items = vec![];
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let q = match &cursor {
            Some(c) => format!("{query}&limit={limit}&cursor={c}"),
            None => format!("{query}&limit={limit}"),
        };
        let page = list(app, user, &q).await;
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
    panic!("the pages never ended");
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_lists_page_newest_first_and_filter_and_search() {
    let app = TestApp::spawn().await;
    let mut submitted = vec![];
    for n in 0..7 {
        let mut body = single_step(&format!("REF-{n}"), &["alice"]);
        body["title"] = json!(if n % 2 == 0 {
            format!("Laptops for team {n}")
        } else {
            format!("Chairs {n}")
        });
        submitted.push(app.submit_ok(&body).await);
    }
    // Someone else's request, which alice also decides.
    let mut erin = single_step("REF-ERIN", &["alice"]);
    erin["requester"] = json!("erin");
    let erins = app.submit_ok(&erin).await;
    for id in [&submitted[1], &submitted[4], &erins] {
        assert_eq!(app.approve("alice", id).await.status(), StatusCode::OK);
    }
    app.decide("alice", &submitted[2], "reject", &json!({"comment": "no"}))
        .await;

    // dina's: all seven, newest first, across pages of 3 without a repeat or a gap.
    let mine = all_pages(&app, "dina", "role=requester", 3).await;
    let mut newest_first = submitted.clone();
    newest_first.reverse();
    assert_eq!(ids(&mine), newest_first);
    assert_eq!(mine[0]["requester"], "dina");
    assert_eq!(mine[0]["round"], 1);
    assert!(mine[0]["external_ref"].is_string() && mine[0]["submitted_at"].is_string());

    let approved = list(&app, "dina", "role=requester&status=approved").await;
    assert_eq!(
        ids(approved["items"].as_array().unwrap()),
        [submitted[4].clone(), submitted[1].clone()]
    );
    // The search: title in any case, the reference, the requester.
    let laptops = all_pages(&app, "dina", "role=requester&q=LAPTOP", 2).await;
    assert_eq!(
        ids(&laptops),
        [&submitted[6], &submitted[4], &submitted[2], &submitted[0]].map(|s| s.clone())
    );
    let by_ref = list(&app, "dina", "role=requester&q=ref-3").await;
    assert_eq!(
        ids(by_ref["items"].as_array().unwrap()),
        [submitted[3].clone()]
    );
    let wildcard = list(&app, "dina", "role=requester&q=%25").await;
    assert!(
        wildcard["items"].as_array().unwrap().is_empty(),
        "% is no wildcard"
    );
    assert_eq!(
        all_pages(&app, "dina", "role=requester&q=dina", 5)
            .await
            .len(),
        7
    );

    // alice's decisions, latest first, with the moment she decided.
    let decided = all_pages(&app, "alice", "role=decided", 2).await;
    assert_eq!(
        ids(&decided),
        [&submitted[2], &erins, &submitted[4], &submitted[1]].map(|s| s.clone())
    );
    assert!(decided[0]["decided_at"].is_string());
    assert_eq!(decided[0]["status"], "rejected");
    let erin_only = list(&app, "alice", "role=decided&q=erin").await;
    assert_eq!(
        ids(erin_only["items"].as_array().unwrap()),
        std::slice::from_ref(&erins)
    );
    assert!(list(&app, "dina", "role=decided").await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    // Bad input is a 400, never a 500.
    for bad in [
        "role=requester&cursor=nonsense",
        "role=requester&cursor=1.zz",
        "role=requester&limit=0",
        "role=requester&limit=100000",
        "role=boss",
        "",
        "role=requester&status=lost",
    ] {
        expect_error(
            app.get_as("dina", &format!("/v1/requests?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        )
        .await;
    }
}
