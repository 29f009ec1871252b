//! The one table of error codes: each stable snake_case code with its HTTP status. Every error the
//! API answers is `{"error": {"code", "message"}}` with a code from here; docs/api.md lists them
//! (a test checks that it does).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use approval_aggregates::DomainError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ledger::LedgerError;

macro_rules! codes {
    ($($variant:ident => $code:literal, $status:ident, $doc:literal;)*) => {
        /// A stable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $(#[doc = $doc] $variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as clients see it.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The HTTP status that goes with it.
            pub fn status(self) -> StatusCode {
                match self { $(Code::$variant => StatusCode::$status,)* }
            }
        }
    };
}

codes! {
    BadRequest => "bad_request", BAD_REQUEST, "The body, a header or a parameter is malformed.";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE, "The body is larger than the configured limit.";
    Unauthorized => "unauthorized", UNAUTHORIZED, "No valid token or system signature.";
    Forbidden => "forbidden", FORBIDDEN, "The caller may not do this.";
    NotAnApprover => "not_an_approver", FORBIDDEN, "The caller is not an approver of the current step.";
    OwnRequest => "own_request", FORBIDDEN, "A requester cannot decide their own request.";
    NotRequester => "not_requester", FORBIDDEN, "Only the requester may withdraw the request or answer its question.";
    NotFound => "not_found", NOT_FOUND, "No such request or route, or the caller may not see it.";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED, "The route does not take this method.";
    VersionConflict => "version_conflict", CONFLICT, "expected_version is stale, or another decision won the race.";
    NotPending => "not_pending", CONFLICT, "The request is final and accepts nothing more.";
    AlreadyDecided => "already_decided", CONFLICT, "The caller already decided the current step.";
    ValidationFailed => "validation_failed", UNPROCESSABLE_ENTITY, "Valid JSON that breaks a rule of the request's shape or size.";
    CommentRequired => "comment_required", UNPROCESSABLE_ENTITY, "Rejecting or returning needs a comment.";
    InvalidDelegate => "invalid_delegate", UNPROCESSABLE_ENTITY, "The delegate cannot take the caller's place.";
    TimerStale => "timer_stale", CONFLICT, "A timer's command no longer applies (sent only by the service's own timers, never answered to a client).";
    IdempotencyKeyReused => "idempotency_key_reused", UNPROCESSABLE_ENTITY, "The Idempotency-Key was used for a different call.";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The body is not JSON.";
    Unavailable => "unavailable", SERVICE_UNAVAILABLE, "A dependency is down; retry after Retry-After seconds.";
    Internal => "internal", INTERNAL_SERVER_ERROR, "A fault in the service; it is logged with the request id.";
    QuestionOpen => "question_open", CONFLICT, "A question on the request is already waiting for its answer.";
    NoOpenQuestion => "no_open_question", CONFLICT, "No question on the request is waiting for an answer.";
    NotAParticipant => "not_a_participant", FORBIDDEN, "Only the requester, an approver or a delegate of the request may comment on it.";
    NotReturned => "not_returned", CONFLICT, "Only a returned request can be resubmitted.";
    AttachmentUnavailable => "attachment_unavailable", BAD_GATEWAY, "The source system could not give the attachment (refused, failed, or too slow).";
    OverAuthorityLimit => "over_authority_limit", FORBIDDEN, "The amount is above the most the caller may approve in its currency ([policy.limits]).";
    SeparationOfDuties => "separation_of_duties", FORBIDDEN, "The caller (or the person they stand in for) approved another step of the request.";
    ExpectedVersionRequired => "expected_version_required", UNPROCESSABLE_ENTITY, "The amount is above [policy] require_version_above: the decision must send expected_version.";
    InvalidAbsence => "invalid_absence", UNPROCESSABLE_ENTITY, "until is not after from (or is past), the deputy is the caller, or it would close a circle of deputies.";
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code from the error table.
    #[schema(example = "version_conflict")]
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Its code.
    pub code: Code,
    /// Its message, safe to show: never SQL, never a stack trace.
    pub message: String,
}

