//! The checks from the outside: what the API acknowledged against what the event store holds,
//! and what the store holds against what reached the fake legacy endpoint, the fake FCM endpoint
//! and the observer queue.
//!
//! - **lost**: an acknowledged command missing from the store; a status change (or completed
//!   step) of the store that the legacy endpoint never accepted; a notification the store calls
//!   for that FCM never accepted; an event never published to the observer queue.
//! - **duplicated**: a decision applied twice: in the store (a request decided twice, an approver
//!   recorded twice at a step) or at a receiver, which applies an event once per event id as the
//!   contract asks, so only a second event id for the same change would count.
//! - **redelivered**: the same event id accepted again by a receiver (at least once delivery, made
//!   harmless by its deduplication). Reported, not a failure.
//! - **reordered**: a callback of a request that arrived while an earlier one of the same request
//!   was not yet delivered, or an event published before an earlier one of its request.
//! - **phantom**: anything delivered that the store does not hold (a rolled-back event, say).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use approval_aggregates::ApprovalEvent;
use approval_ledger::handlers::legacy_sync::callback_type;

use crate::fake::Call;
use crate::load::{device_of, Tally};
use crate::world::World;

/// One event as the store holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its id.
    pub event_id: String,
    /// Its request.
    pub request_id: String,
    /// Its place in the request.
    pub sequence: i64,
    /// The event.
    pub event: Option<ApprovalEvent>,
}

/// The figures of one scenario.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Commands the API acknowledged (2xx).
    pub acknowledged: u64,
    /// See the module's documentation.
    pub lost: u64,
    /// See the module's documentation.
    pub duplicated: u64,
    /// See the module's documentation.
    pub redelivered: u64,
    /// See the module's documentation.
    pub reordered: u64,
    /// See the module's documentation.
    pub phantom: u64,
    /// Events in the store at the end.
    pub events: u64,
    /// What failed, in words.
    pub failures: Vec<String>,
    /// What was measured besides, in words.
    pub notes: Vec<String>,
}

impl Findings {
    /// Whether the scenario held.
    pub fn held(&self) -> bool {
        self.failures.is_empty()
            && self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.phantom == 0
    }

    /// Records a failure unless `ok`.
    pub fn require(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// Records a measurement.
    pub fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }
}

/// Every event of the store, by request and sequence.
pub async fn stored(world: &World) -> anyhow::Result<Vec<Stored>> {
    let rows: Vec<(String, String, i64, serde_json::Value)> = sqlx::query_as(
        "SELECT event_id::text, aggregate_id, sequence, payload FROM events \
         ORDER BY aggregate_id, sequence",
    )
    .fetch_all(world.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, request_id, sequence, payload)| Stored {
            event_id,
            request_id,
            sequence,
            event: serde_json::from_value(payload).ok(),
        })
        .collect())
}

/// What the store calls for: the callbacks (event id → request, sequence) and the pushes
/// (event id, device token).
struct Expected {
    callbacks: HashMap<String, (String, i64)>,
    pushes: HashSet<(String, String)>,
}

fn expected(events: &[Stored]) -> Expected {
    let mut callbacks = HashMap::new();
    let mut pushes = HashSet::new();
    let mut steps = HashMap::new();
    let mut requesters = HashMap::new();
    for e in events {
        let Some(event) = &e.event else { continue };
        if callback_type(event, true).is_some() {
            callbacks.insert(e.event_id.clone(), (e.request_id.clone(), e.sequence));
        }
        let notify: Vec<String> = match event {
            ApprovalEvent::RequestSubmitted {
                steps: s,
                requester,
                ..
            } => {
                steps.insert(e.request_id.clone(), s.clone());
                requesters.insert(e.request_id.clone(), requester.0.clone());
                s.first()
                    .map(|s| s.approvers.iter().map(|a| a.0.clone()).collect())
                    .unwrap_or_default()
            }
            ApprovalEvent::StepCompleted { step, .. } => steps
                .get(&e.request_id)
                .and_then(|s| s.get(step + 1))
                .map(|s| s.approvers.iter().map(|a| a.0.clone()).collect())
                .unwrap_or_default(),
            other if other.final_status().is_some() => {
                requesters.get(&e.request_id).cloned().into_iter().collect()
            }
            ApprovalEvent::ReminderSent { to, .. } => to.iter().map(|u| u.0.clone()).collect(),
            ApprovalEvent::StepEscalated { added, .. } => {
                added.iter().map(|u| u.0.clone()).collect()
            }
            _ => vec![],
        };
        for user in notify {
            pushes.insert((e.event_id.clone(), device_of(&user)));
        }
    }
    Expected { callbacks, pushes }
}

