//! `audit verify`: recomputes every event's hash from its stored content and its request's
//! chain, and the running hash over the feed, and checks them against the anchors (audit
//! checkpoints, the audit reader's latest state, exported files) and against the last event the
//! audit reader saw of each request.
//!
//! The store is read in keyset pages in feed order, below the oldest transaction running when the
//! check starts, so the check sees a fixed store and holds no transaction open; the next page is
//! fetched while the current one is hashed. Memory grows with the number of requests (one chain
//! state each), not with the number of events.

use std::collections::HashMap;
use std::fmt;

use crate::feed::Position;
use approval_aggregates::ApprovalRequest;
use cqrs_es::Aggregate;
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::anchors::{self, Anchor};
use crate::audit::chain::{self, Hash, GENESIS};
use crate::audit::AuditError;
use crate::store::audit::{self as sql, Head, StoredEvent};

/// Events per page read from the store.
const PAGE: i64 = 5_000;

/// Something that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// An event's stored hash does not match its content and the hash of the event before it.
    Changed {
        /// The request.
        request: String,
        /// The event's sequence.
        sequence: i64,
        /// The event's id.
        event_id: Uuid,
    },
    /// A request's events do not follow each other: some are missing, or out of feed order.
    Gap {
        /// The request.
        request: String,
        /// The event's sequence.
        sequence: i64,
        /// The sequence of the event before it in the feed (0: none).
        after: i64,
    },
    /// An event's hash differs from the one the audit reader recorded for it.
    Rehashed {
        /// The request.
        request: String,
        /// The event's sequence.
        sequence: i64,
        /// The event's id.
        event_id: Uuid,
    },
    /// The audit reader saw events of a request that the store no longer has.
    Missing {
        /// The request.
        request: String,
        /// The first missing sequence.
        from: i64,
        /// The last missing sequence: the last one the audit reader saw.
        to: i64,
    },
    /// The store disagrees with an anchor.
    Anchor {
        /// The anchor.
        label: String,
        /// Its position.
        position: Position,
        /// The events it counted.
        expected: i64,
        /// The events the store has up to its position.
        found: i64,
        /// The last anchor the store agreed with, if any.
        since: Option<String>,
        /// How many later anchors disagree too (once the store diverges, every later anchor
        /// does; they are counted, not listed).
        later: usize,
    },
    /// An exported checkpoint is missing from the database or differs from it.
    Rewritten {
        /// The exported checkpoint.
        label: String,
    },
}

