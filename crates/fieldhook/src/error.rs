//! The one error type of fieldhook. Every layer returns it; `api::error` maps
//! each variant to the status code and `code` string of api.md ("Errors").

use std::collections::BTreeMap;
use std::fmt;

/// Result with fieldhook's error by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Field path → messages, the `errors` object of a `validation_failed` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Violations(BTreeMap<String, Vec<String>>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// One violation, for the common case of a single bad field.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut v = Self::new();
        v.add(field, message);
        v
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was found, the collected violations otherwise.
    pub fn into_result(self) -> Result<()> {
        if self.is_empty() { Ok(()) } else { Err(Error::Validation(self)) }
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Display for Violations {
    /// The first violation as one sentence ("scheduled_duration.minutes must be …").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.iter().next() {
            Some((field, messages)) => write!(f, "{field} {}", messages.join(", ")),
            None => f.write_str("validation failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 `invalid_json`: the body is not well-formed JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// 401 `unauthorized`: missing, malformed, unknown, revoked or expired credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403 `forbidden`: a valid key without the needed scope.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`: absent, removed, or belonging to another account.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `conflict`: stale version, resource in use, idempotency key reuse.
    #[error("{0}")]
    Conflict(String),
    /// 413 `payload_too_large`.
    #[error("request body is larger than 1 MiB")]
    PayloadTooLarge,
    /// 415 `unsupported_media_type`.
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    /// 422 `validation_failed`, with the offending fields.
    #[error("{0}")]
    Validation(Violations),
    /// 422 `invalid_transition`: a job action not allowed from the current status.
    #[error("{0}")]
    InvalidTransition(String),
    /// 429 `rate_limited`, answered with `Retry-After`.
    #[error("rate limit exceeded, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 500 `internal`: logged with its cause chain, answered without detail.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// Shorthand for a single-field validation failure.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(Violations::one(field, message))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(anyhow::Error::new(e))
    }
}

impl From<crate::storage::sql::SqlError> for Error {
    fn from(e: crate::storage::sql::SqlError) -> Self {
        Error::Internal(anyhow::Error::new(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(anyhow::Error::new(e))
    }
}
