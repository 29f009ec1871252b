//! Attachments: the files a submission describes, streamed on request from the source system.
//!
//! The service never stores a file. `GET /v1/requests/{id}/attachments/{index}` fetches it from
//! the URL the submission gave, signed like a callback (section 3 headers over an empty body),
//! and passes its bytes through to the caller as they arrive, so no file is ever held whole in
//! memory. Size and SHA-256 are checked as the bytes pass: the last piece is only sent once the
//! whole file proved to be the one described, and any mismatch ends the response with an error
//! (the caller sees a broken download, never a clean end) and is logged with the request id.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{get, web, HttpRequest, HttpResponse};
use approval_aggregates::Attachment;
use futures_util::Stream;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::{AttachmentSettings, SystemSettings};
use crate::http::auth::Person;
use crate::http::dto::{request_id, whole};
use crate::http::errors::{ApiError, Code, ErrorBody};
use crate::http::{http_request_id, AppState};

/// A file a submission describes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentDto {
    /// The file's name as people see it: up to 255 characters, not blank, no control
    /// characters but line breaks and tabs.
    #[schema(
        max_length = 255,
        pattern = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Its media type, `type/subtype`.
    #[schema(
        max_length = 127,
        pattern = r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$",
        example = "application/pdf"
    )]
    pub media_type: String,
    /// Its exact size in bytes: at least 1, at most `[attachments] max_bytes` (50 MiB by
    /// default).
    #[serde(deserialize_with = "whole_size")]
    #[schema(minimum = 1, maximum = 52_428_800)]
    pub size: u64,
    /// The SHA-256 of its bytes, 64 lower-case hexadecimal digits.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    /// Where the source system serves it: an http or https URL. The service fetches it with a
    /// signed GET.
    #[schema(max_length = 2048, pattern = r"^https?://[^\s\x00-\x1f\x7f-\x9f]*$")]
    pub url: String,
}

/// Reads a size: a whole number (JSON may write 3 as `3.0`), not negative.
fn whole_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
    whole(&raw).ok_or_else(|| serde::de::Error::custom(format!("{} is not a size", raw.get())))
}

impl From<AttachmentDto> for Attachment {
    fn from(a: AttachmentDto) -> Self {
        Self {
            name: a.name,
            media_type: a.media_type,
            size: a.size,
            sha256: a.sha256,
            url: a.url,
        }
    }
}

/// An attachment as a request's detail shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttachmentOut {
    /// Its index: the `{index}` of its download.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Where to download it from this service.
    pub href: String,
}

impl AttachmentOut {
    /// The attachments of request `id` as its detail lists them.
    pub fn list(id: Uuid, attachments: &[Attachment]) -> Vec<Self> {
        attachments
            .iter()
            .enumerate()
            .map(|(index, a)| Self {
                index,
                name: a.name.clone(),
                media_type: a.media_type.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
                href: format!("/v1/requests/{id}/attachments/{index}"),
            })
            .collect()
    }
}

/// Refuses attachments beyond the configured count or size (422 `validation_failed`); the
/// aggregate checks their shape and its own ceilings.
pub fn check_limits(list: &[Attachment], settings: &AttachmentSettings) -> Result<(), ApiError> {
    if list.len() > settings.max_count {
        return Err(ApiError::invalid(format!(
            "a request has at most {} attachments",
            settings.max_count
        )));
    }
    if let Some((index, _)) = list
        .iter()
        .enumerate()
        .find(|(_, a)| a.size > settings.max_bytes)
    {
        return Err(ApiError::invalid(format!(
            "attachments[{index}].size must be at most {} bytes",
            settings.max_bytes
        )));
    }
    Ok(())
}

/// Fetches attachments from the source systems.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    systems: Arc<BTreeMap<String, SystemSettings>>,
    idle: Duration,
    /// The limits of submissions.
    pub settings: AttachmentSettings,
}

impl Fetcher {
    /// A fetcher signing with the secrets of `systems`, with the timeouts of `settings`.
    pub fn new(
        settings: &AttachmentSettings,
        systems: Arc<BTreeMap<String, SystemSettings>>,
    ) -> Result<Self, reqwest::Error> {
        let idle = Duration::from_millis(settings.idle_timeout_ms);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .read_timeout(idle)
            .timeout(Duration::from_millis(settings.total_timeout_ms))
            // The URL is the source system's own: following it elsewhere would send the
            // system's signature to a place nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            systems,
            idle,
            settings: settings.clone(),
        })
    }
}

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::AttachmentUnavailable, message)
}

/// `Content-Disposition` for a file named `name`: ASCII letters, digits and `.-_` as they are,
/// every other byte percent-encoded (RFC 8187), so no name can break the header.
fn disposition(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{encoded}")
}

