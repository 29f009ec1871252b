//! What operators and integrators rely on: health, readiness, metrics, the OpenAPI document, and
//! docs/api.md agreeing with both the document and the error table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use approval_ledger::http::errors::Code;
use common::{purchase_order, TestApp};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::spawn().await;
    let id = app.submit_ok(&purchase_order("PO-M")).await;
    app.approve("alice", &id).await;

    let health: Value = app.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
    // Ready once the worker's broker connection is up.
    app.wait_ready().await;

    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"approval_ledger_http_requests_total{method="POST",route="/v1/requests/{id}/approve",status="200"} 1"#), "{metrics}");
    assert!(metrics.contains("approval_ledger_http_request_duration_seconds_bucket"));
    assert!(metrics.contains(r#"approval_ledger_commands_total{command="approve",outcome="ok"} 1"#));
    // Where a decision's time goes: the submission was presumed new and the approval found the
    // request in the cache, so neither loaded; each appended and waited for the read models once.
    assert!(
        metrics.contains("approval_ledger_command_store_seconds_count{step=\"append\"} 2"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("approval_ledger_command_store_seconds_count{step=\"load\"}"),
        "{metrics}"
    );
    for (result, count) in [("new", 1), ("hit", 1)] {
        assert!(
            metrics.contains(&format!(
                "approval_ledger_command_cache_total{{result=\"{result}\"}} {count}"
            )),
            "{metrics}"
        );
    }
    assert!(metrics.contains("approval_ledger_read_your_writes_wait_seconds_count 2"));
    assert!(metrics.contains(
        r#"approval_ledger_feed_reader_batch_seconds_count{reader="requests+inbox+lists+absences"}"#
    ));
    // The first batch after the start took a transaction; the approval's, one statement.
    let one_statement = metric_value(
        &metrics,
        r#"approval_ledger_feed_reader_one_statement_batches_total{reader="requests+inbox+lists+absences"}"#,
    );
    assert!(one_statement >= 1.0, "{metrics}");
    for reader in ["requests", "inbox", "absences"] {
        assert!(
            metrics.contains(&format!(
                "approval_ledger_feed_reader_lag_events{{reader=\"{reader}\"}}"
            )),
            "lag of {reader}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_api_md_names_every_path_of_the_openapi_document_and_every_error_code() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_md =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15);
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let line = format!("{} {}", method.to_uppercase(), path);
            assert!(
                api_md.contains(&line),
                "docs/api.md does not document `{line}`"
            );
        }
    }
    for code in Code::ALL {
        assert!(
            api_md.contains(&format!("`{}`", code.as_str())),
            "docs/api.md does not list `{}`",
            code.as_str()
        );
    }
}

/// The value of the sample named `name` (with its labels) in a Prometheus text exposition.
fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
