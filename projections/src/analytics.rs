//! Projection `analytics`: where approvals get stuck. One row per round of a request (its
//! system, kind, submission and how it ended), one per step occurrence that became current
//! (when, its deadline, when and how it ended, who was asked), one per decision; and the report
//! that `GET /v1/analytics/approvals` and `approval-ledger report` answer from them.
//!
//! It keeps no folded state, so it reads nothing before it writes: a batch collapses into new
//! rows and patches of rows that exist. What an event needs and does not carry is in the rows:
//! a round's row keeps its steps' plan (approvers, `due_in`), so a step's row can be written
//! when it becomes current; an event's round is the one whose opening sequence is the greatest
//! at or below the event's. Every value is set once (a round ends once, a step ends once, a
//! decision is inserted under its sequence), first value winning, so replaying a batch changes
//! nothing (but for repeats in `asked`, which the report reads as a set).
//!
//! What it writes per event, as parts of the read models' one statement per batch: a
//! submission or resubmission inserts its round and first step (2 rows); an approval inserts
//! its decision (1), and when it completes a step closes it and opens the next one (or ends the
//! round); a rejection or return inserts its decision, closes the step and ends the round (3);
//! an expiry, withdrawal or cancellation closes the open step and ends the round (2); a
//! delegation or escalation adds to the step's `asked` (1). Reminders, questions, answers,
//! comments and absences write nothing.

use std::collections::HashMap;

use approval_aggregates::{ApprovalEvent, StepSpec};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::write::BatchWrite;
use crate::{FeedEvent, LoadedStates, Projection, ProjectionError, Schema};

/// The projection.
#[derive(Debug, Clone)]
pub struct AnalyticsProjection {
    write_rounds: String,
    write_rounds_ended: String,
    write_steps: String,
    write_steps_ended: String,
    write_decisions: String,
}

/// The SQL of the round an event of request `t.id` at sequence `t.seq` belongs to, when the
/// batch does not say (`t.round` null): the latest opened at or before it.
fn round_of(rounds: &str) -> String {
    format!(
        "COALESCE(t.round, (SELECT max(x.round) FROM {rounds} x \
             WHERE x.request_id = t.id AND x.since_seq <= t.seq))"
    )
}

impl AnalyticsProjection {
    /// Its name.
    pub const NAME: &'static str = "analytics";

