//! Projection `inbox`: one row per person and pending request that awaits their decision at its
//! current step. Delegates are approvers of the step, so their inbox holds what was handed to
//! them. A step's groups get rows of their own (user id `group <name>`, which no person's id can
//! be), and the query adds to a person's own items those of their groups and of the people they
//! stand in for (`absences`), resolved as it reads, so absences need no timer. The order is "nearest deadline first": the nearer of the request's due time and its
//! current step's deadline (none last), then submission, then id.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::fold::fold_batch;
use crate::write::BatchWrite;
use crate::{FeedEvent, LoadedStates, Projection, ProjectionError, Schema};

/// The projection.
#[derive(Debug, Clone)]
pub struct InboxProjection {
    state_table: String,
    write_states: String,
    write_items: String,
    write_gone: String,
}

/// The sort key of a request with no due time: after every real one.
fn no_due_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl InboxProjection {
    /// Its name.
    pub const NAME: &'static str = "inbox";

    /// The projection writing to the tables of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let inbox = schema.table("rm_inbox");
        let states = schema.table("rm_inbox_state");
        Self {
            state_table: states.clone(),
            // The states, the items of every changed request (kept rows updated, new ones
            // inserted), and the rows of those requests no longer pending for their person
            // removed. The DELETE sees the table as it was before the statement, and spares the
            // rows the upsert touched.
            write_states: format!(
                "INSERT INTO {states} (request_id, state) \
                 SELECT * FROM UNNEST($1::uuid[], $2::jsonb[]) WHERE {{gate}} \
                 ON CONFLICT (request_id) DO UPDATE SET state = EXCLUDED.state"
            ),
            write_items: format!(
                "INSERT INTO {inbox} (user_id, request_id, system, kind, title, amount_value, \
                     amount_currency, requester, submitted_at, due_at, due_key, step, status, \
                     version, step_due_at, decided) \
                 SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, \
                     COALESCE(string_to_array(NULLIF(c16, ''), ' '), '{{}}') \
                 FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], \
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], \
                     $10::timestamptz[], $11::timestamptz[], $12::int4[], $13::text[], \
                     $14::int8[], $15::timestamptz[], $16::text[]) \
                     AS u(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16) \
                 WHERE {{gate}} \
                 ON CONFLICT (user_id, request_id) DO UPDATE SET system = EXCLUDED.system, \
                     kind = EXCLUDED.kind, title = EXCLUDED.title, \
                     amount_value = EXCLUDED.amount_value, \
                     amount_currency = EXCLUDED.amount_currency, \
                     requester = EXCLUDED.requester, submitted_at = EXCLUDED.submitted_at, \
                     due_at = EXCLUDED.due_at, due_key = EXCLUDED.due_key, \
                     step = EXCLUDED.step, status = EXCLUDED.status, version = EXCLUDED.version, \
                     step_due_at = EXCLUDED.step_due_at, decided = EXCLUDED.decided \
                 RETURNING user_id, request_id"
            ),
            // $1: the changed requests, as bound for the states.
            write_gone: format!(
                "DELETE FROM {inbox} AS old WHERE old.request_id = ANY($1) AND {{gate}} \
                     AND (old.user_id, old.request_id) NOT IN \
                         (SELECT user_id, request_id FROM inbox_items)"
            ),
        }
    }
}

#[derive(Default)]
struct ItemRows {
    user_id: Vec<String>,
    request_id: Vec<Uuid>,
    system: Vec<String>,
    kind: Vec<String>,
    title: Vec<String>,
    amount_value: Vec<Option<String>>,
    amount_currency: Vec<Option<String>>,
    requester: Vec<String>,
    submitted_at: Vec<DateTime<Utc>>,
    due_at: Vec<Option<DateTime<Utc>>>,
    due_key: Vec<DateTime<Utc>>,
    step: Vec<i32>,
    status: Vec<&'static str>,
    version: Vec<i64>,
    step_due_at: Vec<Option<DateTime<Utc>>>,
    /// Who decided the open step, space-separated (user ids hold no white space); empty for a
    /// person's own row.
    decided: Vec<String>,
}

