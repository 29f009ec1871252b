//! Projection `lists`: every request as one row shaped like an inbox item (the caller's own
//! requests, `role=requester`), and one row per person and request they decided
//! (`role=decided`), both newest first with keyset pagination, and a search over title,
//! external reference and requester.
//!
//! It keeps no folded state: every value it stores is set outright by some event (a submission
//! or resubmission sets the request's fields, a completed step the step, a final event the
//! status, the sequence the version), so a batch's events collapse into one patch per request,
//! last value wins, and a row never takes a patch older than its version. Replaying a batch
//! changes nothing.

use std::collections::HashMap;

use approval_aggregates::ApprovalEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::write::BatchWrite;
use crate::{FeedEvent, LoadedStates, Projection, ProjectionError, Schema};

/// The projection.
#[derive(Debug, Clone)]
pub struct ListsProjection {
    write_new: String,
    write_moved: String,
    write_decided: String,
}

impl ListsProjection {
    /// Its name.
    pub const NAME: &'static str = "lists";

    /// The projection writing to the tables of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let list = schema.table("rm_list");
        let decided = schema.table("rm_list_decided");
        Self {
            // Requests submitted in this batch, as the batch leaves them. Rows that existed
            // before it take their patch below (the UPDATE sees the table as it was before the
            // statement, so it never touches the rows inserted here).
            write_new: format!(
                "INSERT INTO {list} (request_id, system, external_ref, kind, title, \
                     amount_value, amount_currency, requester, submitted_at, due_at, step, \
                     status, version, round, updated_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], \
                     $10::timestamptz[], $11::int4[], $12::text[], $13::int8[], $14::int4[], \
                     $15::timestamptz[]) WHERE {{gate}} \
                 ON CONFLICT (request_id) DO NOTHING"
            ),
            // $1 ids, $2 versions, $3 updated_at, $4 step, $5 status, $6 whether the
            // request's fields are set (a resubmission), $7.. those fields.
            write_moved: format!(
                "UPDATE {list} AS l SET version = t.v, updated_at = t.at, \
                     step = COALESCE(t.step, l.step), status = COALESCE(t.st, l.status), \
                     kind = CASE WHEN t.renewed THEN t.kind ELSE l.kind END, \
                     title = CASE WHEN t.renewed THEN t.title ELSE l.title END, \
                     amount_value = CASE WHEN t.renewed THEN t.av ELSE l.amount_value END, \
                     amount_currency = CASE WHEN t.renewed THEN t.ac ELSE l.amount_currency END, \
                     submitted_at = CASE WHEN t.renewed THEN t.sub ELSE l.submitted_at END, \
                     due_at = CASE WHEN t.renewed THEN t.due ELSE l.due_at END, \
                     round = CASE WHEN t.renewed THEN t.round ELSE l.round END \
                 FROM UNNEST($1::uuid[], $2::int8[], $3::timestamptz[], $4::int4[], \
                     $5::text[], $6::bool[], $7::text[], $8::text[], $9::text[], $10::text[], \
                     $11::timestamptz[], $12::timestamptz[], $13::int4[]) \
                     AS t(id, v, at, step, st, renewed, kind, title, av, ac, sub, due, round) \
                 WHERE l.request_id = t.id AND l.version < t.v AND {{gate}}"
            ),
            // A person's latest decision on a request; one row per person and request.
            write_decided: format!(
                "INSERT INTO {decided} (user_id, request_id, decided_at) \
                 SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::timestamptz[]) WHERE {{gate}} \
                 ON CONFLICT (user_id, request_id) DO UPDATE \
                     SET decided_at = GREATEST({decided}.decided_at, EXCLUDED.decided_at)"
            ),
        }
    }
}

/// The fields a submission or resubmission sets.
#[derive(Clone)]
struct Fields {
    kind: String,
    title: String,
    amount_value: Option<String>,
    amount_currency: Option<String>,
    submitted_at: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
    round: i32,
}

/// What a batch changes of one request, last value winning.
struct Patch {
    id: Uuid,
    /// Set when the batch holds the request's submission.
    new: Option<(String, String, String)>,
    version: i64,
    updated_at: DateTime<Utc>,
    step: Option<i32>,
    status: Option<&'static str>,
    fields: Option<Fields>,
}

