//! One statement for a whole batch: each projection adds its writes as data-modifying CTEs, all
//! under one condition (the gate), so that a runner can lock, check and move its checkpoints and
//! apply the batch to every read model in a single round trip, with no transaction around it.
//!
//! Each part is written with its own placeholders from `$1`; [`BatchWrite::cte`] renumbers them
//! after the ones bound before, and puts the gate where the part says `{gate}`.

use sqlx::postgres::{PgArguments, Postgres};
use sqlx::{Arguments, Encode, Type};

use crate::ProjectionError;

/// The parts and arguments of one statement.
pub struct BatchWrite {
    gate: String,
    ctes: Vec<String>,
    args: PgArguments,
}

impl BatchWrite {
    /// An empty statement whose writes run only where `gate`, an SQL boolean expression, holds.
    pub fn new(gate: &str) -> Self {
        Self {
            gate: gate.to_owned(),
            ctes: Vec::new(),
            args: PgArguments::default(),
        }
    }

    /// How many arguments are bound so far: a part bound next numbers its placeholders after them.
    pub fn bound(&self) -> usize {
        self.args.len()
    }

    /// Binds the next argument.
    pub fn bind<'q, T>(&mut self, value: T) -> Result<(), ProjectionError>
    where
        T: Encode<'q, Postgres> + Type<Postgres> + 'q,
    {
        self.args
            .add(value)
            .map_err(|e| ProjectionError::Database(sqlx::Error::Encode(e)))
    }

    /// Adds `name AS (part)`, where `part`'s placeholders `$1`, `$2`, ... are the arguments bound
    /// after the first `before` ones, and `{gate}` is the gate.
    pub fn cte(&mut self, name: &str, part: &str, before: usize) {
        let part = renumber(part, before).replace("{gate}", &self.gate);
        self.ctes.push(format!("{name} AS ({part})"));
    }

    /// Whether no part was added.
    pub fn is_empty(&self) -> bool {
        self.ctes.is_empty()
    }

    /// The statement, `WITH` every part, ending in `select`, and its arguments.
    pub fn finish(self, select: &str) -> (String, PgArguments) {
        let sql = if self.ctes.is_empty() {
            select.to_owned()
        } else {
            format!("WITH {} {select}", self.ctes.join(", "))
        };
        (sql, self.args)
    }
}

/// `sql` with every placeholder `$n` made `$(n + by)`. The parts hold no string literal nor
/// dollar quoting, so every `$` followed by digits is a placeholder.
fn renumber(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_after_the_ones_bound_before() {
        assert_eq!(
            renumber("SELECT $1, $2::int8[], $10 WHERE x = $1", 5),
            "SELECT $6, $7::int8[], $15 WHERE x = $6"
        );
        assert_eq!(renumber("no placeholders $", 3), "no placeholders $");
        assert_eq!(renumber("$1", 0), "$1");
    }

    #[test]
    fn parts_are_gated_and_joined_in_one_with() {
        let mut write = BatchWrite::new("(SELECT ok FROM gate)");
        write.bind(1_i64).unwrap();
        let before = write.bound();
        write.bind(vec![1_i64, 2]).unwrap();
        write.cte(
            "a",
            "INSERT INTO t SELECT * FROM UNNEST($1::int8[]) WHERE {gate}",
            before,
        );
        let (sql, args) = write.finish("SELECT 1");
        assert_eq!(
            sql,
            "WITH a AS (INSERT INTO t SELECT * FROM UNNEST($2::int8[]) WHERE (SELECT ok FROM gate)) SELECT 1"
        );
        assert_eq!(args.len(), 2);
        assert_eq!(BatchWrite::new("true").finish("SELECT 1").0, "SELECT 1");
    }
}
