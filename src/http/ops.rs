//! For operators: liveness, readiness and metrics. The OpenAPI document is served by
//! [`crate::http::openapi`].

use std::time::Duration;

use actix_web::{get, web, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::feed::{checkpoints, read as feed};
use crate::http::errors::{ApiError, Code, ErrorBody};
use crate::http::{AppState, BrokerProbe};
use crate::metrics::{ChannelLabels, Metrics};
use crate::store::deliveries;

/// The part of the OpenAPI document these routes make; [`crate::http::api_doc`] merges it in.
#[derive(OpenApi)]
#[openapi(
    paths(healthz, readyz, metrics),
    components(schemas(Health, Readiness))
)]
pub struct OpsDoc;

/// How long a readiness probe waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The state of the process or of a dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// The dependencies are reachable.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok`.
    pub status: String,
    /// `ok`.
    pub database: String,
    /// `ok`.
    pub broker: String,
}

/// The database and the broker are reachable.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, description = "Names what is down", body = ErrorBody))
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database =
        tokio::time::timeout(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&state.pool))
            .await
            .is_ok_and(|r| r.is_ok());
    let broker = match &state.broker {
        BrokerProbe::Supervised(broker) => broker.is_connected(),
        BrokerProbe::Address(address) => tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::net::TcpStream::connect(address.clone()),
        )
        .await
        .is_ok_and(|r| r.is_ok()),
    };
    let mut down = vec![];
    if !database {
        down.push("database");
    }
    if !broker {
        down.push("broker");
    }
    if !down.is_empty() {
        return Err(ApiError::new(
            Code::Unavailable,
            format!("not ready: {} unreachable", down.join(" and ")),
        ));
    }
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ok".into(),
        database: "ok".into(),
        broker: "ok".into(),
    }))
}

/// Metrics in the Prometheus text format: request counts and latencies by route, commands by
/// outcome, and how far each feed reader is behind.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(counts) = deliveries::dead_counts(&state.pool).await {
        for channel in ["callback", "push"] {
            let n = counts
                .iter()
                .find(|(c, _)| c == channel)
                .map_or(0, |(_, n)| *n);
            state
                .metrics
                .dead_letters
                .get_or_create(&ChannelLabels {
                    channel: channel.into(),
                })
                .set(n);
        }
    }
    if let Ok(readers) = checkpoints::all(&state.pool).await {
        let now = Utc::now();
        for (name, at) in readers {
            if let Ok((behind, oldest)) = feed::lag(&state.pool, at, 100_000).await {
                let labels = Metrics::reader(&name);
                state
                    .metrics
                    .reader_lag_events
                    .get_or_create(&labels)
                    .set(behind);
                let seconds =
                    oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
                state
                    .metrics
                    .reader_lag_seconds
                    .get_or_create(&labels)
                    .set(seconds);
            }
        }
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}
