//! The approvers' web app, `/app/` (contract section 9): its page, style, script, manifest and
//! icon, compiled into the binary from `src/http/pages/app/` (no build step, nothing fetched
//! from elsewhere at run time); `GET /app/config.json`, which tells the page how to sign in;
//! and `POST /v1/dev/token`, the development sign-in. The page is a client of the public API
//! like any other: nothing here reads or writes a request.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpResponse};
use approval_aggregates::{validation, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::config::{AuthSettings, OidcClient};
use crate::http::embedded::{self, Asset};
use crate::http::errors::{ApiError, Code, ErrorBody};
use crate::http::{parse_json, AppState};
use crate::signing::issue_token_with_groups;

/// The part of the OpenAPI document these routes make; [`crate::http::api_doc`] merges it in.
/// The page's files are not in it: they are not part of the API.
#[derive(OpenApi)]
#[openapi(
    paths(config, dev_token),
    components(schemas(AppConfig, OidcConfig, DevTokenBody, DevRole, DevToken)),
    tags((name = "app", description = "What the approvers' web app at /app/ needs besides the API"))
)]
pub struct AppDoc;

/// How long a development token lasts: a working day.
pub const DEV_TOKEN_TTL_SECS: i64 = 12 * 3600;

static ASSETS: &[Asset] = &[
    Asset {
        path: "/app/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("pages/app/index.html"),
    },
    Asset {
        path: "/app/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("pages/app/app.css"),
    },
    Asset {
        path: "/app/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("pages/app/app.js"),
    },
    Asset {
        path: "/app/manifest.webmanifest",
        content_type: "application/manifest+json",
        body: include_bytes!("pages/app/manifest.webmanifest"),
    },
    Asset {
        path: "/app/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("pages/app/icon.svg"),
    },
    // icon.svg drawn at the sizes launchers want that take no SVG (rendered once by Chromium,
    // kept as files: no build step).
    Asset {
        path: "/app/icon-192.png",
        content_type: "image/png",
        body: include_bytes!("pages/app/icon-192.png"),
    },
    Asset {
        path: "/app/icon-512.png",
        content_type: "image/png",
        body: include_bytes!("pages/app/icon-512.png"),
    },
];

/// What the page needs to know, fixed at start.
pub struct Pages {
    oidc: Option<OidcClient>,
    /// The settings to sign development tokens with, only while the development secret is in
    /// use (which the configuration allows only in development).
    dev_tokens: Option<AuthSettings>,
    /// The page's `Content-Security-Policy`: its own files only, and calls to this service and
    /// the identity provider.
    csp: HeaderValue,
}

impl Pages {
    /// The pages for these settings.
    pub fn new(auth: &AuthSettings) -> Self {
        let oidc = auth.oidc();
        // The page talks to the provider itself (discovery and the code exchange).
        let provider = oidc
            .as_ref()
            .and_then(|o| reqwest::Url::parse(&o.issuer).ok())
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        let csp = format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
             connect-src 'self'{provider}; manifest-src 'self'; object-src 'none'; \
             base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        );
        Self {
            oidc,
            dev_tokens: auth.is_development_secret().then(|| auth.clone()),
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
        }
    }
}

/// Registers the page's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // The page itself gets the policy; its files are not documents.
    embedded::register(cfg, "/app", ASSETS, |state, asset| {
        (asset.path == "/app/").then(|| state.pages.csp.clone())
    });
    cfg.service(config).service(dev_token);
}

/// How the page signs people in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppConfig {
    /// The OpenID Connect provider (`auth.oidc_issuer`), or `null`.
    pub oidc: Option<OidcConfig>,
    /// Whether `POST /v1/dev/token` hands out tokens: only while the development secret is in
    /// use.
    pub dev_sign_in: bool,
}

/// The web app's client at the OpenID Connect provider.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` names the endpoints.
    pub issuer: String,
    /// The web app's client id (a public client).
    pub client_id: String,
    /// The scopes to ask for, separated by spaces.
    pub scope: String,
}

/// How the web app signs people in: at the OpenID Connect provider, or (development only)
/// with a user name.
#[utoipa::path(
    get, path = "/app/config.json", tag = "app",
    responses((status = 200, body = AppConfig))
)]
#[get("/app/config.json")]
pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    let pages = &state.pages;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .json(AppConfig {
            oidc: pages.oidc.as_ref().map(|o| OidcConfig {
                issuer: o.issuer.clone(),
                client_id: o.client_id.clone(),
                scope: o.scope.clone(),
            }),
            dev_sign_in: pages.dev_tokens.is_some(),
        })
}

/// A role a development token may carry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DevRole {
    /// May read every request and its history.
    Auditor,
    /// May read every request and reassign work.
    Admin,
}

/// Whom a development token is for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevTokenBody {
    /// The user id (the token's `sub`).
    #[schema(value_type = crate::http::dto::Name)]
    pub user: String,
    /// Roles, none by default (one named twice counts once).
    #[serde(default)]
    pub roles: Vec<DevRole>,
    /// The groups the person is in (the token's `groups` claim), none by default.
    #[serde(default)]
    #[schema(value_type = Option<crate::http::dto::Groups>)]
    pub groups: Vec<String>,
}

/// A development token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DevToken {
    /// The bearer token: HS256 with the development secret.
    pub token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// Development only: a token for any user, as `approval-ledger token` prints. Answers only
/// while `auth.jwt_secret` is the development secret, which anyone may read in the defaults
/// and sign their own tokens with anyway; otherwise the route does not exist (404).
#[utoipa::path(
    post, path = "/v1/dev/token", tag = "app",
    request_body = DevTokenBody,
    responses(
        (status = 200, description = "A token, valid for 12 hours", body = DevToken),
        (status = 400, body = ErrorBody),
        (status = 404, description = "`not_found`: the development secret is not in use", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a user id or group that breaks the rules", body = ErrorBody),
    )
)]
#[post("/v1/dev/token")]
pub async fn dev_token(
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(auth) = &state.pages.dev_tokens else {
        return Err(ApiError::new(Code::NotFound, "no such route"));
    };
    let input: DevTokenBody = parse_json(&body)?;
    validation::user("user", &UserId::new(input.user.as_str()))?;
    if input.groups.len() > validation::limits::GROUPS_PER_STEP {
        return Err(ApiError::invalid(format!(
            "groups: at most {}",
            validation::limits::GROUPS_PER_STEP
        )));
    }
    for (i, group) in input.groups.iter().enumerate() {
        validation::group("groups", group)?;
        if input.groups[..i].contains(group) {
            return Err(ApiError::invalid(format!("groups: {group:?} twice")));
        }
    }
    let mut roles: Vec<String> = Vec::new();
    for role in &input.roles {
        let name = match role {
            DevRole::Auditor => "auditor",
            DevRole::Admin => "admin",
        };
        if !roles.iter().any(|r| r == name) {
            roles.push(name.to_owned());
        }
    }
    let expires_at = Utc::now() + chrono::Duration::seconds(DEV_TOKEN_TTL_SECS);
    let token =
        issue_token_with_groups(auth, &input.user, &roles, &input.groups, DEV_TOKEN_TTL_SECS)
            .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::build(StatusCode::OK)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(DevToken { token, expires_at }))
}