/// Stream an attachment of a request from its source system.
#[utoipa::path(
    get, path = "/v1/requests/{id}/attachments/{index}", tag = "requests",
    params(
        ("id" = uuid::Uuid, Path),
        ("index" = u32, Path, description = "The attachment's index in the request's detail, from 0", maximum = 49),
    ),
    responses(
        (status = 200, description = "The file's bytes, as its source system serves them; its size and SHA-256 are checked as they pass, and a mismatch breaks the download off", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "`%00` in the URL", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Unknown request or attachment, or the caller may not see the request", body = ErrorBody),
        (status = 502, description = "`attachment_unavailable`: the source system refused, failed or was too slow", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[get("/v1/requests/{id}/attachments/{index}")]
pub async fn download(
    state: web::Data<AppState>,
    req: HttpRequest,
    person: Person,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, index) = path.into_inner();
    let id = request_id(&id)?;
    let index: usize = index.parse().map_err(|_| ApiError::not_found())?;
    let request = approval_projections::requests::get(&state.pool, id.0)
        .await?
        .filter(|r| r.is_visible_to(&person.0))
        .ok_or_else(ApiError::not_found)?;
    let attachment = request
        .attachments
        .get(index)
        .cloned()
        .ok_or_else(|| ApiError::new(Code::NotFound, "no such attachment"))?;
    let fetcher = &state.attachments;
    let system = fetcher
        .systems
        .get(request.system.as_str())
        .ok_or_else(|| unavailable("the request's system is no longer configured"))?;
    let http_request = http_request_id(&req);
    let timestamp = chrono::Utc::now().timestamp();
    let mut call = fetcher
        .client
        .get(&attachment.url)
        .header(crate::signing::TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            crate::signing::SIGNATURE_HEADER,
            crate::signing::signature(system.secret.expose(), timestamp, b""),
        );
    if let Some(http_request) = &http_request {
        call = call.header("X-Request-Id", http_request.as_str());
    }
    let answer = call.send().await.map_err(|e| {
        tracing::warn!(request_id = %id, index, error = %e, "attachment: the source system gave no answer");
        unavailable("the source system did not give the attachment")
    })?;
    if !answer.status().is_success() {
        tracing::warn!(request_id = %id, index, status = %answer.status(), "attachment: the source system refused");
        return Err(unavailable(format!(
            "the source system answered {}",
            answer.status().as_u16()
        )));
    }
    if let Some(length) = answer.content_length() {
        if length != attachment.size {
            tracing::warn!(request_id = %id, index, length, expected = attachment.size,
                "attachment: the source system announces another size");
            return Err(unavailable(
                "the source system serves a file of another size than described",
            ));
        }
    }
    let checked = Checked {
        inner: Box::pin(answer.bytes_stream()),
        idle: fetcher.idle,
        sleep: None,
        expected_size: attachment.size,
        expected_sha256: attachment.sha256.clone(),
        seen: 0,
        hasher: Some(Sha256::new()),
        request_id: id.0,
        index,
    };
    let media_type = HeaderValue::from_str(&attachment.media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let disposition = HeaderValue::from_str(&disposition(&attachment.name))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, media_type))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((header::ETAG, format!("\"{}\"", attachment.sha256)))
        .no_chunking(attachment.size)
        .streaming(checked))
}

/// Why a download broke off.
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("the source system's stream failed: {0}")]
    Source(#[from] reqwest::Error),
    #[error("the source system was silent too long")]
    Idle,
    #[error("the file is larger than its described {0} bytes")]
    TooLarge(u64),
    #[error("the file ended after {seen} of its described {size} bytes")]
    Truncated { seen: u64, size: u64 },
    #[error("the file's SHA-256 is not the one described")]
    Hash,
}

impl From<Broken> for actix_web::Error {
    fn from(e: Broken) -> Self {
        actix_web::error::ErrorBadGateway(e.to_string())
    }
}

/// The source's bytes, passed on as they come, checked as they pass. The piece that completes
/// the described size is held until the hash of the whole file is known, so a wrong file never
/// reaches a clean end.
struct Checked {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    expected_size: u64,
    expected_sha256: String,
    seen: u64,
    /// `None` once the stream ended (well or not).
    hasher: Option<Sha256>,
    request_id: Uuid,
    index: usize,
}

impl Checked {
    fn fail(&mut self, broken: Broken) -> Poll<Option<Result<Bytes, Broken>>> {
        self.hasher = None;
        tracing::warn!(request_id = %self.request_id, index = self.index, error = %broken,
            "attachment: the download was broken off");
        Poll::Ready(Some(Err(broken)))
    }

    /// Takes in one piece from the source: what to pass on, or why to stop.
    fn take(&mut self, piece: Bytes) -> Poll<Option<Result<Bytes, Broken>>> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Poll::Ready(None);
        };
        let seen = self.seen + piece.len() as u64;
        if seen > self.expected_size {
            return self.fail(Broken::TooLarge(self.expected_size));
        }
        hasher.update(&piece);
        self.seen = seen;
        if seen == self.expected_size {
            let digest = self.hasher.take().map(|h| hex::encode(h.finalize()));
            if digest.as_deref() != Some(self.expected_sha256.as_str()) {
                return self.fail(Broken::Hash);
            }
            // The file is complete and proved: whatever the source sends after it is not part
            // of it, and the stream ends after this piece.
        }
        Poll::Ready(Some(Ok(piece)))
    }
}

impl Stream for Checked {
    type Item = Result<Bytes, Broken>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.hasher.is_none() {
            return Poll::Ready(None);
        }
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(piece))) => {
                    self.sleep = None;
                    if piece.is_empty() {
                        continue;
                    }
                    return self.take(piece);
                }
                Poll::Ready(Some(Err(e))) => return self.fail(Broken::Source(e)),
                Poll::Ready(None) => {
                    let (seen, size) = (self.seen, self.expected_size);
                    return self.fail(Broken::Truncated { seen, size });
                }
                Poll::Pending => {
                    let idle = self.idle;
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return self.fail(Broken::Idle);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_cannot_break_its_header() {
        assert_eq!(
            disposition("quote 4711.pdf"),
            "attachment; filename*=UTF-8''quote%204711.pdf"
        );
        assert!(HeaderValue::from_str(&disposition("a\"b\r\nc;é")).is_ok());
    }
}
