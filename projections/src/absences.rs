//! Projection `absences`: every absence of every person, as their `Absences` aggregate recorded
//! it, and the queries that follow deputies: whom a person stands in for now (chains
//! resolved), whom a deputy's own absences lead to (to refuse a circle), and who stands in for
//! a person (to tell them of new items). Absence events concern no request; the request
//! projections pass them by.
//!
//! Chains are followed at most [`MAX_CHAIN`] people deep, so even a circle that slipped past
//! the check (two people naming each other at the same moment) cannot make a query run on.

use std::collections::HashMap;

use approval_aggregates::{ApprovalEvent, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::write::BatchWrite;
use crate::{FeedEvent, LoadedStates, Projection, ProjectionError, Schema};

/// How many deputies deep a chain is followed.
pub const MAX_CHAIN: i32 = 16;

/// The projection.
#[derive(Debug, Clone)]
pub struct AbsencesProjection {
    write_recorded: String,
    write_ended: String,
}

impl AbsencesProjection {
    /// Its name.
    pub const NAME: &'static str = "absences";

    /// The projection writing to the tables of `schema`.
    pub fn new(schema: &Schema) -> Self {
        let absences = schema.table("rm_absences");
        Self {
            // A replayed absence is there already: nothing changes.
            write_recorded: format!(
                "INSERT INTO {absences} (id, person, deputy, from_at, until_at, comment, \
                     recorded_at, ended_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
                     $5::timestamptz[], $6::text[], $7::timestamptz[], $8::timestamptz[]) \
                 WHERE {{gate}} ON CONFLICT (id) DO NOTHING"
            ),
            // Ends of absences recorded in earlier batches (the batch's own are folded into
            // their rows); a replayed end finds the row ended already.
            write_ended: format!(
                "UPDATE {absences} AS a SET ended_at = e.at, \
                     until_at = GREATEST(a.from_at, LEAST(a.until_at, e.at)) \
                 FROM UNNEST($1::uuid[], $2::timestamptz[]) AS e(id, at) \
                 WHERE a.id = e.id AND a.ended_at IS NULL AND {{gate}}"
            ),
        }
    }
}

#[derive(Default)]
struct Rows {
    id: Vec<Uuid>,
    person: Vec<String>,
    deputy: Vec<String>,
    from: Vec<DateTime<Utc>>,
    until: Vec<DateTime<Utc>>,
    comment: Vec<Option<String>>,
    recorded_at: Vec<DateTime<Utc>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
}

impl Projection for AbsencesProjection {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_absences"]
    }

    fn write(
        &self,
        write: &mut BatchWrite,
        events: &[FeedEvent],
        _states: LoadedStates,
    ) -> Result<bool, ProjectionError> {
        let mut rows = Rows::default();
        let mut slot_of: HashMap<Uuid, usize> = HashMap::new();
        let mut ended: (Vec<Uuid>, Vec<DateTime<Utc>>) = (vec![], vec![]);
        for e in events {
            match &e.event {
                ApprovalEvent::AbsenceRecorded {
                    person,
                    absence_id,
                    deputy,
                    from,
                    until,
                    comment,
                    at,
                } => {
                    slot_of.insert(*absence_id, rows.id.len());
                    rows.id.push(*absence_id);
                    rows.person.push(person.0.clone());
                    rows.deputy.push(deputy.0.clone());
                    rows.from.push(*from);
                    rows.until.push(*until);
                    rows.comment.push(comment.clone());
                    rows.recorded_at.push(*at);
                    rows.ended_at.push(None);
                }
                ApprovalEvent::AbsenceEnded { absence_id, at, .. } => {
                    match slot_of.get(absence_id) {
                        Some(&slot) => {
                            rows.ended_at[slot] = Some(*at);
                            rows.until[slot] = rows.from[slot].max(rows.until[slot].min(*at));
                        }
                        None => {
                            ended.0.push(*absence_id);
                            ended.1.push(*at);
                        }
                    }
                }
                _ => {}
            }
        }
        if !rows.id.is_empty() {
            let before = write.bound();
            write.bind(&rows.id)?;
            write.bind(&rows.person)?;
            write.bind(&rows.deputy)?;
            write.bind(&rows.from)?;
            write.bind(&rows.until)?;
            write.bind(&rows.comment)?;
            write.bind(&rows.recorded_at)?;
            write.bind(&rows.ended_at)?;
            write.cte("absences_recorded", &self.write_recorded, before);
        }
        if !ended.0.is_empty() {
            let before = write.bound();
            write.bind(&ended.0)?;
            write.bind(&ended.1)?;
            write.cte("absences_ended", &self.write_ended, before);
        }
        Ok(true)
    }
}

