//! The job scheduler: claims due deliveries (with a lease, so a crashed worker's jobs come back),
//! sends them, and records the outcome.
//!
//! | answer | callback | push (`fcm`) |
//! |---|---|---|
//! | 2xx | delivered | delivered |
//! | 408, 429, 5xx, timeout, no connection | retried later | retried later |
//! | 404 | dead letter | device removed, job dropped |
//! | other 4xx | dead letter | dead letter |
//!
//! Retries wait `base_delay × 2^(attempt-1)`, capped at `max_delay`, with ±20 % jitter, or longer
//! when the answer's `Retry-After` says so; after `max_attempts` the job is a dead letter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{DeliverySettings, PushSettings, SystemSettings};
use crate::handlers::JobSignal;
use crate::http::auth::{signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::metrics::Metrics;
use crate::shutdown::pause;
use crate::store::deliveries::{self, Channel, Job};
use crate::store::devices;

/// The header naming the event a callback carries.
pub const EVENT_ID_HEADER: &str = "X-Ledger-Event-Id";

/// What the scheduler needs.
pub struct Scheduler {
    /// The database.
    pub pool: PgPool,
    /// Retries and timeouts.
    pub settings: DeliverySettings,
    /// Where callbacks go.
    pub systems: Arc<BTreeMap<String, SystemSettings>>,
    /// Where pushes go.
    pub push: PushSettings,
    /// Woken when jobs are created here.
    pub jobs: JobSignal,
    /// Latency and outcomes.
    pub metrics: Arc<Metrics>,
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Delivered,
    /// Try again, not sooner than the hint (from `Retry-After`).
    Retry {
        error: String,
        not_before: Option<Duration>,
    },
    Dead(String),
    /// The device is gone.
    Dropped(String),
}

impl Scheduler {
    /// Runs until `stop`, finishing the calls in flight.
    pub async fn run(self, stop: CancellationToken) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_millis(self.settings.timeout_ms))
            .connect_timeout(Duration::from_millis(self.settings.timeout_ms.min(5_000)))
            .pool_max_idle_per_host(self.settings.concurrency)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client; no deliveries will be sent");
                return;
            }
        };
        let idle = Duration::from_millis(self.settings.poll_interval_ms);
        // A claimed job is leased for the call's timeout and a margin.
        let lease = (self.settings.timeout_ms as f64 / 1000.0) + 5.0;
        let limit = i64::try_from(self.settings.concurrency).unwrap_or(32);
        while !stop.is_cancelled() {
            let jobs = match deliveries::claim(&self.pool, limit, lease).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim deliveries");
                    pause(&stop, idle).await;
                    continue;
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = self.jobs.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
                continue;
            }
            let this = &self;
            stream::iter(jobs)
                .for_each_concurrent(self.settings.concurrency, |job| {
                    let client = &client;
                    async move {
                        let outcome = this.attempt(client, &job).await;
                        this.record(&job, outcome).await;
                    }
                })
                .await;
        }
    }

    async fn attempt(&self, client: &reqwest::Client, job: &Job) -> Outcome {
        match job.channel() {
            Channel::Callback => self.callback(client, job).await,
            Channel::Push => self.push(client, job).await,
        }
    }

    async fn callback(&self, client: &reqwest::Client, job: &Job) -> Outcome {
        let Some(system) = self.systems.get(&job.target) else {
            return Outcome::Dead(format!("system {:?} is no longer configured", job.target));
        };
        let body = job.body.to_string();
        let ts = Utc::now().timestamp();
        let sent = client
            .post(&system.callback_url)
            .header("content-type", "application/json")
            .header(EVENT_ID_HEADER, job.event_id.to_string())
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(
                SIGNATURE_HEADER,
                signature(system.secret.expose(), ts, body.as_bytes()),
            )
            .body(body)
            .send()
            .await;
        classify(sent, false)
    }

    async fn push(&self, client: &reqwest::Client, job: &Job) -> Outcome {
        if self.push.provider != "fcm" {
            tracing::info!(
                request = %job.request_id,
                event_id = %job.event_id,
                title = %job.body["message"]["notification"]["title"],
                "push notification (provider log)"
            );
            return Outcome::Delivered;
        }
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.push.fcm_endpoint.trim_end_matches('/'),
            self.push.fcm_project
        );
        let sent = client
            .post(url)
            .bearer_auth(self.push.fcm_bearer.expose())
            .json(&job.body)
            .send()
            .await;
        classify(sent, true)
    }

    async fn record(&self, job: &Job, outcome: Outcome) {
        let channel = job.channel().as_str();
        let result = match &outcome {
            Outcome::Delivered => {
                let seconds = (Utc::now() - job.committed_at)
                    .num_microseconds()
                    .unwrap_or(0)
                    .max(0) as f64
                    / 1e6;
                match job.channel() {
                    Channel::Callback => self.metrics.commit_to_callback.observe(seconds),
                    Channel::Push => self.metrics.commit_to_push.observe(seconds),
                }
                self.metrics.delivery(channel, "delivered");
                deliveries::delivered(&self.pool, job.id).await
            }
            Outcome::Retry { error, not_before } if job.attempts < self.settings.max_attempts => {
                let delay = self.delay(job.attempts, *not_before);
                self.metrics.delivery(channel, "retry");
                tracing::info!(job = job.id, attempt = job.attempts, retry_in_ms = delay, error = %error, "delivery failed; will retry");
                deliveries::retry_later(&self.pool, job.id, delay, error).await
            }
            Outcome::Retry { error, .. } => {
                self.metrics.delivery(channel, "dead");
                tracing::warn!(job = job.id, attempts = job.attempts, error = %error, "delivery retries exhausted; dead letter");
                deliveries::finish(
                    &self.pool,
                    job.id,
                    "dead",
                    &format!("retries exhausted: {error}"),
                )
                .await
            }
            Outcome::Dead(error) => {
                self.metrics.delivery(channel, "dead");
                tracing::warn!(job = job.id, error = %error, "delivery refused; dead letter");
                deliveries::finish(&self.pool, job.id, "dead", error).await
            }
            Outcome::Dropped(error) => {
                self.metrics.delivery(channel, "dropped");
                if let Err(e) = devices::forget(&self.pool, &job.target).await {
                    tracing::warn!(error = %e, "cannot remove an unregistered device");
                }
                deliveries::finish(&self.pool, job.id, "dropped", error).await
            }
        };
        if let Err(e) = result {
            // The lease runs out and the job is claimed again: at least once.
            tracing::warn!(job = job.id, error = %e, "cannot record a delivery's outcome");
        }
    }

    /// The pause before attempt `attempts + 1`, in milliseconds.
    fn delay(&self, attempts: i32, not_before: Option<Duration>) -> u64 {
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let base = self
            .settings
            .base_delay_ms
            .saturating_mul(1_u64 << exponent)
            .min(self.settings.max_delay_ms);
        let jitter = base / 5;
        let jittered = base - jitter + fastrand::u64(0..=2 * jitter);
        // A Retry-After longer than our own delay wins, up to an hour.
        let hinted = not_before
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .min(3_600_000);
        jittered.max(hinted)
    }
}

/// Sorts an answer into an outcome.
fn classify(sent: Result<reqwest::Response, reqwest::Error>, push: bool) -> Outcome {
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            return Outcome::Retry {
                error: format!("the call {what}: {}", without_url(&e)),
                not_before: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let error = format!("answered {status}");
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        let not_before = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        return Outcome::Retry { error, not_before };
    }
    if push && status == StatusCode::NOT_FOUND {
        return Outcome::Dropped("the provider reports the device unregistered".into());
    }
    Outcome::Dead(error)
}

/// A `Retry-After` value: delay seconds or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = when.with_timezone(&Utc) - Utc::now();
    wait.to_std().ok()
}

/// A client error without the URL (which may carry credentials in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("soon"), None);
        let later = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = retry_after(&later).unwrap_or_default();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    }
}