    /// The projection writing to the tables of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let rounds = schema.table("rm_analytics_rounds");
        let steps = schema.table("rm_analytics_steps");
        let decisions = schema.table("rm_analytics_decisions");
        let round = round_of(&rounds);
        Self {
            // Rounds opened in this batch, as the batch leaves them. A resubmission's system is
            // its request's, from the earlier round's row when the batch does not hold it.
            write_rounds: format!(
                "INSERT INTO {rounds} (request_id, round, since_seq, system, kind, submitted_at, \
                     plan, outcome, ended_at) \
                 SELECT t.id, t.round, t.seq, COALESCE(t.system, (SELECT x.system FROM {rounds} x \
                         WHERE x.request_id = t.id ORDER BY x.round DESC LIMIT 1), ''), \
                     t.kind, t.at, t.plan, t.outcome, t.ended \
                 FROM UNNEST($1::uuid[], $2::int4[], $3::int8[], $4::text[], $5::text[], \
                     $6::timestamptz[], $7::jsonb[], $8::text[], $9::timestamptz[]) \
                     AS t(id, round, seq, system, kind, at, plan, outcome, ended) \
                 WHERE {{gate}} \
                 ON CONFLICT (request_id, round) DO NOTHING"
            ),
            // Rounds that existed before the batch and ended in it.
            write_rounds_ended: format!(
                "UPDATE {rounds} AS r SET outcome = COALESCE(r.outcome, t.outcome), \
                     ended_at = COALESCE(r.ended_at, t.ended) \
                 FROM UNNEST($1::uuid[], $2::int4[], $3::int8[], $4::text[], $5::timestamptz[]) \
                     AS t(id, round, seq, outcome, ended) \
                 WHERE r.request_id = t.id AND r.round = {round} AND {{gate}}"
            ),
            // Steps that became current in this batch, as the batch leaves them. When the batch
            // does not hold the round's opening (`t.asked` null), who is asked and the deadline
            // come from the round's plan; a step past the plan's end (the last one completed)
            // gets no row.
            write_steps: format!(
                "INSERT INTO {steps} (request_id, round, step, asked, became_current_at, due_at, \
                     ended_at, outcome) \
                 SELECT t.id, q.round, t.step, \
                     COALESCE(t.asked, p.plan -> t.step -> 'asked', '[]'::jsonb) || t.added, \
                     t.at, CASE WHEN t.asked IS NULL \
                         THEN t.at + make_interval(secs => (p.plan -> t.step ->> 'due_in')::float8) \
                         ELSE t.due END, \
                     t.ended, t.outcome \
                 FROM UNNEST($1::uuid[], $2::int4[], $3::int8[], $4::int4[], $5::jsonb[], \
                     $6::jsonb[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], \
                     $10::text[]) AS t(id, round, seq, step, asked, added, at, due, ended, outcome) \
                 CROSS JOIN LATERAL (SELECT {round} AS round) AS q \
                 LEFT JOIN {rounds} p ON p.request_id = t.id AND p.round = q.round \
                 WHERE q.round IS NOT NULL \
                     AND (t.asked IS NOT NULL OR p.plan -> t.step IS NOT NULL) AND {{gate}} \
                 ON CONFLICT (request_id, round, step) DO NOTHING"
            ),
            // Steps that existed before the batch: ended, or with more people asked. `t.step`
            // null: the round's open step (a final event names no step).
            write_steps_ended: format!(
                "UPDATE {steps} AS s SET ended_at = COALESCE(s.ended_at, t.ended), \
                     outcome = COALESCE(s.outcome, t.outcome), asked = s.asked || t.added \
                 FROM UNNEST($1::uuid[], $2::int4[], $3::int8[], $4::int4[], $5::timestamptz[], \
                     $6::text[], $7::jsonb[]) AS t(id, round, seq, step, ended, outcome, added) \
                 WHERE s.request_id = t.id AND s.round = {round} \
                     AND (s.step = t.step OR (t.step IS NULL AND s.ended_at IS NULL)) AND {{gate}}"
            ),
            write_decisions: format!(
                "INSERT INTO {decisions} (request_id, sequence, round, step, person, decided_by, \
                     verdict, decided_at) \
                 SELECT t.id, t.seq, q.round, t.step, t.person, t.decider, t.verdict, t.at \
                 FROM UNNEST($1::uuid[], $2::int4[], $3::int8[], $4::int4[], $5::text[], \
                     $6::text[], $7::text[], $8::timestamptz[]) \
                     AS t(id, round, seq, step, person, decider, verdict, at) \
                 CROSS JOIN LATERAL (SELECT {round} AS round) AS q \
                 WHERE q.round IS NOT NULL AND {{gate}} \
                 ON CONFLICT (request_id, sequence) DO NOTHING"
            ),
        }
    }
}

/// A round opened in the batch.
struct NewRound {
    id: Uuid,
    round: i32,
    seq: i64,
    system: Option<String>,
    kind: String,
    at: DateTime<Utc>,
    plan: Vec<StepSpec>,
    outcome: Option<&'static str>,
    ended: Option<DateTime<Utc>>,
}

/// A step that became current in the batch.
struct NewStep {
    id: Uuid,
    /// Known when the batch opened the round; else the SQL finds it, and the plan.
    round: Option<i32>,
    seq: i64,
    step: usize,
    /// Who its plan asks and its deadline, when the batch opened the round.
    planned: Option<(Vec<String>, Option<DateTime<Utc>>)>,
    added: Vec<String>,
    at: DateTime<Utc>,
    ended: Option<DateTime<Utc>>,
    outcome: Option<&'static str>,
}

/// What the batch changes of a step that existed before it.
struct StepPatch {
    id: Uuid,
    round: Option<i32>,
    seq: i64,
    /// `None`: the round's open step.
    step: Option<usize>,
    ended: Option<DateTime<Utc>>,
    outcome: Option<&'static str>,
    added: Vec<String>,
}

/// What the batch changes of a round that existed before it.
struct RoundPatch {
    id: Uuid,
    round: Option<i32>,
    seq: i64,
    outcome: &'static str,
    ended: DateTime<Utc>,
}

/// A decision.
struct Decision {
    id: Uuid,
    round: Option<i32>,
    seq: i64,
    step: usize,
    person: String,
    by: String,
    verdict: &'static str,
    at: DateTime<Utc>,
}

/// Where a request stands within the batch.
#[derive(Default, Clone, Copy)]
struct Track {
    /// The round the batch opened last, by index into the new rounds.
    opened: Option<usize>,
    /// The open step, once an event of the batch showed it.
    open_step: Option<usize>,
}

/// The batch folded into rows and patches.
#[derive(Default)]
struct Rows {
    rounds: Vec<NewRound>,
    rounds_ended: Vec<RoundPatch>,
    steps: Vec<NewStep>,
    steps_ended: Vec<StepPatch>,
    decisions: Vec<Decision>,
    track: HashMap<Uuid, Track>,
}