fn fields_of(event: &ApprovalEvent) -> Option<Fields> {
    let amount = |a: &Option<approval_aggregates::Money>| {
        (
            a.as_ref().map(|m| m.value.to_string()),
            a.as_ref().map(|m| m.currency.clone()),
        )
    };
    match event {
        ApprovalEvent::RequestSubmitted {
            kind,
            title,
            amount: a,
            due_at,
            at,
            ..
        } => {
            let (amount_value, amount_currency) = amount(a);
            Some(Fields {
                kind: kind.clone(),
                title: title.clone(),
                amount_value,
                amount_currency,
                submitted_at: *at,
                due_at: *due_at,
                round: 1,
            })
        }
        ApprovalEvent::RequestResubmitted {
            round,
            kind,
            title,
            amount: a,
            due_at,
            at,
            ..
        } => {
            let (amount_value, amount_currency) = amount(a);
            Some(Fields {
                kind: kind.clone(),
                title: title.clone(),
                amount_value,
                amount_currency,
                submitted_at: *at,
                due_at: *due_at,
                round: i32::try_from(*round).unwrap_or(i32::MAX),
            })
        }
        _ => None,
    }
}

impl Projection for ListsProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_list", "rm_list_decided"]
    }

    fn write(
        &self,
        write: &mut BatchWrite,
        events: &[FeedEvent],
        _states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        let mut patches: Vec<Patch> = Vec::new();
        let mut slot_of: HashMap<Uuid, usize> = HashMap::new();
        let mut decided: HashMap<(String, Uuid), DateTime<Utc>> = HashMap::new();
        for e in events {
            let id = e.request_id.0;
            let slot = *slot_of.entry(id).or_insert_with(|| {
                patches.push(Patch {
                    id,
                    new: None,
                    version: 0,
                    updated_at: e.event.at(),
                    step: None,
                    status: None,
                    fields: None,
                });
                patches.len() - 1
            });
            let patch = &mut patches[slot];
            patch.version = patch.version.max(e.sequence);
            patch.updated_at = e.event.at();
            if let ApprovalEvent::RequestSubmitted {
                system,
                external_ref,
                requester,
                ..
            } = &e.event
            {
                patch.new = Some((system.0.clone(), external_ref.clone(), requester.0.clone()));
            }
            if let Some(fields) = fields_of(&e.event) {
                patch.fields = Some(fields);
                patch.step = Some(0);
            }
            if let Some(status) = e.event.status_after() {
                patch.status = Some(status.as_str());
            }
            match &e.event {
                ApprovalEvent::StepCompleted { step, .. } => {
                    patch.step = Some(i32::try_from(step + 1).unwrap_or(i32::MAX));
                }
                ApprovalEvent::ApprovalRecorded {
                    approver: by, at, ..
                }
                | ApprovalEvent::RequestRejected {
                    decided_by: by, at, ..
                }
                | ApprovalEvent::RequestReturned {
                    decided_by: by, at, ..
                } => {
                    let latest = decided.entry((by.0.clone(), id)).or_insert(*at);
                    *latest = (*latest).max(*at);
                }
                _ => {}
            }
        }

        let mut new = NewRows::default();
        let mut moved = MovedRows::default();
        for p in &patches {
            if let (Some((system, external_ref, requester)), Some(f)) = (&p.new, &p.fields) {
                new.id.push(p.id);
                new.system.push(system.clone());
                new.external_ref.push(external_ref.clone());
                new.kind.push(f.kind.clone());
                new.title.push(f.title.clone());
                new.amount_value.push(f.amount_value.clone());
                new.amount_currency.push(f.amount_currency.clone());
                new.requester.push(requester.clone());
                new.submitted_at.push(f.submitted_at);
                new.due_at.push(f.due_at);
                new.step.push(p.step.unwrap_or(0));
                new.status.push(p.status.unwrap_or("pending"));
                new.version.push(p.version);
                new.round.push(f.round);
                new.updated_at.push(p.updated_at);
            }
            moved.id.push(p.id);
            moved.version.push(p.version);
            moved.updated_at.push(p.updated_at);
            moved.step.push(p.step);
            moved.status.push(p.status);
            moved.full.push(p.fields.is_some());
            let f = p.fields.clone();
            moved.kind.push(f.as_ref().map(|f| f.kind.clone()));
            moved
                .amount_value
                .push(f.as_ref().and_then(|f| f.amount_value.clone()));
            moved
                .amount_currency
                .push(f.as_ref().and_then(|f| f.amount_currency.clone()));
            moved.submitted_at.push(f.as_ref().map(|f| f.submitted_at));
            moved.due_at.push(f.as_ref().and_then(|f| f.due_at));
            moved.round.push(f.as_ref().map(|f| f.round));
            moved.title.push(f.map(|f| f.title));
        }
        if patches.is_empty() {
            return Ok(true);
        }
        if !new.id.is_empty() {
            let before = write.bound();
            write.bind(&new.id)?;
            write.bind(&new.system)?;
            write.bind(&new.external_ref)?;
            write.bind(&new.kind)?;
            write.bind(&new.title)?;
            write.bind(&new.amount_value)?;
            write.bind(&new.amount_currency)?;
            write.bind(&new.requester)?;
            write.bind(&new.submitted_at)?;
            write.bind(&new.due_at)?;
            write.bind(&new.step)?;
            write.bind(&new.status)?;
            write.bind(&new.version)?;
            write.bind(&new.round)?;
            write.bind(&new.updated_at)?;
            write.cte("lists_new", &self.write_new, before);
        }
        let before = write.bound();
        write.bind(&moved.id)?;
        write.bind(&moved.version)?;
        write.bind(&moved.updated_at)?;
        write.bind(&moved.step)?;
        write.bind(&moved.status)?;
        write.bind(&moved.full)?;
        write.bind(&moved.kind)?;
        write.bind(&moved.title)?;
        write.bind(&moved.amount_value)?;
        write.bind(&moved.amount_currency)?;
        write.bind(&moved.submitted_at)?;
        write.bind(&moved.due_at)?;
        write.bind(&moved.round)?;
        write.cte("lists_moved", &self.write_moved, before);
        if !decided.is_empty() {
            let mut users = Vec::with_capacity(decided.len());
            let mut ids = Vec::with_capacity(decided.len());
            let mut ats = Vec::with_capacity(decided.len());
            for ((user, id), at) in decided {
                users.push(user);
                ids.push(id);
                ats.push(at);
            }
            let before = write.bound();
            write.bind(&users)?;
            write.bind(&ids)?;
            write.bind(&ats)?;
            write.cte("lists_decided", &self.write_decided, before);
        }
        Ok(true)
    }
}

