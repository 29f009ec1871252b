//! The load that runs through every scenario: legacy systems submit two-step requests through the
//! signed system API, approvers decide them from their "phones". Every command is retried the
//! way a careful client retries (the same `Idempotency-Key`, the same `external_ref`) until it is
//! answered; what the API acknowledged is written down for the checks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approval_ledger::signing::{signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::world::World;

/// Approvers `a00`..; requesters `p0`...
pub const APPROVERS: usize = 40;
/// Requesters.
pub const REQUESTERS: usize = 8;

/// A request the load drove: who is in it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The requester.
    pub requester: String,
    /// The approver of step 1 and of step 2.
    pub approvers: [String; 2],
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Commands the API answered 2xx: (request id, the version it answered).
    pub acknowledged: Vec<(String, i64)>,
    /// The requests, by id.
    pub plans: BTreeMap<String, Plan>,
    /// 503 answers, and how many of them carried `Retry-After`.
    pub unavailable: u64,
    /// 503 answers with `Retry-After`.
    pub unavailable_with_retry_after: u64,
    /// Any other 5xx (a fault in the service).
    pub server_errors: u64,
    /// Calls that got no answer within the client's timeout.
    pub hung: u64,
    /// Calls that could not connect (the instance was down).
    pub unreachable: u64,
    /// 4xx answers the load did not expect (a bug, or a command that lost its answer).
    pub refused: Vec<String>,
}

struct Shared {
    bases: Vec<String>,
    secret: String,
    tokens: BTreeMap<String, String>,
    client: reqwest::Client,
    stop: AtomicBool,
    next: AtomicU64,
    tally: Mutex<Tally>,
}