/// How far the receivers are: the callbacks and pushes the store calls for that were not yet
/// delivered.
async fn missing(world: &World) -> anyhow::Result<(usize, usize)> {
    let events = stored(world).await?;
    let want = expected(&events);
    let got_callbacks: HashSet<String> = world
        .fake
        .callbacks()
        .into_iter()
        .filter(|c| c.delivered)
        .map(|c| c.event_id)
        .collect();
    let got_pushes: HashSet<(String, String)> = world
        .fake
        .pushes()
        .into_iter()
        .filter(|c| c.delivered)
        .map(|c| (c.event_id, c.token))
        .collect();
    Ok((
        want.callbacks
            .keys()
            .filter(|k| !got_callbacks.contains(*k))
            .count(),
        want.pushes.difference(&got_pushes).count(),
    ))
}

/// Waits (up to `limit`) until every callback and push the store calls for was delivered, then a
/// little longer for late duplicates, and returns how long the drain took.
pub async fn drain(world: &World, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let (callbacks, pushes) = missing(world).await?;
        if callbacks == 0 && pushes == 0 {
            break;
        }
        if started.elapsed() > limit {
            eprintln!(
                "  {}: after {} s, {callbacks} callbacks and {pushes} pushes are still missing",
                world.name,
                limit.as_secs()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(took)
}

/// Sets what the clients were told against the store, and the store against the receivers.
pub async fn check(world: &World, tally: &Tally) -> anyhow::Result<Findings> {
    let events = stored(world).await?;
    let want = expected(&events);
    let mut f = Findings {
        acknowledged: tally.acknowledged.len() as u64,
        events: events.len() as u64,
        ..Findings::default()
    };

    // Every acknowledged command is in the store.
    let mut last: HashMap<&str, i64> = HashMap::new();
    for e in &events {
        last.insert(e.request_id.as_str(), e.sequence);
    }
    let lost_commands = tally
        .acknowledged
        .iter()
        .filter(|(id, version)| last.get(id.as_str()).is_none_or(|l| l < version))
        .count() as u64;
    f.lost += lost_commands;
    f.require(
        lost_commands == 0,
        format!("{lost_commands} acknowledged commands are not in the store"),
    );

    // Nothing decided twice in the store, no timer fired twice.
    let mut finals: HashMap<&str, u32> = HashMap::new();
    let mut recorded: HashSet<(&str, usize, &str)> = HashSet::new();
    let mut fired: HashSet<(&str, usize, String)> = HashSet::new();
    for e in &events {
        match &e.event {
            Some(ApprovalEvent::ReminderSent { step, reminder, .. }) => {
                if !fired.insert((e.request_id.as_str(), *step, format!("{reminder:?}"))) {
                    f.duplicated += 1;
                }
            }
            Some(ApprovalEvent::StepEscalated { step, .. }) => {
                if !fired.insert((e.request_id.as_str(), *step, "escalation".into())) {
                    f.duplicated += 1;
                }
            }
            Some(ApprovalEvent::ApprovalRecorded { step, approver, .. }) => {
                if !recorded.insert((e.request_id.as_str(), *step, approver.0.as_str())) {
                    f.duplicated += 1;
                }
            }
            Some(other) if other.final_status().is_some() => {
                let n = finals.entry(e.request_id.as_str()).or_default();
                *n += 1;
                if *n > 1 {
                    f.duplicated += 1;
                }
            }
            Some(_) => {}
            None => f
                .failures
                .push(format!("event {} does not decode", e.event_id)),
        }
    }

    check_callbacks(&mut f, &want.callbacks, &world.fake.callbacks());
    check_pushes(&mut f, &want.pushes, &world.fake.pushes());
    if world.observer.is_some() {
        let observed = world.drain_observer(Duration::from_millis(1500)).await?;
        check_observed(&mut f, &events, &observed);
    }
    if !tally.refused.is_empty() {
        f.failures.push(format!(
            "{} commands refused, first: {}",
            tally.refused.len(),
            tally.refused[0]
        ));
    }
    f.require(
        tally.server_errors == 0,
        format!("{} answers were 5xx other than 503", tally.server_errors),
    );
    f.require(
        tally.hung == 0,
        format!("{} calls got no answer within 10 s", tally.hung),
    );
    let (ok, text) = world.cli(&["audit", "verify"]).await?;
    f.require(ok, format!("audit verify failed: {}", text.trim()));
    Ok(f)
}

/// Callbacks: each expected one accepted, the receiver applying an event id once; per request,
/// no callback sent while an earlier one of the request was not yet delivered.
fn check_callbacks(f: &mut Findings, want: &HashMap<String, (String, i64)>, calls: &[Call]) {
    let mut by_request: HashMap<&str, BTreeSet<i64>> = HashMap::new();
    for (request, sequence) in want.values() {
        by_request.entry(request).or_default().insert(*sequence);
    }
    let mut applied: HashSet<&str> = HashSet::new();
    let mut delivered: HashMap<&str, BTreeSet<i64>> = HashMap::new();
    let mut changes: BTreeMap<(&str, i64), BTreeSet<&str>> = BTreeMap::new();
    for call in calls {
        if !want.contains_key(&call.event_id) {
            f.phantom += 1;
            continue;
        }
        let request = call.request_id.as_str();
        let done = delivered.entry(request).or_default();
        let earlier_pending = by_request
            .get(request)
            .map(|all| all.range(..call.version).any(|s| !done.contains(s)))
            .unwrap_or(false);
        if earlier_pending {
            f.reordered += 1;
        }
        if call.delivered {
            if applied.insert(call.event_id.as_str()) {
                changes
                    .entry((request, call.version))
                    .or_default()
                    .insert(call.event_id.as_str());
            } else {
                f.redelivered += 1;
            }
            done.insert(call.version);
        }
    }
    f.duplicated += changes
        .values()
        .map(|ids| ids.len().saturating_sub(1) as u64)
        .sum::<u64>();
    let lost = want
        .keys()
        .filter(|k| !applied.contains(k.as_str()))
        .count() as u64;
    f.lost += lost;
    f.note(format!(
        "callbacks {} delivered of {} ({} attempts)",
        applied.len(),
        want.len(),
        calls.len()
    ));
}

/// Pushes: each (event, device) the store calls for accepted; a second acceptance of the same
/// pair is a redelivery.
fn check_pushes(f: &mut Findings, want: &HashSet<(String, String)>, calls: &[Call]) {
    let mut got: HashSet<(&str, &str)> = HashSet::new();
    for call in calls.iter().filter(|c| c.delivered) {
        if !want.contains(&(call.event_id.clone(), call.token.clone())) {
            f.phantom += 1;
        } else if !got.insert((call.event_id.as_str(), call.token.as_str())) {
            f.redelivered += 1;
        }
    }
    let lost = want
        .iter()
        .filter(|(e, t)| !got.contains(&(e.as_str(), t.as_str())))
        .count() as u64;
    f.lost += lost;
    f.note(format!(
        "pushes {} delivered of {} ({} attempts)",
        got.len(),
        want.len(),
        calls.len()
    ));
}

/// The observer queue: every stored event published, in order per request, nothing else.
fn check_observed(f: &mut Findings, events: &[Stored], observed: &[serde_json::Value]) {
    let known: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut highest: HashMap<String, i64> = HashMap::new();
    let mut copies = 0u64;
    for message in observed {
        let id = message["event_id"].as_str().unwrap_or_default().to_owned();
        if !known.contains(id.as_str()) {
            f.phantom += 1;
            continue;
        }
        if !seen.insert(id) {
            copies += 1;
            continue;
        }
        let request = message["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sequence = message["sequence"].as_i64().unwrap_or_default();
        let top = highest.entry(request).or_insert(0);
        if sequence < *top {
            f.reordered += 1;
        }
        *top = (*top).max(sequence);
    }
    let lost = known.iter().filter(|id| !seen.contains(**id)).count() as u64;
    f.lost += lost;
    f.redelivered += copies;
    f.note(format!(
        "published {} of {} events ({copies} published again)",
        seen.len(),
        known.len()
    ));
}
