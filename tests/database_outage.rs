//! PostgreSQL drops every connection of the service while people decide (as a restart or a
//! failover does): callers get 503 with Retry-After or their answer, never a 500 and never a
//! hang; the service recovers by itself; every acknowledged decision is in the store and shown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{eventually, single_step, TestApp};
use reqwest::StatusCode;
use sqlx::{Connection, PgConnection};

/// Ends every connection to the test's database but the caller's, as a server restart would.
async fn drop_connections(app: &TestApp) {
    // From a connection of its own, so that no pooled connection survives (one opened before a
    // change of the database's settings would keep the old ones).
    let mut own = PgConnection::connect(app.settings.database.url.expose())
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut own)
    .await
    .unwrap();
    own.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_during_dropped_connections_get_503_or_their_answer_and_none_is_lost() {
    let app = TestApp::spawn().await;
    let n = 40;
    let mut ids = vec![];
    for i in 0..n {
        ids.push(
            app.submit_ok(&single_step(&format!("DB-{i}"), &[&format!("approver{i}")]))
                .await,
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let decide = |i: usize| {
        let client = client.clone();
        let url = format!("{}/v1/requests/{}/approve", app.address, ids[i]);
        let token = app.token(&format!("approver{i}"));
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("an answer, not a hang");
            let retry_after = response.headers().contains_key("retry-after");
            (i, response.status(), retry_after)
        }
    };
    let load = futures_util::future::join_all((0..n).map(decide));
    let chaos = async {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(15)).await;
            drop_connections(&app).await;
        }
    };
    let (answers, ()) = tokio::join!(load, chaos);

    let mut acknowledged = vec![];
    for (i, status, retry_after) in answers {
        match status {
            StatusCode::OK => acknowledged.push(i),
            StatusCode::SERVICE_UNAVAILABLE => assert!(retry_after, "a 503 says when to retry"),
            other => panic!("decision {i} answered {other}"),
        }
    }
    eprintln!(
        "acknowledged {} of {n} during the outage",
        acknowledged.len()
    );
    // The service recovers without a restart: retry what got 503 (the first try may have
    // committed before its connection was cut: then the answer is `already_decided`).
    for i in 0..n {
        if acknowledged.contains(&i) {
            continue;
        }
        let status = eventually(Duration::from_secs(30), || async {
            let (_, status, _) = decide(i).await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then_some(status)
        })
        .await
        .expect("the service recovers");
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "retry of {i}: {status}"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let (decided,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'ApprovalRecorded'",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(decided, 1, "request {i} decided exactly once");
    }
    let shown = eventually(Duration::from_secs(30), || async {
        for id in &ids {
            if app.detail("dina", id).await["status"] != "approved" {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(shown.is_some(), "the read models show every decision");
}

/// Makes the test's database read-only (or writable again) for new sessions, and ends the
/// service's connections so that it reconnects to what a failover would hand it.
async fn set_read_only(app: &TestApp, on: bool) {
    let (db,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    {
        // Any connection opened since the database went read-only is read-only itself: make
        // this one's next transaction writable first, as an operator's session would.
        let mut conn = app.pool.acquire().await.unwrap();
        sqlx::query("SET default_transaction_read_only = off")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query(&format!("ALTER DATABASE \"{db}\" {setting}"))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    drop_connections(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_answers_503_and_the_service_recovers_when_it_is_writable() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&single_step("RO-1", &["alice"])).await;
    set_read_only(&app, true).await;
    let response = app.approve("alice", &id).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    set_read_only(&app, false).await;
    let status = eventually(Duration::from_secs(30), || async {
        let status = app.approve("alice", &id).await.status();
        (status != StatusCode::SERVICE_UNAVAILABLE).then_some(status)
    })
    .await;
    assert_eq!(status, Some(StatusCode::OK));
}