/// The running load.
pub struct Load {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn approver(i: usize) -> String {
    format!("a{:02}", i % APPROVERS)
}

fn requester(i: usize) -> String {
    format!("p{}", i % REQUESTERS)
}

/// Every person of the load.
pub fn people() -> Vec<String> {
    (0..APPROVERS)
        .map(approver)
        .chain((0..REQUESTERS).map(requester))
        .collect()
}

/// The device token of `user`.
pub fn device_of(user: &str) -> String {
    format!("dev-{user}")
}

/// Registers one device per person (through the API, as the app does).
pub async fn register_devices(world: &World) -> anyhow::Result<()> {
    let base = &world.bases()[0];
    for user in people() {
        let r = world
            .http
            .post(format!("{base}/v1/devices"))
            .bearer_auth(world.token(&user)?)
            .json(&json!({"platform": "android", "token": device_of(&user)}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "device of {user}: {}", r.status());
    }
    Ok(())
}

enum Answer {
    Done(Value),
    Refused(String),
}

impl Shared {
    fn note(&self, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut t) = self.tally.lock() {
            f(&mut t);
        }
    }

    /// Sends one command until it is answered (2xx or a refusal), rotating over the instances
    /// while one is unreachable. Gives up only after two minutes.
    async fn command(
        &self,
        path: &str,
        body: &Value,
        who: Option<&str>,
        key: &str,
        start: usize,
    ) -> Answer {
        let raw = body.to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut instance = start;
        loop {
            if Instant::now() > deadline {
                return Answer::Refused(format!("{path}: no answer within 2 minutes"));
            }
            let base = &self.bases[instance % self.bases.len()];
            let mut request = self
                .client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .header("Idempotency-Key", key)
                .body(raw.clone());
            request = match who {
                Some(user) => request.bearer_auth(self.tokens.get(user).map_or("", String::as_str)),
                None => {
                    let ts = chrono::Utc::now().timestamp();
                    request.header(TIMESTAMP_HEADER, ts.to_string()).header(
                        SIGNATURE_HEADER,
                        signature(&self.secret, ts, raw.as_bytes()),
                    )
                }
            };
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        if let Ok(value) = response.json::<Value>().await {
                            return Answer::Done(value);
                        }
                        // The answer was cut off: ask again (the key makes it safe).
                        self.note(|t| t.unreachable += 1);
                    } else if status == StatusCode::SERVICE_UNAVAILABLE {
                        let hint = response
                            .headers()
                            .get("Retry-After")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        self.note(|t| {
                            t.unavailable += 1;
                            if hint.is_some() {
                                t.unavailable_with_retry_after += 1;
                            }
                        });
                        let wait = hint.unwrap_or(1).clamp(1, 5);
                        tokio::time::sleep(Duration::from_millis(wait * 300)).await;
                        continue;
                    } else if status.is_server_error() {
                        self.note(|t| t.server_errors += 1);
                    } else {
                        let text = response.text().await.unwrap_or_default();
                        return Answer::Refused(format!("{path}: {status} {text}"));
                    }
                }
                Err(e) if e.is_timeout() => self.note(|t| t.hung += 1),
                Err(_) => {
                    self.note(|t| t.unreachable += 1);
                    instance += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100 + fastrand::u64(..100))).await;
        }
    }

    fn acknowledge(&self, value: &Value) -> Option<String> {
        let id = value["id"].as_str()?.to_owned();
        let version = value["version"].as_i64()?;
        self.note(|t| t.acknowledged.push((id.clone(), version)));
        Some(id)
    }

    /// One request: submitted, approved at step 1, approved or rejected at step 2.
    async fn one_request(&self, n: u64, lane: usize) -> Result<(), String> {
        let i = usize::try_from(n).unwrap_or_default();
        let plan = Plan {
            requester: requester(i),
            approvers: [approver(i), approver(i + 1 + i % 7)],
        };
        let external_ref = format!("F-{n}");
        let body = json!({
            "external_ref": external_ref,
            "kind": "purchase_order",
            "title": format!("PO {n}"),
            "requester": plan.requester,
            "amount": {"value": format!("{}.50", 100 + n % 900), "currency": "EUR"},
            "steps": [
                {"approvers": [plan.approvers[0]], "rule": "any"},
                {"approvers": [plan.approvers[1]], "rule": "any"},
            ],
        });
        let id = match self
            .command("/v1/systems/erp/requests", &body, None, &external_ref, lane)
            .await
        {
            Answer::Done(value) => self.acknowledge(&value).ok_or("no id in the answer")?,
            Answer::Refused(why) => return Err(why),
        };
        self.note(|t| {
            t.plans.insert(id.clone(), plan.clone());
        });
        let decisions = [
            (
                plan.approvers[0].as_str(),
                "approve",
                json!({"comment": "ok"}),
            ),
            if n % 5 == 0 {
                (
                    plan.approvers[1].as_str(),
                    "reject",
                    json!({"comment": "over budget"}),
                )
            } else {
                (plan.approvers[1].as_str(), "approve", json!({}))
            },
        ];
        for (step, (who, verdict, body)) in decisions.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let key = format!("{external_ref}-{step}");
            match self
                .command(
                    &format!("/v1/requests/{id}/{verdict}"),
                    body,
                    Some(who),
                    &key,
                    lane,
                )
                .await
            {
                Answer::Done(value) => {
                    self.acknowledge(&value);
                }
                Answer::Refused(why) => return Err(why),
            }
        }
        Ok(())
    }
}

impl Load {
    /// Starts `clients` clients, each pausing `pause` between commands, against the world's
    /// instances.
    pub fn start(world: &World, clients: usize, pause: Duration) -> anyhow::Result<Self> {
        let tokens = people()
            .into_iter()
            .map(|u| world.token(&u).map(|t| (u, t)))
            .collect::<anyhow::Result<_>>()?;
        let shared = Arc::new(Shared {
            bases: world.bases(),
            secret: world.system_secret(),
            tokens,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(clients)
                .build()?,
            stop: AtomicBool::new(false),
            next: AtomicU64::new(0),
            tally: Mutex::new(Tally::default()),
        });
        let tasks = (0..clients)
            .map(|lane| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    while !shared.stop.load(Ordering::Relaxed) {
                        let n = shared.next.fetch_add(1, Ordering::Relaxed);
                        if let Err(why) = shared.one_request(n, lane).await {
                            shared.note(|t| t.refused.push(why));
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Ok(Self { shared, tasks })
    }

    /// Commands acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.shared
            .tally
            .lock()
            .map(|t| t.acknowledged.len())
            .unwrap_or_default()
    }

    /// Stops the clients once their current request is through, and returns what they saw.
    pub async fn stop(self) -> Tally {
        self.shared.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.shared
            .tally
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}
