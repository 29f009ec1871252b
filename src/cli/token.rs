//! `approval-ledger token USER [--role ROLE]... [--ttl 1h]`: a signed bearer token.

use anyhow::{bail, Context};

use crate::config::Settings;
use crate::signing::issue_token_with_groups;

/// Reads `90s`, `15m`, `1h`, `7d` or plain seconds.
pub fn parse_ttl(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = number
        .parse()
        .with_context(|| format!("--ttl {text:?}: expected a number with s, m, h or d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--ttl {text:?}: the unit must be s, m, h or d"),
    };
    if seconds <= 0 {
        bail!("--ttl must be positive");
    }
    Ok(seconds)
}

/// The token for `user`.
pub fn run(
    settings: &Settings,
    user: &str,
    roles: &[String],
    groups: &[String],
    ttl: &str,
) -> anyhow::Result<String> {
    for group in groups {
        if approval_aggregates::validation::group("--group", group).is_err() {
            bail!("--group {group:?}: a group is 1 to 64 characters without white space");
        }
    }
    for role in roles {
        if role != "auditor" && role != "admin" {
            bail!("--role {role:?}: the roles are auditor and admin");
        }
    }
    approval_aggregates::validation::user("USER", &approval_aggregates::UserId::new(user))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(issue_token_with_groups(
        &settings.auth,
        user,
        roles,
        groups,
        parse_ttl(ttl)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_read_with_their_units() {
        assert_eq!(parse_ttl("90s").ok(), Some(90));
        assert_eq!(parse_ttl("15m").ok(), Some(900));
        assert_eq!(parse_ttl("1h").ok(), Some(3600));
        assert_eq!(parse_ttl("7d").ok(), Some(604_800));
        assert_eq!(parse_ttl("120").ok(), Some(120));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
