//! Configuration: built-in defaults (`config/default.toml`, embedded), then the file named by
//! `--config` (or `./approval-ledger.toml` when present), then `APPROVAL_LEDGER_<SECTION>__<KEY>`
//! environment variables. Secrets are [`Secret`]s, which never print.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use approval_aggregates::Period;
use serde::Deserialize;

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The JWT secret of the defaults: accepted only in development.
pub const DEVELOPMENT_JWT_SECRET: &str = "dev-only-secret";

/// The demo system `serve` adds in development when no system is configured.
pub const DEMO_SYSTEM: &str = "erp";
/// The demo system's secret.
pub const DEMO_SYSTEM_SECRET: &str = "erp-shared-secret";

/// A secret value: compared and used, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret's bytes, for keying a MAC.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Every setting.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where it runs.
    pub app: AppSettings,
    /// The HTTP server.
    pub http: HttpSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// RabbitMQ.
    pub broker: BrokerSettings,
    /// Tokens of people.
    pub auth: AuthSettings,
    /// The command path.
    pub ledger: LedgerSettings,
    /// Readers of the global feed.
    pub feed: FeedSettings,
    /// Push notifications.
    pub push: PushSettings,
    /// Callbacks and pushes: retries and timeouts.
    pub delivery: DeliverySettings,
    /// Logging.
    pub log: LogSettings,
    /// The audit ledger.
    #[serde(default)]
    pub audit: AuditSettings,
    /// The legacy systems, by key.
    #[serde(default)]
    pub systems: BTreeMap<String, SystemSettings>,
    /// Deadlines: the timer loop and the reminders.
    pub sla: SlaSettings,
    /// Attachments: the limits of a submission's and the fetching from the source system.
    #[serde(default)]
    pub attachments: AttachmentSettings,
    /// Authority: separation of duties, version binding, approval limits.
    #[serde(default)]
    pub policy: PolicySettings,
}

/// Attachments: how many a submission may describe and how large, and how long fetching one
/// from its source system may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AttachmentSettings {
    /// Most attachments of one submission (at most the aggregate's ceiling of 50).
    pub max_count: usize,
    /// Largest attachment, in bytes.
    pub max_bytes: u64,
    /// How long connecting to the source system may take.
    pub connect_timeout_ms: u64,
    /// How long the source may stay silent: before its answer's headers, and between two
    /// pieces of the file.
    pub idle_timeout_ms: u64,
    /// How long one whole download may take.
    pub total_timeout_ms: u64,
}

impl Default for AttachmentSettings {
    fn default() -> Self {
        Self {
            max_count: 20,
            max_bytes: 50 * 1024 * 1024,
            connect_timeout_ms: 3_000,
            idle_timeout_ms: 15_000,
            total_timeout_ms: 600_000,
        }
    }
}

/// `[policy]`: who may approve how much, as written in the configuration (decimal strings).
/// [`PolicySettings::parsed`] reads it; a value that does not parse refuses the start.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicySettings {
    /// Whether a person approves at most one step of a request.
    #[serde(default)]
    pub separation_of_duties: bool,
    /// Above this amount, decisions must send `expected_version`.
    #[serde(default)]
    pub require_version_above: Option<String>,
    /// The most a person or a group may approve, per currency: `alice = { USD = "1000.00" }`.
    #[serde(default)]
    pub limits: BTreeMap<String, BTreeMap<String, String>>,
}

/// `[policy]` read: what each decision's [`approval_aggregates::Authority`] is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Whether a person approves at most one step of a request.
    pub separation_of_duties: bool,
    /// Above this amount, decisions must send `expected_version`.
    pub require_version_above: Option<rust_decimal::Decimal>,
    /// The most each person or group may approve, per currency.
    pub limits: BTreeMap<String, BTreeMap<String, rust_decimal::Decimal>>,
}

/// Reads a decimal string of the policy: not negative, with the precision of an amount.
fn policy_amount(field: &str, text: &str) -> Result<rust_decimal::Decimal, String> {
    let value: rust_decimal::Decimal = text.trim().parse().map_err(|_| {
        format!("{field} must be a decimal string such as \"1000.00\", not {text:?}")
    })?;
    if value.is_sign_negative() {
        return Err(format!("{field} must not be negative"));
    }
    Ok(value)
}