impl Finding {
    /// The request and sequence it names, if it names an event.
    pub fn event(&self) -> Option<(&str, i64)> {
        match self {
            Self::Changed {
                request, sequence, ..
            }
            | Self::Gap {
                request, sequence, ..
            }
            | Self::Rehashed {
                request, sequence, ..
            } => Some((request, *sequence)),
            Self::Missing { request, from, .. } => Some((request, *from)),
            Self::Anchor { .. } | Self::Rewritten { .. } => None,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Changed {
                request,
                sequence,
                event_id,
            } => write!(
                f,
                "request {request} sequence {sequence} (event {event_id}): its stored hash does \
                 not match its content and the hash of sequence {}: the event was changed (or \
                 the one before it was changed and re-hashed)",
                sequence - 1
            ),
            Self::Gap {
                request,
                sequence,
                after,
            } if sequence > after => write!(
                f,
                "request {request} sequence {sequence}: follows sequence {after}; sequences {} \
                 to {} are missing",
                after + 1,
                sequence - 1
            ),
            Self::Gap {
                request,
                sequence,
                after,
            } => write!(
                f,
                "request {request} sequence {sequence}: comes after sequence {after} in the \
                 feed: events were reordered"
            ),
            Self::Rehashed {
                request,
                sequence,
                event_id,
            } => write!(
                f,
                "request {request} sequence {sequence} (event {event_id}): its hash differs \
                 from the one the audit ledger recorded: the request's events were changed and \
                 re-hashed"
            ),
            Self::Missing { request, from, to } if *from == 1 => write!(
                f,
                "request {request} sequence 1: missing: the whole request was removed (the \
                 audit ledger saw {to} events of it)"
            ),
            Self::Missing { request, from, to } => write!(
                f,
                "request {request} sequence {from}: missing: the request's last events were \
                 removed (the audit ledger saw it up to sequence {to}; the store ends at \
                 sequence {})",
                from - 1
            ),
            Self::Anchor {
                label,
                position,
                expected,
                found,
                since,
                later,
            } => {
                write!(
                    f,
                    "{label} at feed position {}/{}: ",
                    position.tx_id, position.global_id
                )?;
                if expected == found {
                    write!(
                        f,
                        "the running hash differs: an event up to there was changed, replaced \
                         or moved"
                    )?;
                } else {
                    write!(
                        f,
                        "it counted {expected} events up to there, the store has {found}: \
                         events were {}",
                        if found < expected {
                            "removed (or an older backup restored)"
                        } else {
                            "inserted"
                        }
                    )?;
                }
                if let Some(good) = since {
                    write!(f, "; the store still agrees with {good}")?;
                }
                match later {
                    0 => Ok(()),
                    n => write!(f, "; {n} later checkpoint(s) disagree too"),
                }
            }
            Self::Rewritten { label } => write!(
                f,
                "{label}: the database no longer holds this checkpoint as exported: the audit \
                 checkpoints were rewritten"
            ),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Events checked.
    pub events: u64,
    /// Requests seen.
    pub requests: usize,
    /// Anchors the store agreed with.
    pub anchors: usize,
    /// The last event checked.
    pub up_to: Option<Position>,
    /// What does not hold: named events first (in feed order), then missing events, then the
    /// first anchor the store disagrees with (counting the later ones).
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing was found.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// One request's chain as checked so far.
struct Chain {
    last_sequence: i64,
    last_hash: Hash,
    /// The last event the audit reader saw of it.
    head: Option<(i64, Hash)>,
}

/// Checks stored events one by one, in feed order (or one request's, in sequence order).
pub struct Verifier {
    chains: HashMap<String, Chain>,
    /// Anchors still ahead, the nearest last.
    anchors: Vec<Anchor>,
    running: Hash,
    count: i64,
    last_good: Option<String>,
    report: Report,
    anchor_findings: Vec<Finding>,
}

fn chain_key(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{aggregate_type}\u{0}{aggregate_id}")
}

impl Verifier {
    /// A verifier against `anchors` and the audit reader's `heads`.
    pub fn new(mut anchors: Vec<Anchor>, heads: Vec<Head>) -> Self {
        anchors.sort_by_key(|a| std::cmp::Reverse(a.position));
        let chains = heads
            .into_iter()
            .map(|h| {
                let head = chain::to_hash(&h.hash).map(|hash| (h.sequence, hash));
                (
                    chain_key(&h.aggregate_type, &h.aggregate_id),
                    Chain {
                        last_sequence: 0,
                        last_hash: GENESIS,
                        head,
                    },
                )
            })
            .collect();
        Self {
            chains,
            anchors,
            running: GENESIS,
            count: 0,
            last_good: None,
            report: Report::default(),
            anchor_findings: vec![],
        }
    }

    /// Checks the next event.
    pub fn check(&mut self, e: &StoredEvent) {
        let position = e.position();
        while self.anchors.last().is_some_and(|a| a.position < position) {
            if let Some(anchor) = self.anchors.pop() {
                self.check_anchor(anchor);
            }
        }
        let chain = self
            .chains
            .entry(chain_key(&e.aggregate_type, &e.aggregate_id))
            .or_insert(Chain {
                last_sequence: 0,
                last_hash: GENESIS,
                head: None,
            });
        if e.sequence == chain.last_sequence + 1 {
            if chain::event_hash(&chain.last_hash, e)[..] != e.hash[..] {
                self.report.findings.push(Finding::Changed {
                    request: e.aggregate_id.clone(),
                    sequence: e.sequence,
                    event_id: e.event_id,
                });
            }
        } else {
            self.report.findings.push(Finding::Gap {
                request: e.aggregate_id.clone(),
                sequence: e.sequence,
                after: chain.last_sequence,
            });
        }
        if let Some((sequence, hash)) = chain.head {
            if sequence == e.sequence && hash[..] != e.hash[..] {
                self.report.findings.push(Finding::Rehashed {
                    request: e.aggregate_id.clone(),
                    sequence: e.sequence,
                    event_id: e.event_id,
                });
            }
        }
        chain.last_sequence = e.sequence;
        chain.last_hash = chain::to_hash(&e.hash).unwrap_or(GENESIS);
        self.running = chain::running_hash(&self.running, position, &e.hash);
        self.count += 1;
        self.report.events += 1;
        self.report.up_to = Some(position);
    }

    fn check_anchor(&mut self, anchor: Anchor) {
        if anchor.event_count == self.count && anchor.running_hash == self.running {
            self.report.anchors += 1;
            self.last_good = Some(anchor.label);
        } else {
            self.anchor_findings.push(Finding::Anchor {
                label: anchor.label,
                position: anchor.position,
                expected: anchor.event_count,
                found: self.count,
                since: self.last_good.clone(),
                later: 0,
            });
        }
    }

    /// Checks the anchors past the last event and the requests whose tail is gone; the report.
    pub fn finish(mut self) -> Report {
        while let Some(anchor) = self.anchors.pop() {
            self.check_anchor(anchor);
        }
        let mut missing: Vec<Finding> = self
            .chains
            .iter()
            .filter_map(|(key, chain)| {
                let (seen, _) = chain.head?;
                (chain.last_sequence < seen).then(|| Finding::Missing {
                    request: key
                        .split_once('\u{0}')
                        .map_or(key.as_str(), |(_, id)| id)
                        .to_owned(),
                    from: chain.last_sequence + 1,
                    to: seen,
                })
            })
            .collect();
        missing.sort_by(|a, b| a.event().cmp(&b.event()));
        self.report.requests = self.chains.len();
        self.report.findings.extend(missing);
        let failed = self.anchor_findings.len();
        if let Some(mut first) = self.anchor_findings.into_iter().next() {
            if let Finding::Anchor { later, .. } = &mut first {
                *later = failed - 1;
            }
            self.report.findings.push(first);
        }
        self.report
    }
}

/// Checks the whole store against the database's anchors and `external` ones (from exported
/// files), calling `progress` with the number of events checked after each page.
pub async fn verify_all(
    pool: &PgPool,
    external: Vec<Anchor>,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, AuditError> {
    // Anchors and heads first, then the horizon: everything they cover is below it.
    let stored = anchors::from_database(pool).await?;
    let rewritten: Vec<Finding> = external
        .iter()
        .filter(|x| x.checkpoint.is_some())
        .filter(|x| {
            !stored.iter().any(|s| {
                s.checkpoint == x.checkpoint
                    && s.position == x.position
                    && s.event_count == x.event_count
                    && s.running_hash == x.running_hash
            })
        })
        .map(|x| Finding::Rewritten {
            label: x.label.clone(),
        })
        .collect();
    let heads = sql::heads(pool).await?;
    let horizon = crate::feed::read::horizon(pool).await?;
    let mut verifier = Verifier::new(stored.into_iter().chain(external).collect(), heads);

    let fetch = |after: Position| {
        let pool = pool.clone();
        tokio::spawn(async move { sql::page(&pool, after, horizon, None, PAGE).await })
    };
    let mut next = Some(fetch(Position::START));
    while let Some(pending) = next.take() {
        let page = pending
            .await
            .map_err(|e| AuditError::Interrupted(e.to_string()))??;
        if page.len() as i64 == PAGE {
            if let Some(last) = page.last() {
                next = Some(fetch(last.position()));
            }
        }
        for event in &page {
            verifier.check(event);
        }
        progress(verifier.report.events);
    }
    let mut report = verifier.finish();
    report.findings.extend(rewritten);
    Ok(report)
}

/// Checks one request's chain and its last event as the audit reader saw it. `None` when the
/// store has no such request and the audit reader never saw one.
pub async fn verify_request(pool: &PgPool, id: Uuid) -> Result<Option<Report>, AuditError> {
    let aggregate_id = id.to_string();
    let head = sql::head_of(pool, ApprovalRequest::TYPE, &aggregate_id).await?;
    let events = sql::events_of(pool, ApprovalRequest::TYPE, &aggregate_id).await?;
    if events.is_empty() && head.is_none() {
        return Ok(None);
    }
    let mut verifier = Verifier::new(vec![], head.into_iter().collect());
    for event in &events {
        verifier.check(event);
    }
    Ok(Some(verifier.finish()))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    /// A well-chained store of `requests` requests with `per_request` events each, in feed order.
    fn store(requests: i64, per_request: i64) -> Vec<StoredEvent> {
        let mut events = vec![];
        let mut last: HashMap<i64, Hash> = HashMap::new();
        let mut global_id = 0;
        for sequence in 1..=per_request {
            for r in 0..requests {
                global_id += 1;
                let mut e = StoredEvent {
                    tx_id: 100 + global_id,
                    global_id,
                    aggregate_type: "ApprovalRequest".into(),
                    aggregate_id: format!("r{r}"),
                    sequence,
                    event_type: "T".into(),
                    event_version: "1.0".into(),
                    payload: format!("{{\"n\": {global_id}}}"),
                    metadata: "{}".into(),
                    event_id: Uuid::from_u128(global_id as u128),
                    recorded_at: Utc
                        .timestamp_opt(1_700_000_000 + global_id, 0)
                        .single()
                        .unwrap_or_default(),
                    hash: vec![],
                };
                let prev = last.get(&r).copied().unwrap_or(GENESIS);
                let hash = chain::event_hash(&prev, &e);
                e.hash = hash.to_vec();
                last.insert(r, hash);
                events.push(e);
            }
        }
        events
    }

    /// The audit reader's view of `events`: an anchor after every `every` events and the heads.
    fn ledger(events: &[StoredEvent], every: usize) -> (Vec<Anchor>, Vec<Head>) {
        let mut anchors = vec![];
        let mut heads: HashMap<String, Head> = HashMap::new();
        let mut running = GENESIS;
        for (i, e) in events.iter().enumerate() {
            running = chain::running_hash(&running, e.position(), &e.hash);
            heads.insert(
                e.aggregate_id.clone(),
                Head {
                    aggregate_type: e.aggregate_type.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    sequence: e.sequence,
                    hash: e.hash.clone(),
                },
            );
            if (i + 1) % every == 0 {
                anchors.push(Anchor {
                    label: format!("checkpoint #{}", i + 1),
                    checkpoint: Some(i as i64 + 1),
                    position: e.position(),
                    event_count: i as i64 + 1,
                    running_hash: running,
                });
            }
        }
        (anchors, heads.into_values().collect())
    }

    fn verify(events: &[StoredEvent], anchors: Vec<Anchor>, heads: Vec<Head>) -> Report {
        let mut v = Verifier::new(anchors, heads);
        for e in events {
            v.check(e);
        }
        v.finish()
    }

    #[test]
    fn an_untouched_store_is_intact() {
        let events = store(3, 4);
        let (anchors, heads) = ledger(&events, 5);
        let report = verify(&events, anchors, heads);
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!(report.events, 12);
        assert_eq!(report.requests, 3);
        assert_eq!(report.anchors, 2);
    }

    #[test]
    fn an_edited_payload_is_named_by_request_and_sequence() {
        let mut events = store(3, 4);
        let (anchors, heads) = ledger(&events, 5);
        events[4].payload = "{\"n\": 0}".into();
        let report = verify(&events, anchors, heads);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].event(), Some(("r1", 2)));
    }

    #[test]
    fn an_edited_and_re_hashed_request_is_caught_by_the_audit_ledger() {
        let mut events = store(2, 3);
        let (anchors, heads) = ledger(&events, 2);
        // r0's events are at indexes 0, 2, 4: change the second and re-chain the rest.
        events[2].payload = "{\"n\": 0}".into();
        let mut prev = chain::to_hash(&events[0].hash).unwrap_or(GENESIS);
        for i in [2, 4] {
            let hash = chain::event_hash(&prev, &events[i]);
            events[i].hash = hash.to_vec();
            prev = hash;
        }
        let report = verify(&events, anchors, heads);
        assert_eq!(report.findings[0].event(), Some(("r0", 3)));
        assert!(matches!(report.findings[0], Finding::Rehashed { .. }));
        assert!(report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::Anchor { .. })));
    }