#[derive(Default)]
struct NewRows {
    id: Vec<Uuid>,
    system: Vec<String>,
    external_ref: Vec<String>,
    kind: Vec<String>,
    title: Vec<String>,
    amount_value: Vec<Option<String>>,
    amount_currency: Vec<Option<String>>,
    requester: Vec<String>,
    submitted_at: Vec<DateTime<Utc>>,
    due_at: Vec<Option<DateTime<Utc>>>,
    step: Vec<i32>,
    status: Vec<&'static str>,
    version: Vec<i64>,
    round: Vec<i32>,
    updated_at: Vec<DateTime<Utc>>,
}

#[derive(Default)]
struct MovedRows {
    id: Vec<Uuid>,
    version: Vec<i64>,
    updated_at: Vec<DateTime<Utc>>,
    step: Vec<Option<i32>>,
    status: Vec<Option<&'static str>>,
    full: Vec<bool>,
    kind: Vec<Option<String>>,
    title: Vec<Option<String>>,
    amount_value: Vec<Option<String>>,
    amount_currency: Vec<Option<String>>,
    submitted_at: Vec<Option<DateTime<Utc>>>,
    due_at: Vec<Option<DateTime<Utc>>>,
    round: Vec<Option<i32>>,
}

/// Whose list: the caller's own requests, or the requests they decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The requests the caller submitted (as requester), newest submission first.
    Requester,
    /// The requests the caller decided at some step of some round, latest decision first.
    Decided,
}