impl PolicySettings {
    /// The policy, or what is wrong with it.
    pub fn parsed(&self) -> Result<Policy, String> {
        let require_version_above = self
            .require_version_above
            .as_deref()
            .map(|t| policy_amount("policy.require_version_above", t))
            .transpose()?;
        let mut limits = BTreeMap::new();
        for (holder, currencies) in &self.limits {
            if approval_aggregates::validation::group("policy.limits", holder).is_err() {
                return Err(format!(
                    "policy.limits.{holder:?} must name a person or group (no white space)"
                ));
            }
            let mut parsed = BTreeMap::new();
            for (currency, limit) in currencies {
                if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(format!(
                        "policy.limits.{holder}.{currency} must be an ISO 4217 code such as USD"
                    ));
                }
                // The environment's keys reach us lower-cased; a currency code is upper-case.
                parsed.insert(
                    currency.to_ascii_uppercase(),
                    policy_amount(&format!("policy.limits.{holder}.{currency}"), limit)?,
                );
            }
            limits.insert(holder.clone(), parsed);
        }
        Ok(Policy {
            separation_of_duties: self.separation_of_duties,
            require_version_above,
            limits,
        })
    }
}

impl Policy {
    /// The authority of `actor` under this policy: the highest of their own and their groups'
    /// limits per currency. Whom they stand in for is left for the command path to resolve.
    pub fn authority_of(
        &self,
        actor: &approval_aggregates::Actor,
    ) -> approval_aggregates::Authority {
        let mut limits: BTreeMap<String, rust_decimal::Decimal> = BTreeMap::new();
        if !self.limits.is_empty() {
            let holders =
                std::iter::once(actor.user.as_str()).chain(actor.groups.iter().map(String::as_str));
            for holder in holders {
                for (currency, limit) in self.limits.get(holder).into_iter().flatten() {
                    let entry = limits.entry(currency.clone()).or_insert(*limit);
                    *entry = (*entry).max(*limit);
                }
            }
        }
        approval_aggregates::Authority {
            principals: None,
            limits,
            separation_of_duties: self.separation_of_duties,
            require_version_above: self.require_version_above,
        }
    }
}

/// Deadlines: how often the timer loop looks for due timers, and when reminders go out.
#[derive(Debug, Clone, Deserialize)]
pub struct SlaSettings {
    /// How often a worker fires the timers that fell due: each fires within this of its moment.
    pub tick: Period,
    /// How long before a step's deadline its undecided approvers are reminded, once each;
    /// recorded in each request at submission. A list in a file; in the environment, one text
    /// separated by commas (`APPROVAL_LEDGER_SLA__REMIND_BEFORE="PT1H,PT10M"`).
    #[serde(deserialize_with = "periods")]
    pub remind_before: Vec<Period>,
    /// Timers fired per look; a look that finds this many looks again at once.
    pub batch: i64,
}

/// Where it runs.
#[derive(Debug, Clone, Deserialize)]
pub struct AppSettings {
    /// `development` allows the built-in secrets.
    pub environment: String,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Address and port; port 0 picks a free one.
    pub bind: String,
    /// Worker threads; 0 is one per CPU.
    pub workers: usize,
    /// Largest body, in bytes.
    pub body_limit: usize,
    /// Most items of a bulk decision.
    pub bulk_limit: usize,
    /// Largest inbox page.
    pub page_limit: i64,
}

/// PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// The connection URL; the database is created when missing.
    pub url: Secret,
    /// Pool size.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection.
    pub acquire_timeout_ms: u64,
}

/// RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
pub struct BrokerSettings {
    /// The AMQP URL.
    pub url: Secret,
    /// The topic exchange; every name declared in RabbitMQ derives from it.
    pub exchange: String,
    /// Unacknowledged messages per consumer.
    pub prefetch: u16,
    /// Deliveries of a message before the queue dead-letters it.
    pub delivery_limit: u32,
    /// How long a publish waits for its confirm.
    pub publish_timeout_ms: u64,
    /// The longest pause between reconnection attempts.
    pub reconnect_max_ms: u64,
    /// Events per relay batch.
    pub relay_batch: i64,
    /// How far behind the feed the sweeper runs the handlers for events the work queues missed.
    pub sweep_after_ms: u64,
}

