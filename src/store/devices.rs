//! The devices people registered for push notifications.

use sqlx::PgPool;

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Device {
    /// Its owner.
    pub user_id: String,
    /// The provider's token.
    pub token: String,
    /// `android` or `ios`.
    pub platform: String,
}

/// Registers `token` for `user`; a token registered before moves to its newest owner.
pub async fn register(
    pool: &PgPool,
    user: &str,
    platform: &str,
    token: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO devices (token, user_id, platform) VALUES ($1, $2, $3) \
         ON CONFLICT (token) DO UPDATE SET user_id = EXCLUDED.user_id, platform = EXCLUDED.platform, \
         updated_at = now()",
    )
    .bind(token)
    .bind(user)
    .bind(platform)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes `user`'s `token`; returns whether it was theirs.
pub async fn unregister(pool: &PgPool, user: &str, token: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM devices WHERE token = $1 AND user_id = $2")
        .bind(token)
        .bind(user)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// The devices of `users`, by token.
///
/// Sorted here rather than by the statement: asked for in token order, a plan made once on an
/// empty table (the delivery pool plans once, `db::connect_delivery`) read the whole token index
/// in order to skip a sort, every device of every user for the few wanted (tests/delivery.rs).
pub async fn of_users(
    executor: impl sqlx::PgExecutor<'_>,
    users: &[String],
) -> Result<Vec<Device>, sqlx::Error> {
    if users.is_empty() {
        return Ok(vec![]);
    }
    let mut devices: Vec<Device> =
        sqlx::query_as("SELECT user_id, token, platform FROM devices WHERE user_id = ANY($1)")
            .bind(users)
            .fetch_all(executor)
            .await?;
    devices.sort_unstable_by(|a, b| a.token.cmp(&b.token));
    Ok(devices)
}