impl Projection for InboxProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_inbox", "rm_inbox_state"]
    }

    fn state_table(&self) -> Option<(&str, &'static str)> {
        Some((&self.state_table, "request_id"))
    }

    fn write(
        &self,
        write: &mut BatchWrite,
        events: &[FeedEvent],
        states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        let mut folded = fold_batch(events, states)?;
        if folded.changed.is_empty() {
            return Ok(true);
        }
        let mut items = ItemRows::default();
        let mut state_json = Vec::with_capacity(folded.changed.len());
        for id in &folded.changed {
            let Some(r) = folded.states.get_mut(id) else {
                continue;
            };
            // The inbox never shows details; keeping them out keeps this table small.
            r.details = None;
            state_json.push(serde_json::to_value(&*r)?);
            let step_due_at = r.open_step().and_then(|step| step.due_at);
            let nearest = match (r.due_at, step_due_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let people = r
                .pending_approvers()
                .into_iter()
                .map(|u| (u.0.clone(), String::new()));
            let decided = r
                .decided_open_step()
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let groups = r
                .pending_groups()
                .iter()
                .map(|g| (group_key(g), decided.clone()));
            for (user, decided) in people.chain(groups) {
                items.user_id.push(user);
                items.decided.push(decided);
                items.request_id.push(*id);
                items.system.push(r.system.0.clone());
                items.kind.push(r.kind.clone());
                items.title.push(r.title.clone());
                items
                    .amount_value
                    .push(r.amount.as_ref().map(|m| m.value.to_string()));
                items
                    .amount_currency
                    .push(r.amount.as_ref().map(|m| m.currency.clone()));
                items.requester.push(r.requester.0.clone());
                items.submitted_at.push(r.submitted_at);
                items.due_at.push(r.due_at);
                items.due_key.push(nearest.unwrap_or_else(no_due_time));
                items.step_due_at.push(step_due_at);
                items
                    .step
                    .push(i32::try_from(r.current_step).unwrap_or(i32::MAX));
                items.status.push(r.status.as_str());
                items
                    .version
                    .push(i64::try_from(r.version).unwrap_or(i64::MAX));
            }
        }
        let states_at = write.bound();
        write.bind(&folded.changed)?;
        write.bind(&state_json)?;
        write.cte("inbox_states", &self.write_states, states_at);
        let before = write.bound();
        write.bind(&items.user_id)?;
        write.bind(&items.request_id)?;
        write.bind(&items.system)?;
        write.bind(&items.kind)?;
        write.bind(&items.title)?;
        write.bind(&items.amount_value)?;
        write.bind(&items.amount_currency)?;
        write.bind(&items.requester)?;
        write.bind(&items.submitted_at)?;
        write.bind(&items.due_at)?;
        write.bind(&items.due_key)?;
        write.bind(&items.step)?;
        write.bind(&items.status)?;
        write.bind(&items.version)?;
        write.bind(&items.step_due_at)?;
        write.bind(&items.decided)?;
        write.cte("inbox_items", &self.write_items, before);
        write.cte("inbox_gone", &self.write_gone, states_at);
        Ok(true)
    }
}

/// The inbox key of a group's items: `group <name>`. A user id never holds white space, so
/// no person's items share it.
pub fn group_key(group: &str) -> String {
    format!("group {group}")
}

/// One item of a person's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InboxRow {
    /// The request.
    pub request_id: Uuid,
    /// Its system.
    pub system: String,
    /// Its kind.
    pub kind: String,
    /// Its title.
    pub title: String,
    /// Its amount's decimal string.
    pub amount_value: Option<String>,
    /// Its amount's currency.
    pub amount_currency: Option<String>,
    /// Who asked.
    pub requester: String,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
    /// The sort key: the nearer of `due_at` and `step_due_at`, none last.
    pub due_key: DateTime<Utc>,
    /// When its current step is due.
    pub step_due_at: Option<DateTime<Utc>>,
    /// The current step's index.
    pub step: i32,
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: i64,
}

/// Where a page of the inbox ends: the sort key of its last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxCursor {
    due_key: DateTime<Utc>,
    submitted_at: DateTime<Utc>,
    request_id: Uuid,
}

impl InboxCursor {
    /// The cursor after `row`.
    pub fn after(row: &InboxRow) -> Self {
        Self {
            due_key: row.due_key,
            submitted_at: row.submitted_at,
            request_id: row.request_id,
        }
    }

    /// The opaque text a client sends back.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.due_key.timestamp_micros(),
            self.submitted_at.timestamp_micros(),
            self.request_id.simple()
        )
    }

    /// Reads a cursor a client sent back; `None` when it is not one of ours. Its instants must
    /// lie in the years 1 to 99999, which PostgreSQL holds (it refuses a query with one beyond).
    pub fn decode(text: &str) -> Option<Self> {
        let instant = |micros: &str| {
            DateTime::from_timestamp_micros(micros.parse::<i64>().ok()?)
                .filter(|t| (1..=99_999).contains(&t.year()))
        };
        let mut parts = text.splitn(3, '.');
        let due_key = instant(parts.next()?)?;
        let submitted_at = instant(parts.next()?)?;
        let id = Uuid::try_parse(parts.next()?).ok()?;
        Some(Self {
            due_key,
            submitted_at,
            request_id: id,
        })
    }
}