fn index(step: usize) -> i32 {
    i32::try_from(step).unwrap_or(i32::MAX)
}

impl Rows {
    fn round(&self, track: Track) -> Option<i32> {
        track.opened.map(|i| self.rounds[i].round)
    }

    fn open_round(
        &mut self,
        e: &FeedEvent,
        system: Option<String>,
        round: i32,
        kind: &str,
        steps: &[StepSpec],
    ) {
        let id = e.request_id.0;
        let at = e.event.at();
        self.rounds.push(NewRound {
            id,
            round,
            seq: e.sequence,
            system,
            kind: kind.to_owned(),
            at,
            plan: steps.to_vec(),
            outcome: None,
            ended: None,
        });
        let track = Track {
            opened: Some(self.rounds.len() - 1),
            open_step: None,
        };
        self.track.insert(id, track);
        self.become_current(e, 0, at);
    }

    /// Step `step` of the request's round becomes current at `at`.
    fn become_current(&mut self, e: &FeedEvent, step: usize, at: DateTime<Utc>) {
        let id = e.request_id.0;
        let mut track = self.track.get(&id).copied().unwrap_or_default();
        track.open_step = Some(step);
        self.track.insert(id, track);
        let planned: Option<(Vec<String>, Option<DateTime<Utc>>)> = match track.opened {
            Some(i) => match self.rounds[i].plan.get(step) {
                Some(spec) => Some((
                    spec.approvers.iter().map(|a| a.0.clone()).collect(),
                    spec.due_in.map(|d| at + d.to_chrono()),
                )),
                // Past the last step: the round is approved, no step opens.
                None => return,
            },
            None => None,
        };
        self.steps.push(NewStep {
            id,
            round: self.round(track),
            seq: e.sequence,
            step,
            planned,
            added: vec![],
            at,
            ended: None,
            outcome: None,
        });
    }