    #[test]
    fn a_cut_off_tail_and_a_removed_request_are_named() {
        let events = store(3, 3);
        let (anchors, heads) = ledger(&events, 100);
        // Drop r2's last event and every event of r1.
        let kept: Vec<StoredEvent> = events
            .iter()
            .filter(|e| !(e.aggregate_id == "r2" && e.sequence == 3) && e.aggregate_id != "r1")
            .cloned()
            .collect();
        let report = verify(&kept, anchors, heads);
        let named: Vec<_> = report.findings.iter().filter_map(Finding::event).collect();
        assert_eq!(named, vec![("r1", 1), ("r2", 3)]);
        assert!(report.findings[0].to_string().contains("whole request"));
    }

    #[test]
    fn a_missing_middle_event_is_a_gap() {
        let events = store(1, 4);
        let kept: Vec<StoredEvent> = events.into_iter().filter(|e| e.sequence != 2).collect();
        let report = verify(&kept, vec![], vec![]);
        assert_eq!(report.findings[0].event(), Some(("r0", 3)));
        assert!(report.findings[0]
            .to_string()
            .contains("sequences 2 to 2 are missing"));
    }

    #[test]
    fn an_anchor_the_store_no_longer_reaches_fails() {
        let events = store(2, 2);
        let (anchors, _) = ledger(&events, 4);
        // An older backup: the last event never happened, the audit tables restored with it.
        let restored = &events[..3];
        let (_, old_heads) = ledger(restored, 100);
        let report = verify(restored, anchors, old_heads);
        assert!(matches!(
            report.findings.as_slice(),
            [Finding::Anchor {
                expected: 4,
                found: 3,
                ..
            }]
        ));
    }
}
