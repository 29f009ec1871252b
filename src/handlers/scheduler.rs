//! The job scheduler: sends the push jobs this process's consumer handed over already leased,
//! claims the other due deliveries (with a lease, so a crashed worker's jobs come back), sends
//! them, and records the outcome.
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
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{DeliverySettings, PushSettings, SystemSettings};
use crate::handlers::JobSignal;
use crate::metrics::Metrics;
use crate::shutdown::pause;
use crate::signing::{signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::store::deliveries::{self, Channel, Job};

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

/// How long the scheduler lets new jobs gather after a wake-up before it claims them: a claim
/// costs about the same whatever it finds, so fewer, fuller claims, for a few milliseconds more
/// from commit to push (the trade measured in docs/benchmarks.md).
const CLAIM_LINGER: Duration = Duration::from_millis(20);

impl Scheduler {
    /// Runs until `stop`, finishing the calls in flight.
    ///
    /// Up to `concurrency` calls are in flight at once; a free slot is refilled by the next
    /// claim, so one slow endpoint holds only its own slots. Outcomes are recorded in batches by
    /// one recorder (one commit for many jobs).
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
        let this = Arc::new(self);
        let idle = Duration::from_millis(this.settings.poll_interval_ms);
        // A job is leased for the call's timeout and a margin; a handed-over one is sent only
        // while its lease outlasts a whole call.
        let call = Duration::from_millis(this.settings.timeout_ms);
        let lease = call + Duration::from_secs(5);
        let enough_left = call + Duration::from_secs(1);
        let slots = Arc::new(Semaphore::new(this.settings.concurrency));
        let (outcomes, recorded) =
            mpsc::channel::<deliveries::Recorded>(this.settings.concurrency * 4);
        let recorder = tokio::spawn(this.clone().record_batches(recorded));
        let _open = this.jobs.open(this.settings.concurrency * 2, lease);
        // Whether the table may hold due jobs: at the start, after a wake-up for jobs made to be
        // claimed, after a full claim, and every `idle` whatever else happens (retries fall due
        // without a wake-up).
        let mut claim_due = true;
        let mut next_poll = tokio::time::Instant::now() + idle;
        while !stop.is_cancelled() {
            let free = slots.available_permits();
            if free == 0 {
                // Wait for a slot (or stop) rather than take jobs nobody can send yet.
                tokio::select! {
                    _ = stop.cancelled() => break,
                    permit = slots.clone().acquire_owned() => drop(permit),
                }
                continue;
            }
            let (handed, stale) = this.jobs.take(free, enough_left);
            if stale > 0 {
                tracing::info!(
                    jobs = stale,
                    "handed-over jobs waited too long; left to their lease"
                );
            }
            let took = handed.len();
            this.metrics.taken("handed", took);
            this.metrics.taken("stale", stale);
            this.send_all(handed, &slots, &client, &outcomes).await;
            if took == free {
                continue;
            }
            if tokio::time::Instant::now() >= next_poll {
                claim_due = true;
            }
            if claim_due {
                next_poll = tokio::time::Instant::now() + idle;
                let want = free - took;
                let jobs =
                    match deliveries::claim(&this.pool, want as i64, lease.as_secs_f64()).await {
                        Ok(jobs) => jobs,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot claim deliveries");
                            pause(&stop, idle).await;
                            continue;
                        }
                    };
                // Fewer than asked for: none other is due now, so wait for new jobs (a wake-up
                // sent meanwhile is kept) rather than claim again at once for nothing.
                claim_due = jobs.len() == want;
                this.metrics.taken("claimed", jobs.len());
                this.send_all(jobs, &slots, &client, &outcomes).await;
                if claim_due {
                    continue;
                }
            }
            if took > 0 {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = this.jobs.notified() => {
                    // Let the jobs of the other messages in flight join the next claim.
                    pause(&stop, CLAIM_LINGER).await;
                    claim_due = true;
                }
                _ = this.jobs.handed() => {}
                _ = tokio::time::sleep_until(next_poll) => claim_due = true,
            }
        }
        // Let the calls in flight finish and be recorded.
        let _ = slots
            .acquire_many(u32::try_from(this.settings.concurrency).unwrap_or(u32::MAX))
            .await;
        drop(outcomes);
        if let Err(e) = recorder.await {
            tracing::warn!(error = %e, "the delivery recorder ended badly");
        }
    }

    /// Sends each of `jobs` in a task of its own as slots free up; each outcome goes to the
    /// recorder.
    async fn send_all(
        self: &Arc<Self>,
        jobs: Vec<Job>,
        slots: &Arc<Semaphore>,
        client: &reqwest::Client,
        outcomes: &mpsc::Sender<deliveries::Recorded>,
    ) {
        for job in jobs {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (this, client, outcomes) = (self.clone(), client.clone(), outcomes.clone());
            // One span per delivery attempt, so its log lines name the event and request.
            let span = tracing::info_span!(
                "delivery",
                job = job.id,
                channel = job.channel().as_str(),
                event_id = %job.event_id,
                request = %job.request_id,
                attempt = job.attempts,
            );
            tokio::spawn(
                async move {
                    let outcome = this.attempt(&client, &job).await;
                    let recorded = this.judge(&job, outcome);
                    // The recorder outlives every sender; a closed channel only means
                    // stopping, and the lease brings the job back.
                    let _ = outcomes.send(recorded).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    /// Records outcomes as they come, many per commit.
    async fn record_batches(self: Arc<Self>, mut recorded: mpsc::Receiver<deliveries::Recorded>) {
        let mut rows = Vec::new();
        while recorded.recv_many(&mut rows, 256).await > 0 {
            if let Err(e) = deliveries::record(&self.pool, &rows).await {
                // The leases run out and the jobs are claimed again: at least once.
                tracing::warn!(error = %e, jobs = rows.len(), "cannot record deliveries' outcomes");
            }
            rows.clear();
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

    /// What an attempt's outcome makes of its job, with its metrics and log line.
    fn judge(&self, job: &Job, outcome: Outcome) -> deliveries::Recorded {
        let channel = job.channel().as_str();
        let (state, error) = match outcome {
            Outcome::Delivered => {
                let seconds = (Utc::now() - job.committed_at)
                    .num_microseconds()
                    .unwrap_or(0)
                    .max(0) as f64
                    / 1e6;
                match job.channel() {
                    Channel::Callback => self.metrics.commit_to_callback.observe(seconds),
                    Channel::Push => {
                        self.metrics.commit_to_push.observe(seconds);
                        self.metrics.series.push_delivered(Utc::now(), seconds);
                    }
                }
                self.metrics.delivery(channel, "delivered");
                (deliveries::JobState::Delivered, None)
            }
            Outcome::Retry { error, not_before } if job.attempts < self.settings.max_attempts => {
                let delay = self.delay(job.attempts, not_before);
                self.metrics.delivery(channel, "retry");
                tracing::info!(retry_in_ms = delay, error = %error, "delivery failed; will retry");
                (deliveries::JobState::RetryInMs(delay), Some(error))
            }
            Outcome::Retry { error, .. } => {
                self.metrics.delivery(channel, "dead");
                tracing::warn!(error = %error, "delivery retries exhausted; dead letter");
                (
                    deliveries::JobState::Dead,
                    Some(format!("retries exhausted: {error}")),
                )
            }
            Outcome::Dead(error) => {
                self.metrics.delivery(channel, "dead");
                tracing::warn!(error = %error, "delivery refused; dead letter");
                (deliveries::JobState::Dead, Some(error))
            }
            Outcome::Dropped(error) => {
                self.metrics.delivery(channel, "dropped");
                (deliveries::JobState::Dropped, Some(error))
            }
        };
        deliveries::Recorded {
            id: job.id,
            state,
            error,
            forget_device: matches!(state, deliveries::JobState::Dropped)
                .then(|| job.target.clone()),
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
