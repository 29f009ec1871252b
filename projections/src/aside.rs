//! Copies of a projection's tables in another schema: a rebuild fills them aside while the live
//! tables keep serving, then swaps them in within one short transaction, so a reader sees either
//! the old read model or the new one, never an empty or half-built one.
//!
//! The swap moves tables between schemas (`ALTER TABLE ... SET SCHEMA`), which changes no data
//! and takes a moment whatever the size. Queries name tables by schema and name, and PostgreSQL
//! re-resolves names in its cached plans after such a change, so readers and the projection's
//! runner carry on with the new tables without a restart. Grants on the live tables are not
//! copied.

use sqlx::PgConnection;

use crate::{ProjectionError, Schema};

/// Creates `aside` afresh, with an empty copy of each of `tables` of the live schema: the same
/// columns, defaults, constraints and indexes. Whatever `aside` held before is dropped.
pub async fn create(
    conn: &mut PgConnection,
    tables: &[&str],
    aside: &Schema,
) -> Result<(), ProjectionError> {
    drop(conn, aside).await?;
    sqlx::query(&format!("CREATE SCHEMA {}", aside.as_str()))
        .execute(&mut *conn)
        .await?;
    let live = Schema::live();
    for table in tables {
        sqlx::query(&format!(
            "CREATE TABLE {} (LIKE {} INCLUDING ALL)",
            aside.table(table),
            live.table(table)
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Drops `schema` and everything in it, if it exists. Never the live schema.
pub async fn drop(conn: &mut PgConnection, schema: &Schema) -> Result<(), ProjectionError> {
    if *schema == Schema::live() {
        return Err(ProjectionError::Inconsistent(
            "refusing to drop the live schema".into(),
        ));
    }
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        schema.as_str()
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Gathers the planner's statistics of the copies in `aside`, so the first queries after the
/// swap are planned as well as before it.
pub async fn analyze(
    conn: &mut PgConnection,
    tables: &[&str],
    aside: &Schema,
) -> Result<(), ProjectionError> {
    for table in tables {
        sqlx::query(&format!("ANALYZE {}", aside.table(table)))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inside the caller's transaction: moves each live table of `tables` into `retired` (created
/// here) and its copy from `aside` into the live schema, then gives the new tables' indexes the
/// names the live ones had, so later migrations find them by name.
pub async fn swap(
    conn: &mut PgConnection,
    tables: &[&str],
    aside: &Schema,
    retired: &Schema,
) -> Result<(), ProjectionError> {
    let live = Schema::live();
    sqlx::query(&format!("CREATE SCHEMA {}", retired.as_str()))
        .execute(&mut *conn)
        .await?;
    for table in tables {
        sqlx::query(&format!(
            "ALTER TABLE {} SET SCHEMA {}",
            live.table(table),
            retired.as_str()
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "ALTER TABLE {} SET SCHEMA {}",
            aside.table(table),
            live.as_str()
        ))
        .execute(&mut *conn)
        .await?;
        let old = indexes(conn, retired, table).await?;
        let mut new = indexes(conn, &live, table).await?;
        for (old_name, key) in old {
            let Some(slot) = new.iter().position(|(_, k)| *k == key) else {
                continue;
            };
            let (new_name, _) = new.swap_remove(slot);
            if new_name != old_name {
                sqlx::query(&format!(
                    "ALTER INDEX {} RENAME TO {}",
                    live.table(&quote(&new_name)),
                    quote(&old_name)
                ))
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

/// The indexes of `schema.table`: each one's name and what it indexes (uniqueness and the
/// definition after `USING`, which names neither the index nor the table's schema).
async fn indexes(
    conn: &mut PgConnection,
    schema: &Schema,
    table: &str,
) -> Result<Vec<(String, (bool, String))>, ProjectionError> {
    let rows: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT ic.relname::text, i.indisunique, \
                split_part(pg_get_indexdef(i.indexrelid), ' USING ', 2) \
         FROM pg_index i \
         JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname = $2 \
         ORDER BY ic.relname",
    )
    .bind(schema.as_str())
    .bind(table)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, unique, definition)| (name, (unique, definition)))
        .collect())
}

/// An identifier quoted for SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
