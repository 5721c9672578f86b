//! The HTTP face of [`crate::error::Error`]: status code, `code` string and
//! JSON body of api.md ("Errors"). 500s are logged with their cause chain and
//! answered without internal detail.

use crate::error::{Error, Violations};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every 4xx/5xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: `invalid_json`, `unauthorized`, `forbidden`,
    /// `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `validation_failed`, `invalid_transition`,
    /// `rate_limited`, `internal`.
    pub code: &'static str,
    /// What went wrong, in words.
    pub message: String,
    /// Field → messages; present for `validation_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::HashMap<String, Vec<String>>>)]
    pub errors: Option<Violations>,
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Validation(_) | Error::InvalidTransition(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidJson(_) => "invalid_json",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge => "payload_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::Validation(_) => "validation_failed",
            Error::InvalidTransition(_) => "invalid_transition",
            Error::RateLimited { .. } => "rate_limited",
            Error::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            Error::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let code = self.code();
        let errors = match self {
            Error::Validation(v) => Some(v),
            _ => None,
        };
        let mut response = (status, axum::Json(ErrorBody { code, message, errors })).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Answers unknown paths (`404 not_found` in the API's format).
pub async fn not_found() -> Error {
    Error::NotFound("route")
}

/// Answers known paths called with another method.
pub async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// Turns a panic in a handler into a plain 500 in the API's format; the
/// process keeps serving.
pub fn panic_to_500(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Error::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
}