/// One page's question.
#[derive(Debug, Clone)]
pub struct ListQuery<'a> {
    /// The caller.
    pub user: &'a str,
    /// Whose list.
    pub role: Role,
    /// Only requests with this status.
    pub status: Option<&'a str>,
    /// Only requests whose title, external reference or requester contain this text, in any
    /// case.
    pub q: Option<&'a str>,
    /// At most this many rows.
    pub limit: i64,
    /// Only rows after this key (the last row of the previous page): its sort time and id.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// One row of a list.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ListRow {
    /// The request.
    pub request_id: Uuid,
    /// Its system.
    pub system: String,
    /// The system's reference.
    pub external_ref: String,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: String,
    /// Its amount's value.
    pub amount_value: Option<String>,
    /// Its amount's currency.
    pub amount_currency: Option<String>,
    /// Who asked.
    pub requester: String,
    /// When its current round was submitted.
    pub submitted_at: DateTime<Utc>,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Its current step.
    pub step: i32,
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: i64,
    /// Its round.
    pub round: i32,
    /// When the caller last decided it (`role=decided` only).
    pub decided_at: Option<DateTime<Utc>>,
    /// The list's sort key: `submitted_at` or `decided_at`.
    pub sort_at: DateTime<Utc>,
}

/// `q` as a `LIKE` pattern that matches it anywhere, its wildcards escaped. The query
/// lower-cases it with PostgreSQL's `lower`, as the table's search column is.
fn contains_pattern(q: &str) -> String {
    let mut pattern = String::with_capacity(q.len() + 2);
    pattern.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A page of a list: newest first, after `query.after`.
///
/// The statement names only the filters given, so that each of its plans walks one index:
/// the role's (person, sort time, id) index from the cursor on, or the search's trigram index.
pub async fn page(pool: &PgPool, query: &ListQuery<'_>) -> Result<Vec<ListRow>, ProjectionError> {
    const COLUMNS: &str = "l.request_id, l.system, l.external_ref, l.kind, l.title, \
        l.amount_value, l.amount_currency, l.requester, l.submitted_at, l.due_at, l.step, \
        l.status, l.version, l.round";
    let (mut sql, key) = match query.role {
        Role::Requester => (
            format!(
                "SELECT {COLUMNS}, NULL::timestamptz AS decided_at, l.submitted_at AS sort_at \
                 FROM rm_list l WHERE l.requester = $1"
            ),
            "l.submitted_at",
        ),
        Role::Decided => (
            format!(
                "SELECT {COLUMNS}, d.decided_at, d.decided_at AS sort_at \
                 FROM rm_list_decided d JOIN rm_list l ON l.request_id = d.request_id \
                 WHERE d.user_id = $1"
            ),
            "d.decided_at",
        ),
    };
    let id = match query.role {
        Role::Requester => "l.request_id",
        Role::Decided => "d.request_id",
    };
    let mut n = 1;
    let mut next = || {
        n += 1;
        n
    };
    if query.status.is_some() {
        sql.push_str(&format!(" AND l.status = ${}", next()));
    }
    if query.q.is_some() {
        sql.push_str(&format!(" AND l.search LIKE lower(${})", next()));
    }
    if query.after.is_some() {
        let (a, b) = (next(), next());
        sql.push_str(&format!(" AND ({key}, {id}) < (${a}, ${b})"));
    }
    let limit = next();
    sql.push_str(&format!(" ORDER BY {key} DESC, {id} DESC LIMIT ${limit}"));
    let mut statement = sqlx::query_as(&sql).bind(query.user);
    if let Some(status) = query.status {
        statement = statement.bind(status);
    }
    if let Some(q) = query.q {
        statement = statement.bind(contains_pattern(q));
    }
    if let Some((at, id)) = query.after {
        statement = statement.bind(at).bind(id);
    }
    Ok(statement.bind(query.limit).fetch_all(pool).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_escapes_the_wildcards_of_like() {
        assert_eq!(contains_pattern("PO_4711"), "%PO\\_4711%");
        assert_eq!(contains_pattern("100%"), "%100\\%%");
        assert_eq!(contains_pattern("a\\b"), "%a\\\\b%");
    }
}