/// Durable deliveries: legacy-sync callbacks and push notifications.
#[derive(Debug, Clone, Deserialize)]
pub struct DeliverySettings {
    /// Attempts before a delivery goes to dead letters.
    pub max_attempts: i32,
    /// The first retry's delay; each next one doubles, up to `max_delay_ms`.
    pub base_delay_ms: u64,
    /// The longest delay between attempts.
    pub max_delay_ms: u64,
    /// One call's timeout.
    pub timeout_ms: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// The longest sleep without a wake-up.
    pub poll_interval_ms: u64,
}

/// Tokens of people.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// The HS256 key.
    pub jwt_secret: Secret,
    /// The `iss` tokens carry.
    pub issuer: String,
    /// The `aud` tokens carry.
    pub audience: String,
    /// How far a system's timestamp may be from now.
    pub signature_window_secs: i64,
    /// An OpenID Connect provider's key set: when set, RS256 and ES256 tokens signed with its
    /// keys are accepted beside the HS256 ones. Empty is unset.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The `iss` the provider's tokens carry; `issuer` when unset.
    #[serde(default)]
    pub jwks_issuer: Option<String>,
    /// The `aud` the provider's tokens must name; `audience` when unset.
    #[serde(default)]
    pub jwks_audience: Option<String>,
    /// How often the key set is fetched again, whatever the tokens name.
    pub jwks_refresh: Period,
    /// The least time between two fetches of the key set: a token naming an unknown `kid`
    /// fetches it at most this often, however many such tokens arrive.
    pub jwks_min_refetch: Period,
    /// How long one fetch of the key set may take.
    pub jwks_timeout: Period,
    /// The OpenID Connect provider the web app (`/app/`) signs people in with, by the
    /// authorization code flow with PKCE: its issuer URL, under which
    /// `/.well-known/openid-configuration` names its endpoints. Empty is unset. Its tokens are
    /// checked with `jwks_url`, which it needs.
    #[serde(default)]
    pub oidc_issuer: Option<String>,
    /// The web app's client id at that provider (a public client: no secret).
    #[serde(default)]
    pub oidc_client_id: Option<String>,
    /// The scopes the web app asks for; [`DEFAULT_OIDC_SCOPE`] when unset.
    #[serde(default)]
    pub oidc_scope: Option<String>,
}

/// The scopes the web app asks the provider for when `auth.oidc_scope` is unset.
pub const DEFAULT_OIDC_SCOPE: &str = "openid profile";

/// How the web app signs people in at an OpenID Connect provider (`auth.oidc_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The web app's client id there.
    pub client_id: String,
    /// The scopes asked for, separated by spaces.
    pub scope: String,
}

impl AuthSettings {
    /// The key set's URL, when one is configured.
    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// The issuer the provider's tokens must carry.
    pub fn jwks_issuer(&self) -> &str {
        self.jwks_issuer.as_deref().unwrap_or(&self.issuer)
    }

    /// The audience the provider's tokens must name.
    pub fn jwks_audience(&self) -> &str {
        self.jwks_audience.as_deref().unwrap_or(&self.audience)
    }

    /// How the web app signs people in, when `auth.oidc_issuer` is set.
    pub fn oidc(&self) -> Option<OidcClient> {
        let set = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Some(OidcClient {
            issuer: set(&self.oidc_issuer)?,
            client_id: set(&self.oidc_client_id).unwrap_or_default(),
            scope: set(&self.oidc_scope).unwrap_or_else(|| DEFAULT_OIDC_SCOPE.to_owned()),
        })
    }

    /// Whether the HS256 key is the development secret, which everyone knows: then anyone may
    /// have a token for anyone, and `POST /v1/dev/token` hands them out.
    pub fn is_development_secret(&self) -> bool {
        self.jwt_secret.expose() == DEVELOPMENT_JWT_SECRET
    }