    /// The row or patch of step `step` (`None`: the open one) of the request's round.
    fn step_mut(&mut self, e: &FeedEvent, step: Option<usize>) -> Option<StepChange<'_>> {
        let id = e.request_id.0;
        let track = self.track.get(&id).copied().unwrap_or_default();
        let step = step.or(track.open_step);
        let round = self.round(track);
        if let Some(step) = step {
            if let Some(i) = self
                .steps
                .iter()
                .rposition(|s| s.id == id && s.round == round && s.step == step)
            {
                return Some(StepChange::New(&mut self.steps[i]));
            }
        }
        // A round the batch opened has all its steps' rows in the batch.
        if track.opened.is_some() {
            return None;
        }
        let i = match self
            .steps_ended
            .iter()
            .rposition(|p| p.id == id && p.step == step)
        {
            Some(i) => i,
            None => {
                self.steps_ended.push(StepPatch {
                    id,
                    round,
                    seq: e.sequence,
                    step,
                    ended: None,
                    outcome: None,
                    added: vec![],
                });
                self.steps_ended.len() - 1
            }
        };
        Some(StepChange::Patch(&mut self.steps_ended[i]))
    }

    fn end_step(&mut self, e: &FeedEvent, step: Option<usize>, outcome: &'static str) {
        let at = e.event.at();
        match self.step_mut(e, step) {
            Some(StepChange::New(s)) => {
                s.ended = s.ended.or(Some(at));
                s.outcome = s.outcome.or(Some(outcome));
            }
            Some(StepChange::Patch(p)) => {
                p.ended = p.ended.or(Some(at));
                p.outcome = p.outcome.or(Some(outcome));
            }
            None => {}
        }
    }

    fn ask(&mut self, e: &FeedEvent, step: usize, people: impl Iterator<Item = String>) {
        match self.step_mut(e, Some(step)) {
            Some(StepChange::New(s)) => s.added.extend(people),
            Some(StepChange::Patch(p)) => p.added.extend(people),
            None => {}
        }
    }

    fn end_round(&mut self, e: &FeedEvent, outcome: &'static str) {
        let id = e.request_id.0;
        let at = e.event.at();
        let track = self.track.get(&id).copied().unwrap_or_default();
        if let Some(i) = track.opened {
            let round = &mut self.rounds[i];
            round.outcome = round.outcome.or(Some(outcome));
            round.ended = round.ended.or(Some(at));
        } else if !self.rounds_ended.iter().any(|r| r.id == id) {
            self.rounds_ended.push(RoundPatch {
                id,
                round: None,
                seq: e.sequence,
                outcome,
                ended: at,
            });
        }
    }

    fn decide(
        &mut self,
        e: &FeedEvent,
        step: usize,
        person: &str,
        by: &str,
        verdict: &'static str,
    ) {
        let id = e.request_id.0;
        let mut track = self.track.get(&id).copied().unwrap_or_default();
        track.open_step = Some(step);
        self.track.insert(id, track);
        self.decisions.push(Decision {
            id,
            round: self.round(track),
            seq: e.sequence,
            step,
            person: person.to_owned(),
            by: by.to_owned(),
            verdict,
            at: e.event.at(),
        });
    }

    fn fold(&mut self, e: &FeedEvent) {
        let counted = |by: &approval_aggregates::UserId,
                       behalf: &Option<approval_aggregates::UserId>| {
            behalf.as_ref().unwrap_or(by).0.clone()
        };
        match &e.event {
            ApprovalEvent::RequestSubmitted {
                system,
                kind,
                steps,
                ..
            } => self.open_round(e, Some(system.0.clone()), 1, kind, steps),
            ApprovalEvent::RequestResubmitted {
                round, kind, steps, ..
            } => {
                // The system stays the request's: the earlier round's, when the batch has it.
                let id = e.request_id.0;
                let system = self
                    .track
                    .get(&id)
                    .and_then(|t| t.opened)
                    .and_then(|i| self.rounds[i].system.clone());
                let round = i32::try_from(*round).unwrap_or(i32::MAX);
                self.open_round(e, system, round, kind, steps);
            }
            ApprovalEvent::ApprovalRecorded {
                step,
                approver,
                on_behalf_of,
                ..
            } => {
                let person = counted(approver, on_behalf_of);
                self.decide(e, *step, &person, &approver.0, "approve");
            }
            ApprovalEvent::StepCompleted { step, at } => {
                self.end_step(e, Some(*step), "approved");
                self.become_current(e, step + 1, *at);
            }
            ApprovalEvent::RequestApproved { .. } => self.end_round(e, "approved"),
            ApprovalEvent::RequestRejected {
                step,
                decided_by,
                on_behalf_of,
                ..
            } => {
                let person = counted(decided_by, on_behalf_of);
                self.decide(e, *step, &person, &decided_by.0, "reject");
                self.end_step(e, Some(*step), "rejected");
                self.end_round(e, "rejected");
            }
            ApprovalEvent::RequestReturned {
                step,
                decided_by,
                on_behalf_of,
                ..
            } => {
                let person = counted(decided_by, on_behalf_of);
                self.decide(e, *step, &person, &decided_by.0, "return");
                self.end_step(e, Some(*step), "returned");
                self.end_round(e, "returned");
            }
            ApprovalEvent::RequestExpired { .. } => {
                self.end_step(e, None, "expired");
                self.end_round(e, "expired");
            }
            ApprovalEvent::RequestWithdrawn { .. } => {
                self.end_step(e, None, "withdrawn");
                self.end_round(e, "withdrawn");
            }
            ApprovalEvent::RequestCancelled { .. } => {
                self.end_step(e, None, "cancelled");
                self.end_round(e, "cancelled");
            }
            ApprovalEvent::ApproverDelegated { step, to, .. } => {
                self.ask(e, *step, std::iter::once(to.0.clone()));
            }
            ApprovalEvent::StepEscalated { step, added, .. } => {
                self.ask(e, *step, added.iter().map(|u| u.0.clone()));
            }
            ApprovalEvent::ReminderSent { .. }
            | ApprovalEvent::InfoRequested { .. }
            | ApprovalEvent::InfoProvided { .. }
            | ApprovalEvent::CommentAdded { .. }
            | ApprovalEvent::AbsenceRecorded { .. }
            | ApprovalEvent::AbsenceEnded { .. } => {}
        }
    }
}

enum StepChange<'a> {
    New(&'a mut NewStep),
    Patch(&'a mut StepPatch),
}

fn people(list: &[String]) -> serde_json::Value {
    serde_json::Value::from(list.to_vec())
}

fn plan(steps: &[StepSpec]) -> serde_json::Value {
    serde_json::Value::Array(
        steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "asked": s.approvers.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
                    "due_in": s.due_in.map(|d| d.as_secs()),
                })
            })
            .collect(),
    )
}