/// One absence as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AbsenceRow {
    /// Its id.
    pub id: Uuid,
    /// Who is away.
    pub person: String,
    /// Who stands in.
    pub deputy: String,
    /// When it starts.
    pub from_at: DateTime<Utc>,
    /// When it ends (exclusive), an early end included.
    pub until_at: DateTime<Utc>,
    /// What the person wrote.
    pub comment: Option<String>,
}

/// `person`'s absences that are not over at `now`, earliest first.
pub async fn list(
    pool: &PgPool,
    person: &str,
    now: DateTime<Utc>,
) -> Result<Vec<AbsenceRow>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT id, person, deputy, from_at, until_at, comment FROM rm_absences \
         WHERE person = $1 AND until_at > $2 ORDER BY from_at, id",
    )
    .bind(person)
    .bind(now)
    .fetch_all(pool)
    .await?)
}

/// Absence `id` of `person`, if it is theirs.
pub async fn get(
    pool: &PgPool,
    person: &str,
    id: Uuid,
) -> Result<Option<AbsenceRow>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT id, person, deputy, from_at, until_at, comment FROM rm_absences \
         WHERE id = $1 AND person = $2",
    )
    .bind(id)
    .bind(person)
    .fetch_optional(pool)
    .await?)
}

/// The recursive part that finds, from `$1`, the people whose absences in force at `$2` name
/// them as deputy, and theirs, on and on: `principals(person, depth)`, the caller at depth 0.
pub const PRINCIPALS_CTE: &str = "principals(person, depth) AS ( \
        SELECT $1::text, 0 \
        UNION \
        SELECT a.person, p.depth + 1 FROM rm_absences a JOIN principals p ON a.deputy = p.person \
        WHERE a.from_at <= $2 AND $2 < a.until_at AND p.depth < 16)";

/// The people `user` stands in for at `at`, nearest first: those whose absence names them as
/// deputy, and, where one of those is away too, the people that one stands in for.
pub async fn principals(
    pool: &PgPool,
    user: &str,
    at: DateTime<Utc>,
) -> Result<Vec<UserId>, ProjectionError> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "WITH RECURSIVE {PRINCIPALS_CTE} \
         SELECT person FROM principals WHERE person <> $1 \
         GROUP BY person ORDER BY min(depth), person"
    ))
    .bind(user)
    .bind(at)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(p,)| UserId::new(p)).collect())
}

/// Everyone `deputy`'s absences lead to at some moment of `[from, until)`: their deputies,
/// those deputies' deputies, on and on (`deputy` included). An absence of a person among them
/// naming `deputy` would close a circle.
pub async fn reach(
    pool: &PgPool,
    deputy: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<UserId>, ProjectionError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "WITH RECURSIVE reach(person, depth) AS ( \
             SELECT $1::text, 0 \
             UNION \
             SELECT a.deputy, r.depth + 1 FROM rm_absences a JOIN reach r ON a.person = r.person \
             WHERE a.from_at < $3 AND $2 < a.until_at AND r.depth < 16) \
         SELECT DISTINCT person FROM reach",
    )
    .bind(deputy)
    .bind(from)
    .bind(until)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(p,)| UserId::new(p)).collect())
}

/// For each of `people`, who stands in for them at `at` (their deputy, and that deputy's when
/// the deputy is away too, on and on), in one query.
pub async fn deputies_of(
    executor: impl sqlx::PgExecutor<'_>,
    people: &[String],
    at: DateTime<Utc>,
) -> Result<Vec<(String, String)>, ProjectionError> {
    Ok(sqlx::query_as(
        "WITH RECURSIVE d(origin, person, depth) AS ( \
             SELECT o, o, 0 FROM UNNEST($1::text[]) AS o \
             UNION \
             SELECT d.origin, a.deputy, d.depth + 1 FROM rm_absences a \
                 JOIN d ON a.person = d.person \
             WHERE a.from_at <= $2 AND $2 < a.until_at AND d.depth < 16) \
         SELECT DISTINCT origin, person FROM d WHERE person <> origin",
    )
    .bind(people)
    .bind(at)
    .fetch_all(executor)
    .await?)
}