    /// Refuses sign-in settings that cannot work: an issuer without a client id or without the
    /// key set that checks its tokens, or one the browser would reach in the clear.
    fn check_oidc(&self, development: bool) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let Some(oidc) = self.oidc() else {
            if self
                .oidc_client_id
                .as_deref()
                .is_some_and(|c| !c.trim().is_empty())
            {
                return invalid("auth.oidc_client_id needs auth.oidc_issuer");
            }
            return Ok(());
        };
        let Ok(parsed) = reqwest::Url::parse(&oidc.issuer) else {
            return invalid("auth.oidc_issuer must be an absolute http(s) URL");
        };
        match parsed.scheme() {
            "https" => {}
            "http" if development => {}
            "http" => return invalid("auth.oidc_issuer must be https outside development"),
            _ => return invalid("auth.oidc_issuer must be an absolute http(s) URL"),
        }
        if parsed.host_str().is_none() {
            return invalid("auth.oidc_issuer must name a host");
        }
        if oidc.client_id.is_empty() {
            return invalid("auth.oidc_issuer needs auth.oidc_client_id");
        }
        if self.jwks_url().is_none() {
            return invalid(
                "auth.oidc_issuer needs auth.jwks_url: the provider's tokens are checked with its keys",
            );
        }
        Ok(())
    }

    /// Refuses key-set settings that cannot work.
    fn check_jwks(&self, development: bool) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let Some(url) = self.jwks_url() else {
            if self.jwks_issuer.is_some() || self.jwks_audience.is_some() {
                return invalid("auth.jwks_issuer and auth.jwks_audience need auth.jwks_url");
            }
            return Ok(());
        };
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return invalid("auth.jwks_url must be an absolute http(s) URL");
        };
        match parsed.scheme() {
            "https" => {}
            // Keys fetched in the clear could be swapped on the way: only for development.
            "http" if development => {}
            "http" => {
                return invalid(
                    "auth.jwks_url must be https outside development (keys fetched in the \
                     clear could be replaced on the way)",
                )
            }
            _ => return invalid("auth.jwks_url must be an absolute http(s) URL"),
        }
        if parsed.host_str().is_none() {
            return invalid("auth.jwks_url must name a host");
        }
        if self.jwks_issuer().trim().is_empty() || self.jwks_audience().trim().is_empty() {
            return invalid("auth.jwks_issuer and auth.jwks_audience must not be empty");
        }
        if self.jwks_min_refetch.as_secs() == 0 || self.jwks_timeout.as_secs() == 0 {
            return invalid("auth.jwks_min_refetch and auth.jwks_timeout must be at least PT1S");
        }
        if self.jwks_refresh < self.jwks_min_refetch {
            return invalid("auth.jwks_refresh must be at least auth.jwks_min_refetch");
        }
        Ok(())
    }
}

/// The command path.
#[derive(Debug, Clone, Deserialize)]
pub struct LedgerSettings {
    /// Retries after an optimistic-lock conflict when no `expected_version` was given.
    pub conflict_retries: u32,
    /// How long a command waits for its own write to show in the read models.
    pub read_your_writes_ms: u64,
    /// Requests the command path keeps in memory, so that a command on one of them needs no
    /// load; 0 keeps none.
    pub cache_requests: usize,
}

/// Readers of the global feed.
#[derive(Debug, Clone, Deserialize)]
pub struct FeedSettings {
    /// Events per batch.
    pub batch_size: i64,
    /// The longest sleep without a wake-up.
    pub poll_interval_ms: u64,
}

/// Push notifications.
#[derive(Debug, Clone, Deserialize)]
pub struct PushSettings {
    /// `log` or `fcm`.
    pub provider: String,
    /// FCM's base URL.
    pub fcm_endpoint: String,
    /// FCM project.
    pub fcm_project: String,
    /// A static bearer for FCM.
    pub fcm_bearer: Secret,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// The default level filter.
    pub level: String,
}

/// The audit ledger: the running hash over the feed and its checkpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditSettings {
    /// The least time between two audit checkpoints; 0 writes one after every batch.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: 300,
        }
    }
}