impl Projection for AnalyticsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "rm_analytics_rounds",
            "rm_analytics_steps",
            "rm_analytics_decisions",
        ]
    }

    fn write(
        &self,
        write: &mut BatchWrite,
        events: &[FeedEvent],
        _states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        let mut rows = Rows::default();
        for e in events.iter().filter(|e| e.event.concerns_a_request()) {
            rows.fold(e);
        }

        if !rows.rounds.is_empty() {
            let r = &rows.rounds;
            let before = write.bound();
            write.bind(r.iter().map(|x| x.id).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.round).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.seq).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.system.clone()).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.kind.clone()).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.at).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| plan(&x.plan)).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.outcome).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.ended).collect::<Vec<_>>())?;
            write.cte("analytics_rounds", &self.write_rounds, before);
        }
        if !rows.rounds_ended.is_empty() {
            let r = &rows.rounds_ended;
            let before = write.bound();
            write.bind(r.iter().map(|x| x.id).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.round).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.seq).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.outcome).collect::<Vec<_>>())?;
            write.bind(r.iter().map(|x| x.ended).collect::<Vec<_>>())?;
            write.cte("analytics_rounds_ended", &self.write_rounds_ended, before);
        }
        if !rows.steps.is_empty() {
            let s = &rows.steps;
            let before = write.bound();
            write.bind(s.iter().map(|x| x.id).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.round).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.seq).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| index(x.step)).collect::<Vec<_>>())?;
            write.bind(
                s.iter()
                    .map(|x| x.planned.as_ref().map(|(asked, _)| people(asked)))
                    .collect::<Vec<_>>(),
            )?;
            write.bind(s.iter().map(|x| people(&x.added)).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.at).collect::<Vec<_>>())?;
            write.bind(
                s.iter()
                    .map(|x| x.planned.as_ref().and_then(|(_, due)| *due))
                    .collect::<Vec<_>>(),
            )?;
            write.bind(s.iter().map(|x| x.ended).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.outcome).collect::<Vec<_>>())?;
            write.cte("analytics_steps", &self.write_steps, before);
        }
        if !rows.steps_ended.is_empty() {
            let s = &rows.steps_ended;
            let before = write.bound();
            write.bind(s.iter().map(|x| x.id).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.round).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.seq).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.step.map(index)).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.ended).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| x.outcome).collect::<Vec<_>>())?;
            write.bind(s.iter().map(|x| people(&x.added)).collect::<Vec<_>>())?;
            write.cte("analytics_steps_ended", &self.write_steps_ended, before);
        }
        if !rows.decisions.is_empty() {
            let d = &rows.decisions;
            let before = write.bound();
            write.bind(d.iter().map(|x| x.id).collect::<Vec<_>>())?;
            write.bind(d.iter().map(|x| x.round).collect::<Vec<_>>())?;
            write.bind(d.iter().map(|x| x.seq).collect::<Vec<_>>())?;
            write.bind(d.iter().map(|x| index(x.step)).collect::<Vec<_>>())?;
            write.bind(d.iter().map(|x| x.person.clone()).collect::<Vec<_>>())?;
            write.bind(d.iter().map(|x| x.by.clone()).collect::<Vec<_>>())?;
            write.bind(d.iter().map(|x| x.verdict).collect::<Vec<_>>())?;
            write.bind(d.iter().map(|x| x.at).collect::<Vec<_>>())?;
            write.cte("analytics_decisions", &self.write_decisions, before);
        }
        Ok(true)
    }
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The request's system.
    System,
    /// The request's kind (of its round).
    Kind,
    /// The step's index, from 0.
    Step,
    /// The person asked to decide, or who decided.
    Approver,
}

/// The question of a report: rounds submitted in `[from, to)`, grouped; `now` decides which
/// open steps are past their deadline.
#[derive(Debug, Clone, Copy)]
pub struct ReportQuery {
    /// The window's start, inclusive.
    pub from: DateTime<Utc>,
    /// Its end, exclusive.
    pub to: DateTime<Utc>,
    /// The grouping.
    pub group_by: GroupBy,
    /// The moment open steps are measured against.
    pub now: DateTime<Utc>,
}

/// The default window: the 30 days before now.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

/// Why a report's window is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `from` or `to` is not an RFC 3339 timestamp.
    #[error("{0} must be an RFC 3339 timestamp such as 2026-12-01T00:00:00Z")]
    NotATimestamp(&'static str),
    /// `from` is after `to`.
    #[error("from must not be after to")]
    Reversed,
}

/// The window `[from, to)` of a report from its optional bounds: `from` defaults to 30 days
/// before `to`, `to` to now (or to `from`, when only a `from` later than now is given: an empty
/// window). Only bounds given in the wrong order are refused.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), WindowError> {
    let parse = |text: Option<&str>, name: &'static str| {
        text.map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| WindowError::NotATimestamp(name))
        })
        .transpose()
    };
    let (from, to) = (parse(from, "from")?, parse(to, "to")?);
    match (from, to) {
        (Some(from), Some(to)) if from > to => Err(WindowError::Reversed),
        (Some(from), Some(to)) => Ok((from, to)),
        (Some(from), None) => Ok((from, now.max(from))),
        (None, to) => {
            let to = to.unwrap_or(now);
            Ok((to - Duration::days(DEFAULT_WINDOW_DAYS), to))
        }
    }
}

