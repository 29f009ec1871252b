//! `approval-ledger report [--from --to --group-by] [--format table|csv|json]`: the approvals
//! report of `GET /v1/analytics/approvals`, from the same query ([`crate::http::analytics::answer`]);
//! `--format json` prints exactly the endpoint's body.

use anyhow::Context;
use clap::ValueEnum;

use crate::config::Settings;
use crate::http::analytics::{self, AnalyticsAnswer, AnalyticsGroup, GroupByParam};
use crate::store::db;

/// What the groups are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupBy {
    /// The requests' system.
    System,
    /// The requests' kind.
    Kind,
    /// The step's index, from 0.
    Step,
    /// The person asked to decide a step, or who decided it.
    Approver,
}

impl From<GroupBy> for GroupByParam {
    fn from(g: GroupBy) -> Self {
        match g {
            GroupBy::System => Self::System,
            GroupBy::Kind => Self::Kind,
            GroupBy::Step => Self::Step,
            GroupBy::Approver => Self::Approver,
        }
    }
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// A header line, then one line per group.
    Csv,
    /// The body of `GET /v1/analytics/approvals`.
    Json,
}

/// The report's columns, in order.
const COLUMNS: [&str; 10] = [
    "key",
    "submitted",
    "decided",
    "approved",
    "rejected",
    "returned",
    "expired",
    "median_s",
    "p90_s",
    "overdue",
];

/// Prints the report of the rounds submitted in `[from, to)`.
pub async fn run(
    settings: &Settings,
    from: Option<&str>,
    to: Option<&str>,
    group_by: GroupBy,
    format: Format,
) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database)
        .await
        .context("cannot connect to the database")?;
    let answer = analytics::answer(&pool, from, to, group_by.into()).await;
    pool.close().await;
    let answer = answer.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    print!("{}", render(&answer, format)?);
    Ok(())
}

/// A time in seconds as the table and CSV show it: to the millisecond; empty when null.
fn seconds(value: Option<f64>) -> String {
    value.map(|s| format!("{s:.3}")).unwrap_or_default()
}

fn cells(g: &AnalyticsGroup) -> [String; 10] {
    [
        g.key.clone(),
        g.submitted.to_string(),
        g.decided.to_string(),
        g.approved.to_string(),
        g.rejected.to_string(),
        g.returned.to_string(),
        g.expired.to_string(),
        seconds(g.median_s),
        seconds(g.p90_s),
        g.overdue.to_string(),
    ]
}

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The report as `format` prints it.
fn render(answer: &AnalyticsAnswer, format: Format) -> anyhow::Result<String> {
    let rows: Vec<[String; 10]> = answer.groups.iter().map(cells).collect();
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string(answer)?;
            out.push('\n');
        }
        Format::Csv => {
            out.push_str(&COLUMNS.join(","));
            out.push('\n');
            for row in &rows {
                let fields: Vec<String> = row.iter().map(|c| csv_field(c)).collect();
                out.push_str(&fields.join(","));
                out.push('\n');
            }
        }
        Format::Table => {
            let mut widths = COLUMNS.map(str::len);
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            let line = |cells: &[&str]| {
                let mut text = String::new();
                for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                    if i == 0 {
                        text.push_str(&format!("{cell:<width$}"));
                    } else {
                        text.push_str(&format!("  {cell:>width$}"));
                    }
                }
                text.trim_end().to_owned()
            };
            out.push_str(&line(&COLUMNS));
            out.push('\n');
            for row in &rows {
                let cells: Vec<&str> = row.iter().map(String::as_str).collect();
                out.push_str(&line(&cells));
                out.push('\n');
            }
            if rows.is_empty() {
                out.push_str("(no requests submitted in the window)\n");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> AnalyticsAnswer {
        AnalyticsAnswer {
            groups: vec![AnalyticsGroup {
                key: "a,\"b\"".into(),
                submitted: 3,
                decided: 2,
                approved: 1,
                rejected: 1,
                returned: 0,
                expired: 1,
                median_s: Some(1.5),
                p90_s: None,
                overdue: 1,
            }],
        }
    }

    #[test]
    fn csv_quotes_a_key_with_a_separator_and_leaves_a_null_time_empty() {
        let csv = render(&answer(), Format::Csv).unwrap_or_default();
        assert_eq!(
            csv,
            "key,submitted,decided,approved,rejected,returned,expired,median_s,p90_s,overdue\n\
             \"a,\"\"b\"\"\",3,2,1,1,0,1,1.500,,1\n"
        );
    }

    #[test]
    fn the_table_aligns_its_columns_under_the_header() {
        let table = render(&answer(), Format::Table).unwrap_or_default();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("key    submitted"), "{table}");
        assert!(lines[1].starts_with("a,\"b\"          3"), "{table}");
    }
}
