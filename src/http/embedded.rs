//! Files compiled into the binary and served as they are: the pages of [`super::webapp`]
//! (`/app/`) and [`super::console`] (`/console/`). Each directory answers GET and HEAD only,
//! `/dir` redirects to `/dir/` (the pages' relative links need the slash), and every file is
//! revalidated each time (a new binary's page shows at once) with the same protective headers.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse, ResponseError};

use crate::http::errors::{ApiError, Code};
use crate::http::AppState;

/// One embedded file.
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The `Content-Security-Policy` of a file's answer, if it gets one.
pub type Policy = fn(&AppState, &Asset) -> Option<HeaderValue>;

/// Registers `dir` (without its slash, e.g. `/app`), redirecting to `dir/`, and each of `assets`.
pub fn register(
    cfg: &mut web::ServiceConfig,
    dir: &'static str,
    assets: &'static [Asset],
    policy: Policy,
) {
    let to_slash = move || async move {
        HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, format!("{dir}/")))
            .finish()
    };
    cfg.service(
        web::resource(dir)
            .route(web::get().to(to_slash))
            .route(web::head().to(to_slash))
            .default_service(web::to(get_only)),
    );
    for asset in assets {
        let serve =
            move |state: web::Data<AppState>| async move { file(asset, policy(&state, asset)) };
        cfg.service(
            web::resource(asset.path)
                .route(web::get().to(serve))
                .route(web::head().to(serve))
                .default_service(web::to(get_only)),
        );
    }
}

/// The answer of a page's file to a method other than GET and HEAD.
async fn get_only() -> HttpResponse {
    let mut response =
        ApiError::new(Code::MethodNotAllowed, "this route takes GET, HEAD only").error_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn file(asset: &Asset, policy: Option<HeaderValue>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // The web app's sign-in code comes back in the page's URL: no other site may see it.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if let Some(policy) = policy {
        response.insert_header((header::CONTENT_SECURITY_POLICY, policy));
    }
    response.body(asset.body)
}