/// One legacy system.
#[derive(Debug, Clone, Deserialize)]
pub struct SystemSettings {
    /// Its human name.
    pub name: String,
    /// The HMAC key of both directions.
    pub secret: Secret,
    /// Where decisions are sent.
    pub callback_url: String,
    /// Also send `approval.step_completed` callbacks, not only final statuses.
    #[serde(default)]
    pub progress_callbacks: bool,
}

/// A list of periods, or (as environment variables give it) one text of them separated by
/// commas; an empty text is an empty list.
fn periods<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Period>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Periods {
        List(Vec<Period>),
        Text(String),
    }
    match Periods::deserialize(deserializer)? {
        Periods::List(list) => Ok(list),
        Periods::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| Period::parse(p).map_err(serde::de::Error::custom))
            .collect(),
    }
}

/// The system name absence events carry when they leave the service (routing key
/// `approval._people.AbsenceRecorded`): no configured system may take it.
pub const PEOPLE_SYSTEM: &str = "_people";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or does not fit.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is refused.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads the layers: defaults, then `file` (or `./approval-ledger.toml`), then the
    /// environment (or `env`, when given, in its place: tests pass their own).
    pub fn load(
        file: Option<&Path>,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        builder = match file {
            Some(path) => builder.add_source(config::File::from(path).required(true)),
            None => {
                builder.add_source(config::File::with_name("approval-ledger.toml").required(false))
            }
        };
        let environment = config::Environment::with_prefix("APPROVAL_LEDGER")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(false);
        let environment = match env {
            Some(vars) => environment.source(Some(vars.into_iter().collect())),
            None => environment,
        };
        let settings: Self = builder.add_source(environment).build()?.try_deserialize()?;
        settings.checked()
    }

    /// Whether the built-in secrets are allowed.
    pub fn is_development(&self) -> bool {
        self.app.environment == "development"
    }

    /// Refuses what cannot work, and the development secrets outside development; adds the demo
    /// system in development when none is configured.
    fn checked(mut self) -> Result<Self, ConfigError> {
        let a = &self.attachments;
        if a.max_count > approval_aggregates::validation::limits::ATTACHMENTS
            || a.max_bytes == 0
            || a.connect_timeout_ms == 0
            || a.idle_timeout_ms == 0
            || a.total_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "attachments.max_count must be at most 50, and max_bytes and the timeouts above zero"
                    .into(),
            ));
        }
        if self.sla.tick.as_secs() == 0 || self.sla.batch < 1 {
            return Err(ConfigError::Invalid(
                "sla.tick must be at least PT1S and sla.batch at least 1".into(),
            ));
        }
        if self.sla.remind_before.iter().any(|p| p.as_secs() == 0) {
            return Err(ConfigError::Invalid(
                "sla.remind_before must list durations longer than zero".into(),
            ));
        }
        if self.systems.is_empty() && self.is_development() {
            self.systems.insert(
                DEMO_SYSTEM.into(),
                SystemSettings {
                    name: "Demo ERP (development only)".into(),
                    secret: Secret::new(DEMO_SYSTEM_SECRET),
                    callback_url: "http://127.0.0.1:9001/approvals/callback".into(),
                    progress_callbacks: false,
                },
            );
        }
        for (key, system) in &self.systems {
            let ok_key = !key.is_empty()
                && key.len() <= 64
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !ok_key {
                return Err(ConfigError::Invalid(format!(
                    "system key {key:?} must be lower-case letters, digits, '_' or '-'"
                )));
            }
            if system.secret.expose().len() < 8 {
                return Err(ConfigError::Invalid(format!(
                    "systems.{key}.secret must be at least 8 characters"
                )));
            }
            if !self.is_development() && system.secret.expose() == DEMO_SYSTEM_SECRET {
                return Err(ConfigError::Invalid(format!(
                    "systems.{key}.secret is the development secret; set a real one"
                )));
            }
        }
        if !self.is_development() && self.auth.jwt_secret.expose() == DEVELOPMENT_JWT_SECRET {
            return Err(ConfigError::Invalid(
                "auth.jwt_secret is the development secret; set APPROVAL_LEDGER_AUTH__JWT_SECRET \
                 or run with app.environment = \"development\""
                    .into(),
            ));
        }
        if self.auth.jwt_secret.expose().is_empty() {
            return Err(ConfigError::Invalid(
                "auth.jwt_secret must not be empty".into(),
            ));
        }
        self.auth.check_jwks(self.is_development())?;
        self.auth.check_oidc(self.is_development())?;
        if !matches!(self.push.provider.as_str(), "log" | "fcm") {
            return Err(ConfigError::Invalid(format!(
                "push.provider must be \"log\" or \"fcm\", not {:?}",
                self.push.provider
            )));
        }
        if self.broker.exchange.is_empty() || self.broker.exchange.len() > 200 {
            return Err(ConfigError::Invalid(
                "broker.exchange must be 1 to 200 characters".into(),
            ));
        }
        if self.delivery.max_attempts < 1
            || self.delivery.concurrency < 1
            || self.broker.relay_batch < 1
        {
            return Err(ConfigError::Invalid(
                "delivery.max_attempts, delivery.concurrency and broker.relay_batch must be positive".into(),
            ));
        }
        self.policy.parsed().map_err(ConfigError::Invalid)?;
        if self.systems.contains_key(PEOPLE_SYSTEM) {
            return Err(ConfigError::Invalid(format!(
                "system key {PEOPLE_SYSTEM:?} is reserved: absence events leave under it"
            )));
        }
        if self.feed.batch_size < 1 || self.http.page_limit < 1 || self.http.bulk_limit < 1 {
            return Err(ConfigError::Invalid(
                "feed.batch_size, http.page_limit and http.bulk_limit must be positive".into(),
            ));
        }
        Ok(self)
    }

    /// The development secrets in use, for the loud warning at start.
    pub fn development_secrets_in_use(&self) -> Vec<String> {
        let mut used = vec![];
        if self.auth.is_development_secret() {
            used.push("auth.jwt_secret".to_string());
        }
        for (key, system) in &self.systems {
            if system.secret.expose() == DEMO_SYSTEM_SECRET {
                used.push(format!("systems.{key}.secret"));
            }
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_defaults_run_a_development_service_with_the_demo_system() -> Result<(), ConfigError> {
        let s = Settings::load(None, env(&[]))?;
        assert_eq!(s.http.bind, "127.0.0.1:8080");
        assert_eq!(s.broker.exchange, "approval.events");
        assert!(s.systems.contains_key(DEMO_SYSTEM));
        assert_eq!(s.development_secrets_in_use().len(), 2);
        Ok(())
    }

    #[test]
    fn environment_variables_override_with_double_underscores() -> Result<(), ConfigError> {
        let s = Settings::load(
            None,
            env(&[
                ("APPROVAL_LEDGER_DATABASE__URL", "postgres://x@db/ledger"),
                ("APPROVAL_LEDGER_HTTP__BULK_LIMIT", "7"),
                ("APPROVAL_LEDGER_SYSTEMS__HR__NAME", "HR"),
                ("APPROVAL_LEDGER_SYSTEMS__HR__SECRET", "hr-secret-123"),
                ("APPROVAL_LEDGER_SYSTEMS__HR__CALLBACK_URL", "http://hr/cb"),
            ]),
        )?;
        assert_eq!(s.database.url.expose(), "postgres://x@db/ledger");
        assert_eq!(s.http.bulk_limit, 7);
        assert!(s.systems.contains_key("hr"));
        assert!(!s.systems.contains_key(DEMO_SYSTEM));
        Ok(())
    }

    #[test]
    fn deadlines_are_iso_8601_durations_and_reminders_a_list() -> Result<(), ConfigError> {
        let s = Settings::load(None, env(&[]))?;
        assert_eq!(s.sla.tick, Period::from_secs(1));
        assert_eq!(s.sla.remind_before, vec![Period::from_secs(3_600)]);
        let s = Settings::load(
            None,
            env(&[
                ("APPROVAL_LEDGER_SLA__TICK", "PT2S"),
                ("APPROVAL_LEDGER_SLA__REMIND_BEFORE", "PT1H,PT10M"),
            ]),
        )?;
        assert_eq!(s.sla.tick, Period::from_secs(2));
        assert_eq!(
            s.sla.remind_before,
            vec![Period::from_secs(3_600), Period::from_secs(600)]
        );
        let bad = Settings::load(None, env(&[("APPROVAL_LEDGER_SLA__TICK", "1s")]));
        assert!(bad.is_err());
        Ok(())
    }

    #[test]
    fn policy_amounts_are_decimal_strings_and_a_persons_limit_is_the_highest_of_theirs(
    ) -> Result<(), ConfigError> {
        let s = Settings::load(
            None,
            env(&[
                ("APPROVAL_LEDGER_POLICY__SEPARATION_OF_DUTIES", "true"),
                ("APPROVAL_LEDGER_POLICY__REQUIRE_VERSION_ABOVE", "5000.00"),
                ("APPROVAL_LEDGER_POLICY__LIMITS__ALICE__USD", "1000.00"),
                ("APPROVAL_LEDGER_POLICY__LIMITS__FINANCE__USD", "50000.00"),
            ]),
        )?;
        let policy = s.policy.parsed().map_err(ConfigError::Invalid)?;
        assert!(policy.separation_of_duties);
        let mut alice = approval_aggregates::Actor::person("alice");
        assert_eq!(
            policy
                .authority_of(&alice)
                .limits
                .get("USD")
                .map(|d| d.to_string()),
            Some("1000.00".to_owned())
        );
        alice.groups = vec!["finance".into()];
        assert_eq!(
            policy
                .authority_of(&alice)
                .limits
                .get("USD")
                .map(|d| d.to_string()),
            Some("50000.00".to_owned())
        );
        assert!(policy
            .authority_of(&approval_aggregates::Actor::person("bob"))
            .limits
            .is_empty());
        for (key, value) in [
            ("APPROVAL_LEDGER_POLICY__REQUIRE_VERSION_ABOVE", "a lot"),
            ("APPROVAL_LEDGER_POLICY__LIMITS__ALICE__USD", "-1"),
            ("APPROVAL_LEDGER_POLICY__LIMITS__ALICE__DOLLARS", "10"),
        ] {
            let bad = Settings::load(None, env(&[(key, value)]));
            assert!(
                matches!(&bad, Err(ConfigError::Invalid(m)) if m.contains("policy")),
                "{key}={value}: {bad:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn production_refuses_the_development_secret() {
        let result = Settings::load(
            None,
            env(&[("APPROVAL_LEDGER_APP__ENVIRONMENT", "production")]),
        );
        assert!(matches!(result, Err(ConfigError::Invalid(m)) if m.contains("jwt_secret")));
    }

    #[test]
    fn a_key_set_is_optional_and_its_issuer_and_audience_default_to_the_hs256_ones(
    ) -> Result<(), ConfigError> {
        let s = Settings::load(None, env(&[]))?;
        assert_eq!(s.auth.jwks_url(), None);
        assert_eq!(s.auth.jwks_min_refetch, Period::from_secs(30));
        let s = Settings::load(
            None,
            env(&[("APPROVAL_LEDGER_AUTH__JWKS_URL", "https://idp.example/keys")]),
        )?;
        assert_eq!(s.auth.jwks_url(), Some("https://idp.example/keys"));
        assert_eq!(s.auth.jwks_issuer(), "approval-ledger");
        assert_eq!(s.auth.jwks_audience(), "approval-mobile");
        let s = Settings::load(
            None,
            env(&[
                ("APPROVAL_LEDGER_AUTH__JWKS_URL", "https://idp.example/keys"),
                ("APPROVAL_LEDGER_AUTH__JWKS_ISSUER", "https://idp.example"),
                ("APPROVAL_LEDGER_AUTH__JWKS_AUDIENCE", "api://ledger"),
            ]),
        )?;
        assert_eq!(s.auth.jwks_issuer(), "https://idp.example");
        assert_eq!(s.auth.jwks_audience(), "api://ledger");
        let unset = Settings::load(None, env(&[("APPROVAL_LEDGER_AUTH__JWKS_URL", "")]))?;
        assert_eq!(unset.auth.jwks_url(), None);
        Ok(())
    }

    #[test]
    fn a_key_set_that_cannot_work_is_refused_at_start() {
        let refused = |pairs: &[(&str, &str)]| matches!(Settings::load(None, env(pairs)), Err(ConfigError::Invalid(m)) if m.contains("auth.jwks"));
        let url = ("APPROVAL_LEDGER_AUTH__JWKS_URL", "https://idp.example/keys");
        assert!(refused(&[(
            "APPROVAL_LEDGER_AUTH__JWKS_URL",
            "idp.example/keys"
        )]));
        assert!(refused(&[(
            "APPROVAL_LEDGER_AUTH__JWKS_URL",
            "ftp://idp.example/keys"
        )]));
        assert!(refused(&[(
            "APPROVAL_LEDGER_AUTH__JWKS_ISSUER",
            "https://idp.example"
        )]));
        assert!(refused(&[
            url,
            ("APPROVAL_LEDGER_AUTH__JWKS_MIN_REFETCH", "PT0S")
        ]));
        assert!(refused(&[
            url,
            ("APPROVAL_LEDGER_AUTH__JWKS_REFRESH", "PT10S"),
            ("APPROVAL_LEDGER_AUTH__JWKS_MIN_REFETCH", "PT1M"),
        ]));
        assert!(refused(&[
            url,
            ("APPROVAL_LEDGER_AUTH__JWKS_AUDIENCE", " ")
        ]));
        // Keys in the clear only in development.
        assert!(refused(&[
            ("APPROVAL_LEDGER_AUTH__JWKS_URL", "http://idp.example/keys"),
            ("APPROVAL_LEDGER_APP__ENVIRONMENT", "production"),
            (
                "APPROVAL_LEDGER_AUTH__JWT_SECRET",
                "a-real-secret-of-some-length"
            ),
            ("APPROVAL_LEDGER_SYSTEMS__HR__NAME", "HR"),
            ("APPROVAL_LEDGER_SYSTEMS__HR__SECRET", "hr-secret-123"),
            ("APPROVAL_LEDGER_SYSTEMS__HR__CALLBACK_URL", "http://hr/cb"),
        ]));
    }

    #[test]
    fn the_web_apps_provider_needs_a_client_id_and_the_key_set_that_checks_its_tokens(
    ) -> Result<(), ConfigError> {
        assert_eq!(Settings::load(None, env(&[]))?.auth.oidc(), None);
        let issuer = ("APPROVAL_LEDGER_AUTH__OIDC_ISSUER", "https://idp.example");
        let client = ("APPROVAL_LEDGER_AUTH__OIDC_CLIENT_ID", "approvals-web");
        let jwks = ("APPROVAL_LEDGER_AUTH__JWKS_URL", "https://idp.example/keys");
        let s = Settings::load(None, env(&[issuer, client, jwks]))?;
        assert_eq!(
            s.auth.oidc(),
            Some(OidcClient {
                issuer: "https://idp.example".into(),
                client_id: "approvals-web".into(),
                scope: DEFAULT_OIDC_SCOPE.into(),
            })
        );
        let refused = |pairs: &[(&str, &str)]| matches!(Settings::load(None, env(pairs)), Err(ConfigError::Invalid(m)) if m.contains("auth.oidc"));
        assert!(refused(&[issuer, jwks]));
        assert!(refused(&[issuer, client]));
        assert!(refused(&[client, jwks]));
        assert!(refused(&[
            ("APPROVAL_LEDGER_AUTH__OIDC_ISSUER", "idp.example"),
            client,
            jwks
        ]));
        Ok(())
    }

    #[test]
    fn secrets_never_print() -> Result<(), ConfigError> {
        let s = Settings::load(None, env(&[]))?;
        let printed = format!("{s:?}");
        assert!(!printed.contains(DEVELOPMENT_JWT_SECRET));
        assert!(!printed.contains(DEMO_SYSTEM_SECRET));
        Ok(())
    }
}