/// Seconds a client should wait before retrying after `unavailable`.
pub const RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
            },
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    /// A 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, message)
    }

    /// A 404.
    pub fn not_found() -> Self {
        Self::new(Code::NotFound, "no such request")
    }

    /// A 422.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::ValidationFailed, message)
    }

    /// A 503 for a dependency that is down; the cause is logged, not shown.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "a dependency is unavailable");
        Self::new(
            Code::Unavailable,
            "a dependency is unavailable; retry shortly",
        )
    }

    /// A 500; the cause is logged, not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::Internal, "internal error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self.code {
            Code::Unavailable => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            Code::Unauthorized => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"approval-ledger\""),
                ));
            }
            _ => {}
        }
        response.json(self.body())
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let code = match &e {
            DomainError::NotFound => Code::NotFound,
            DomainError::Invalid(_) => Code::ValidationFailed,
            DomainError::CommentRequired(_) => Code::CommentRequired,
            DomainError::OwnRequest => Code::OwnRequest,
            DomainError::NotAnApprover => Code::NotAnApprover,
            DomainError::NotRequester => Code::NotRequester,
            DomainError::AlreadyDecided => Code::AlreadyDecided,
            DomainError::NotPending(_) => Code::NotPending,
            DomainError::VersionConflict { .. } => Code::VersionConflict,
            DomainError::InvalidDelegate(_) => Code::InvalidDelegate,
            DomainError::NotDue => Code::ValidationFailed,
            DomainError::TimerStale(_) => Code::TimerStale,
            DomainError::OnlyRequesterAnswers => Code::NotRequester,
            DomainError::QuestionOpen => Code::QuestionOpen,
            DomainError::NoOpenQuestion => Code::NoOpenQuestion,
            DomainError::NotAParticipant => Code::NotAParticipant,
            DomainError::NotReturned(_) => Code::NotReturned,
            DomainError::OverAuthorityLimit { .. } => Code::OverAuthorityLimit,
            DomainError::SeparationOfDuties => Code::SeparationOfDuties,
            DomainError::ExpectedVersionRequired(_) => Code::ExpectedVersionRequired,
            DomainError::InvalidAbsence(_) => Code::InvalidAbsence,
            DomainError::Forbidden(_) => Code::Forbidden,
            DomainError::AbsenceNotFound => Code::NotFound,
        };
        Self::new(code, e.to_string())
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Domain(d) => d.into(),
            LedgerError::Conflict(message) => Self::new(Code::VersionConflict, message),
            LedgerError::Unavailable(cause) => Self::unavailable(&cause),
            LedgerError::Internal(cause) => Self::internal(&cause),
        }
    }
}

impl From<approval_projections::ProjectionError> for ApiError {
    fn from(e: approval_projections::ProjectionError) -> Self {
        match &e {
            approval_projections::ProjectionError::Database(db)
                if crate::store::is_unavailable(db) =>
            {
                Self::unavailable(&e)
            }
            _ => Self::internal(&e),
        }
    }
}

impl From<crate::feed::FeedError> for ApiError {
    fn from(e: crate::feed::FeedError) -> Self {
        match &e {
            crate::feed::FeedError::Database(db) if crate::store::is_unavailable(db) => {
                Self::unavailable(&e)
            }
            _ => Self::internal(&e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::store::is_unavailable(&e) {
            Self::unavailable(&e)
        } else {
            Self::internal(&e)
        }
    }
}

/// The code that fits a status the framework chose itself (an unknown route, a wrong method, a
/// body over the limit), so those answers have the same shape as ours.
pub fn code_for_status(status: StatusCode) -> Code {
    match status.as_u16() {
        401 => Code::Unauthorized,
        403 => Code::Forbidden,
        404 => Code::NotFound,
        405 => Code::MethodNotAllowed,
        413 => Code::PayloadTooLarge,
        415 => Code::UnsupportedMediaType,
        503 => Code::Unavailable,
        500..=599 => Code::Internal,
        _ => Code::BadRequest,
    }
}