/// What to show of an inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxQuery {
    /// Only this system's requests.
    pub system: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Items after this cursor.
    pub cursor: Option<InboxCursor>,
    /// At most this many items.
    pub limit: i64,
    /// The caller's groups, from their token: their items are the caller's too.
    pub groups: Vec<String>,
}

/// A page of an inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxPage {
    /// The items, nearest deadline first.
    pub items: Vec<InboxRow>,
    /// The cursor of the next page, when there is one.
    pub next: Option<InboxCursor>,
    /// How many items match the filters, on every page.
    pub total: i64,
}

/// A page of `user`'s inbox: their own items, their groups' ([`InboxQuery::groups`]) and those
/// of everyone they stand in for now (`rm_absences`, chains followed), each request once. Never
/// an item of a request the caller submitted, nor a group's item the caller has decided.
pub async fn list(pool: &PgPool, user: &str, q: &InboxQuery) -> Result<InboxPage, ProjectionError> {
    // Whose items are the caller's: the caller, the people they stand in for, their groups.
    let keys = format!(
        "WITH RECURSIVE {principals}, \
         keys(key) AS (SELECT person FROM principals \
             UNION SELECT 'group ' || g FROM UNNEST($3::text[]) AS g)",
        principals = crate::absences::PRINCIPALS_CTE,
    );
    let filters = "requester <> $1 AND ($4::text IS NULL OR system = $4) \
         AND ($5::text IS NULL OR kind = $5) \
         AND (user_id NOT LIKE 'group %' OR NOT ($1 = ANY(decided)))";
    let columns = "request_id, system, kind, title, amount_value, amount_currency, requester, \
         submitted_at, due_at, due_key, step_due_at, step, status, version";
    // Each key's items through the index: `OFFSET 0` keeps the lateral read from being merged
    // into a join, which is planned as a hash join over the whole table (the planner cannot tell
    // that `keys` holds a row or two): 100 ms instead of 2 on 200,000 items.
    let total = format!(
        "(SELECT count(DISTINCT t.request_id) FROM keys CROSS JOIN LATERAL ( \
             SELECT request_id FROM rm_inbox WHERE user_id = keys.key AND {filters} \
             OFFSET 0) AS t)"
    );
    // Each key's first page through the index, then each request once, then the page.
    let sql = format!(
        "{keys}, \
         candidates AS ( \
             SELECT DISTINCT ON (i.request_id) i.* FROM keys CROSS JOIN LATERAL ( \
                 SELECT {columns} FROM rm_inbox WHERE user_id = keys.key AND {filters} \
                   AND ($6::timestamptz IS NULL \
                        OR (due_key, submitted_at, request_id) > ($6, $7, $8)) \
                 ORDER BY due_key, submitted_at, request_id LIMIT $9) AS i \
             ORDER BY i.request_id) \
         SELECT {columns}, {total} AS total FROM candidates \
         ORDER BY due_key, submitted_at, request_id LIMIT $9"
    );
    let cursor = q.cursor;
    let now = chrono::Utc::now();
    let mut fetched: Vec<InboxRowWithTotal> = sqlx::query_as(&sql)
        .bind(user)
        .bind(now)
        .bind(&q.groups)
        .bind(&q.system)
        .bind(&q.kind)
        .bind(cursor.map(|c| c.due_key))
        .bind(cursor.map(|c| c.submitted_at))
        .bind(cursor.map(|c| c.request_id))
        .bind(q.limit + 1)
        .fetch_all(pool)
        .await?;
    let total = match fetched.first() {
        Some(first) => first.total,
        None if cursor.is_none() => 0,
        None => {
            let (total,): (i64,) = sqlx::query_as(&format!("{keys} SELECT {total}"))
                .bind(user)
                .bind(now)
                .bind(&q.groups)
                .bind(&q.system)
                .bind(&q.kind)
                .fetch_one(pool)
                .await?;
            total
        }
    };
    let has_more = fetched.len() as i64 > q.limit;
    fetched.truncate(usize::try_from(q.limit).unwrap_or(0));
    let items: Vec<InboxRow> = fetched.into_iter().map(|r| r.row).collect();
    let next = if has_more {
        items.last().map(InboxCursor::after)
    } else {
        None
    };
    Ok(InboxPage { items, next, total })
}

/// The requests awaiting `user`'s own decision (not their groups', not those of people they
/// stand in for): what an administrator's reassignment moves.
pub async fn awaiting(pool: &PgPool, user: &str) -> Result<Vec<Uuid>, ProjectionError> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT request_id FROM rm_inbox WHERE user_id = $1 \
         ORDER BY due_key, submitted_at, request_id",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

#[derive(sqlx::FromRow)]
struct InboxRowWithTotal {
    #[sqlx(flatten)]
    row: InboxRow,
    total: i64,
}