/// One group of a report.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct GroupRow {
    /// The group's key: a system, a kind, a step's index, a person.
    pub key: String,
    /// Rounds submitted (system, kind); step occurrences that became current (step); step
    /// occurrences the person was asked to decide or decided (approver).
    pub submitted: i64,
    /// Of those, the ones decided: approved, rejected or returned (for an approver: their own
    /// decisions).
    pub decided: i64,
    /// Approved (a round approved; a step whose rule was met; an approver's approvals).
    pub approved: i64,
    /// Rejected.
    pub rejected: i64,
    /// Returned to the requester.
    pub returned: i64,
    /// Expired (a round; the step that was open; the approver had not decided it).
    pub expired: i64,
    /// The median of the seconds from a step becoming current to its decision (the
    /// approver's own decision); null when none was decided.
    pub median_s: Option<f64>,
    /// Their 90th percentile.
    pub p90_s: Option<f64>,
    /// Step occurrences whose deadline passed before they ended (the approver decided), or
    /// that are still open past it.
    pub overdue: i64,
}

/// The report of `query`, one row per group in the order of its key.
pub async fn report(pool: &PgPool, query: &ReportQuery) -> Result<Vec<GroupRow>, ProjectionError> {
    const WINDOW: &str = "r AS (SELECT * FROM rm_analytics_rounds \
             WHERE submitted_at >= $1 AND submitted_at < $2), \
         s AS (SELECT s.* FROM r JOIN rm_analytics_steps s \
             ON s.request_id = r.request_id AND s.round = r.round)";
    const DECIDED: &str = "s.outcome IN ('approved', 'rejected', 'returned')";
    const SECONDS: &str = "extract(epoch FROM s.ended_at - s.became_current_at)::float8";
    let rounds_then_steps = |key: &str| {
        format!(
            "WITH {WINDOW}, \
             counts AS (SELECT {key} AS key, count(*) AS submitted, \
                 count(*) FILTER (WHERE r.outcome IN ('approved', 'rejected', 'returned')) AS decided, \
                 count(*) FILTER (WHERE r.outcome = 'approved') AS approved, \
                 count(*) FILTER (WHERE r.outcome = 'rejected') AS rejected, \
                 count(*) FILTER (WHERE r.outcome = 'returned') AS returned, \
                 count(*) FILTER (WHERE r.outcome = 'expired') AS expired \
                 FROM r GROUP BY 1), \
             times AS (SELECT {key} AS key, \
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY {SECONDS}) FILTER (WHERE {DECIDED}) AS median_s, \
                 percentile_cont(0.9) WITHIN GROUP (ORDER BY {SECONDS}) FILTER (WHERE {DECIDED}) AS p90_s, \
                 count(*) FILTER (WHERE s.due_at < COALESCE(s.ended_at, $3)) AS overdue \
                 FROM r JOIN s ON s.request_id = r.request_id AND s.round = r.round GROUP BY 1) \
             SELECT c.key, c.submitted, c.decided, c.approved, c.rejected, c.returned, c.expired, \
                 t.median_s, t.p90_s, COALESCE(t.overdue, 0) AS overdue \
             FROM counts c LEFT JOIN times t ON t.key = c.key ORDER BY c.key"
        )
    };
    let sql = match query.group_by {
        GroupBy::System => rounds_then_steps("r.system"),
        GroupBy::Kind => rounds_then_steps("r.kind"),
        GroupBy::Step => format!(
            "WITH {WINDOW} \
             SELECT s.step::text AS key, count(*) AS submitted, \
                 count(*) FILTER (WHERE {DECIDED}) AS decided, \
                 count(*) FILTER (WHERE s.outcome = 'approved') AS approved, \
                 count(*) FILTER (WHERE s.outcome = 'rejected') AS rejected, \
                 count(*) FILTER (WHERE s.outcome = 'returned') AS returned, \
                 count(*) FILTER (WHERE s.outcome = 'expired') AS expired, \
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY {SECONDS}) FILTER (WHERE {DECIDED}) AS median_s, \
                 percentile_cont(0.9) WITHIN GROUP (ORDER BY {SECONDS}) FILTER (WHERE {DECIDED}) AS p90_s, \
                 count(*) FILTER (WHERE s.due_at < COALESCE(s.ended_at, $3)) AS overdue \
             FROM s GROUP BY s.step ORDER BY s.step"
        ),
        GroupBy::Approver => format!(
            "WITH {WINDOW}, \
             d AS (SELECT d.* FROM r JOIN rm_analytics_decisions d \
                 ON d.request_id = r.request_id AND d.round = r.round), \
             p AS (SELECT s.request_id, s.round, s.step, a.person \
                     FROM s CROSS JOIN LATERAL jsonb_array_elements_text(s.asked) AS a(person) \
                   UNION \
                   SELECT d.request_id, d.round, d.step, d.person FROM d), \
             x AS (SELECT p.person, s.became_current_at, s.due_at, s.ended_at, s.outcome, \
                     d.verdict, d.decided_at, \
                     extract(epoch FROM d.decided_at - s.became_current_at)::float8 AS seconds \
                   FROM p JOIN s ON s.request_id = p.request_id AND s.round = p.round \
                       AND s.step = p.step \
                   LEFT JOIN d ON d.request_id = p.request_id AND d.round = p.round \
                       AND d.step = p.step AND d.person = p.person) \
             SELECT person AS key, count(*) AS submitted, count(verdict) AS decided, \
                 count(*) FILTER (WHERE verdict = 'approve') AS approved, \
                 count(*) FILTER (WHERE verdict = 'reject') AS rejected, \
                 count(*) FILTER (WHERE verdict = 'return') AS returned, \
                 count(*) FILTER (WHERE verdict IS NULL AND outcome = 'expired') AS expired, \
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE verdict IS NOT NULL) AS median_s, \
                 percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds) FILTER (WHERE verdict IS NOT NULL) AS p90_s, \
                 count(*) FILTER (WHERE due_at < COALESCE(decided_at, ended_at, $3)) AS overdue \
             FROM x GROUP BY person ORDER BY person"
        ),
    };
    Ok(sqlx::query_as(&sql)
        .bind(query.from)
        .bind(query.to)
        .bind(query.now)
        .fetch_all(pool)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    use approval_aggregates::{Period, Reminder, RequestId, Rule, SystemId, UserId};
    use approval_feed::Position;

    fn event(sequence: i64, event: ApprovalEvent) -> FeedEvent {
        FeedEvent {
            position: Position {
                tx_id: sequence,
                global_id: sequence,
            },
            event_id: Uuid::from_u128(sequence as u128),
            request_id: RequestId(Uuid::from_u128(7)),
            sequence,
            event_type: event.type_name().to_owned(),
            event_version: event.version().to_owned(),
            event,
            payload: serde_json::Value::Null,
            metadata: HashMap::new(),
            recorded_at: at("2026-12-04T12:00:00Z"),
        }
    }

    fn submitted(now: DateTime<Utc>) -> ApprovalEvent {
        let mut first = StepSpec::new(vec![UserId::new("alice")], Rule::Any);
        first.due_in = Some(Period::from_secs(60));
        ApprovalEvent::RequestSubmitted {
            request_id: RequestId(Uuid::from_u128(7)),
            system: SystemId("erp".into()),
            external_ref: "PO-1".into(),
            kind: "purchase_order".into(),
            title: "PO 1".into(),
            requester: UserId::new("dina"),
            amount: None,
            steps: vec![first, StepSpec::new(vec![UserId::new("bob")], Rule::Any)],
            due_at: None,
            details: None,
            link: None,
            at: now,
            attachments: vec![],
        }
    }

    fn approval(step: usize, who: &str, now: DateTime<Utc>) -> ApprovalEvent {
        ApprovalEvent::ApprovalRecorded {
            step,
            approver: UserId::new(who),
            comment: None,
            seen_version: 1,
            on_behalf_of: None,
            at: now,
        }
    }

    fn folded(events: &[FeedEvent]) -> Rows {
        let mut rows = Rows::default();
        for e in events {
            rows.fold(e);
        }
        rows
    }

    #[test]
    fn a_request_submitted_and_approved_in_one_batch_is_new_rows_only() {
        let t0 = at("2026-12-04T12:00:00Z");
        let t1 = at("2026-12-04T12:00:10Z");
        let t2 = at("2026-12-04T12:00:30Z");
        let rows = folded(&[
            event(1, submitted(t0)),
            event(2, approval(0, "alice", t1)),
            event(3, ApprovalEvent::StepCompleted { step: 0, at: t1 }),
            event(4, approval(1, "bob", t2)),
            event(5, ApprovalEvent::StepCompleted { step: 1, at: t2 }),
            event(
                6,
                ApprovalEvent::RequestApproved {
                    decided_by: UserId::new("bob"),
                    comment: None,
                    at: t2,
                },
            ),
        ]);
        assert!(rows.rounds_ended.is_empty() && rows.steps_ended.is_empty());
        assert_eq!(rows.rounds.len(), 1);
        assert_eq!(rows.rounds[0].outcome, Some("approved"));
        assert_eq!(rows.rounds[0].ended, Some(t2));
        let steps: Vec<_> = rows
            .steps
            .iter()
            .map(|s| (s.step, s.round, s.at, s.ended, s.outcome))
            .collect();
        assert_eq!(
            steps,
            [
                (0, Some(1), t0, Some(t1), Some("approved")),
                (1, Some(1), t1, Some(t2), Some("approved")),
            ]
        );
        let due = rows.steps[0].planned.as_ref().and_then(|(_, due)| *due);
        assert_eq!(due, Some(at("2026-12-04T12:01:00Z")));
        let deciders: Vec<_> = rows
            .decisions
            .iter()
            .map(|d| (d.person.as_str(), d.step))
            .collect();
        assert_eq!(deciders, [("alice", 0), ("bob", 1)]);
    }

    #[test]
    fn events_of_a_request_from_an_earlier_batch_patch_its_rows_and_find_their_round() {
        let t1 = at("2026-12-04T12:00:10Z");
        let t2 = at("2026-12-04T12:05:00Z");
        let rows = folded(&[
            event(3, ApprovalEvent::StepCompleted { step: 0, at: t1 }),
            event(
                4,
                ApprovalEvent::ReminderSent {
                    step: 1,
                    reminder: Reminder::Overdue,
                    due_at: t1,
                    to: vec![],
                    at: t1,
                },
            ),
            event(5, ApprovalEvent::RequestExpired { at: t2 }),
        ]);
        assert!(rows.rounds.is_empty() && rows.decisions.is_empty());
        // Step 0 closed in place; step 1 opened from the round's plan, and closed by the expiry.
        assert_eq!(rows.steps_ended.len(), 1);
        let patch = &rows.steps_ended[0];
        assert_eq!(
            (patch.round, patch.step, patch.outcome),
            (None, Some(0), Some("approved"))
        );
        assert_eq!(rows.steps.len(), 1);
        let open = &rows.steps[0];
        assert!(open.planned.is_none());
        assert_eq!(
            (open.step, open.ended, open.outcome),
            (1, Some(t2), Some("expired"))
        );
        assert_eq!(rows.rounds_ended.len(), 1);
        assert_eq!(rows.rounds_ended[0].outcome, "expired");
        assert_eq!(rows.rounds_ended[0].seq, 5);
    }

    #[test]
    fn reminders_questions_and_comments_write_nothing() {
        let t = at("2026-12-04T12:00:00Z");
        let rows = folded(&[
            event(
                2,
                ApprovalEvent::CommentAdded {
                    by: UserId::new("dina"),
                    text: "hi".into(),
                    at: t,
                },
            ),
            event(
                3,
                ApprovalEvent::InfoRequested {
                    step: 0,
                    asked_by: UserId::new("alice"),
                    question: "why?".into(),
                    at: t,
                },
            ),
        ]);
        assert!(rows.rounds.is_empty() && rows.rounds_ended.is_empty());
        assert!(rows.steps.is_empty() && rows.steps_ended.is_empty());
        assert!(rows.decisions.is_empty());
    }

    #[test]
    fn a_window_defaults_to_the_thirty_days_before_now() {
        let now = at("2026-12-04T12:00:00Z");
        assert_eq!(
            window(None, None, now),
            Ok((at("2026-11-04T12:00:00Z"), now))
        );
        assert_eq!(
            window(None, Some("2026-02-01T00:00:00+01:00"), now),
            Ok((at("2026-01-01T23:00:00Z"), at("2026-01-31T23:00:00Z")))
        );
        assert_eq!(
            window(Some("2026-12-01T00:00:00Z"), None, now),
            Ok((at("2026-12-01T00:00:00Z"), now))
        );
        let later = at("2027-01-01T00:00:00Z");
        assert_eq!(
            window(Some("2027-01-01T00:00:00Z"), None, now),
            Ok((later, later))
        );
    }

    #[test]
    fn a_window_refuses_bad_timestamps_and_reversed_bounds() {
        let now = at("2026-12-04T12:00:00Z");
        assert_eq!(
            window(Some("yesterday"), None, now),
            Err(WindowError::NotATimestamp("from"))
        );
        assert_eq!(
            window(None, Some("2026-12-01"), now),
            Err(WindowError::NotATimestamp("to"))
        );
        assert_eq!(
            window(
                Some("2026-12-02T00:00:00Z"),
                Some("2026-12-01T00:00:00Z"),
                now
            ),
            Err(WindowError::Reversed)
        );
    }
}
