//! Request extractors that answer in the API's own error format: JSON bodies
//! (415 / 413 / 400 / 422 naming the field) and list query strings (unknown
//! parameters are refused, like unknown body fields).

use crate::error::{Error, Violations};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

/// Largest accepted body (api.md: "a body over 1 MiB gets 413").
pub const MAX_BODY: usize = 1024 * 1024;

/// A JSON request body, validated into `T`. Keeps the raw bytes for
/// idempotency fingerprints.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, _: &S) -> Result<Self, Error> {
        let (parts, body) = req.into_parts();
        let is_json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(Error::UnsupportedMediaType);
        }
        let raw = read_body(body).await?;
        let value = parse(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// An optional JSON body (job actions): empty, or `null` (which the
/// document allows, as the body's schema is nullable), means `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let empty = req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v == "0")
            || (req.headers().get(header::CONTENT_TYPE).is_none()
                && req.headers().get(header::TRANSFER_ENCODING).is_none()
                && req.headers().get(header::CONTENT_LENGTH).is_none());
        if empty {
            return Ok(OptionalJsonBody(T::default()));
        }
        JsonBody::<Option<T>>::from_request(req, state).await.map(|b| OptionalJsonBody(b.value.unwrap_or_default()))
    }
}

async fn read_body(body: Body) -> Result<Bytes, Error> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large { Error::PayloadTooLarge } else { Error::InvalidJson(format!("could not read the body: {e}")) }
    })
}

/// Parses JSON in two steps so that each failure gets its own answer:
/// malformed JSON → 400; well-formed but wrong for `T` → 422 naming the field.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Error> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| Error::InvalidJson(format!("body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let parent = if path == "." { String::new() } else { path };
        let message = e.inner().to_string();
        let (field, message) = if let Some(name) = quoted_after(&message, "unknown field `") {
            // The path already ends with the unknown field's name.
            let field = if parent.is_empty() || !parent.ends_with(&name) { join(&parent, &name) } else { parent };
            (field, "is not a known field".to_string())
        } else if let Some(name) = quoted_after(&message, "missing field `") {
            (join(&parent, &name), "is required".to_string())
        } else {
            (if parent.is_empty() { "body".to_string() } else { parent }, message)
        };
        Error::Validation(Violations::one(field, message))
    })
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name.to_string())
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}.{name}") }
}

/// The parameters of a list query string. Every parameter must be consumed
/// by the handler; [`QueryParams::finish`] refuses the rest by name.
#[derive(Debug, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or("");
        Ok(QueryParams { pairs: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect() })
    }
}

impl QueryParams {
    /// Takes every value of `name` (repeatable parameters such as `status[]`).
    pub fn take_all(&mut self, name: &str) -> Vec<String> {
        let mut taken = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                taken.push(v.clone());
                false
            } else {
                true
            }
        });
        taken
    }

    /// Takes the single value of `name`, if present.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.take_all(name).pop()
    }

    /// `limit` (default `default`, at most `max`) and `after`.
    pub fn page(&mut self, default: i64, max: i64) -> Result<crate::storage::resources::Page, Error> {
        let limit = match self.take("limit") {
            None => default,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => return Err(Error::invalid("limit", format!("must be an integer between 1 and {max}"))),
            },
        };
        let after = self
            .take("after")
            .map(|s| uuid::Uuid::parse_str(&s).map_err(|_| Error::invalid("after", "must be a uuid")))
            .transpose()?;
        Ok(crate::storage::resources::Page { after, limit })
    }

    /// A timestamp parameter such as `updated_at[after]`, in microseconds.
    pub fn take_time(&mut self, name: &str) -> Result<Option<i64>, Error> {
        self.take(name)
            .map(|s| {
                crate::domain::common::ts::parse(&s).map(crate::clock::to_micros).map_err(|m| Error::invalid(name, m))
            })
            .transpose()
    }

    pub fn take_uuid(&mut self, name: &str) -> Result<Option<uuid::Uuid>, Error> {
        self.take(name)
            .map(|s| uuid::Uuid::parse_str(&s).map_err(|_| Error::invalid(name, "must be a uuid")))
            .transpose()
    }

    /// Refuses whatever the handler did not take.
    pub fn finish(self) -> Result<(), Error> {
        let mut v = Violations::new();
        for (k, _) in self.pairs {
            v.add(k, "is not a known query parameter");
        }
        v.into_result()
    }
}
