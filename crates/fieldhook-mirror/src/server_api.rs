//! The mirror's client of fieldhook's REST API: the lists and the history
//! endpoints, which catch-up reads. It authenticates with the configured API
//! key or, without one, with the temporary `X-Planado-Api-Token` of the
//! latest verified delivery (valid 60 s, with the scopes of the key that
//! created the webhook).

use crate::config::Secret;
use crate::replica::Kind;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

/// Items per list and history page: the API's maximum, so that catch-up
/// makes as few calls as it can.
pub const PAGE_SIZE: usize = 100;

/// How long after its delivery a temporary token is still used. fieldhook
/// makes it valid for 60 s from the start of the request; the margin covers
/// the delivery's own time and clock skew between the two machines.
const TOKEN_USABLE_FOR: Duration = Duration::from_secs(50);

/// Why a call to fieldhook's API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Neither an API key nor a fresh delivery token is at hand.
    #[error(
        "no credentials for fieldhook's API: set FIELDHOOK_MIRROR_API_KEY, or wait for a delivery's X-Planado-Api-Token"
    )]
    NoCredentials,
    /// The request could not be made or its answer read.
    #[error("calling fieldhook failed: {0}")]
    Http(#[from] reqwest::Error),
    /// fieldhook answered with an unexpected status.
    #[error("fieldhook answered {status} to GET {path}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What was asked.
        path: String,
        /// fieldhook's error body (`{"code", "message"}`).
        body: String,
    },
    /// The answer is not shaped as api.md documents it.
    #[error("fieldhook's answer to GET {path} has no {key} list")]
    Shape {
        /// What was asked.
        path: String,
        /// The list that was expected.
        key: String,
    },
}

/// fieldhook's API as catch-up uses it (see the [module documentation](self)).
#[derive(Debug)]
pub struct ServerApi {
    http: reqwest::Client,
    base: String,
    api_key: Option<Secret>,
    /// The latest delivery's token and when it arrived.
    token: Mutex<Option<(Secret, Instant)>>,
    /// Wakes whoever waits for credentials (the start-up catch-up of a
    /// mirror without an API key) when a token arrives.
    token_arrived: Notify,
}

impl ServerApi {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:7400`).
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be set up (no TLS backend).
    pub fn new(base_url: &str, api_key: Option<Secret>) -> Result<ServerApi, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("fieldhook-mirror/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(ServerApi {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            api_key,
            token: Mutex::new(None),
            token_arrived: Notify::new(),
        })
    }

    /// Keeps the temporary token of a verified delivery that just arrived.
    pub fn remember_token(&self, token: &str) {
        *self.token_slot() = Some((Secret::from(token), Instant::now()));
        self.token_arrived.notify_waiters();
    }

    /// Whether a call could be made now.
    pub fn has_credentials(&self) -> bool {
        self.credential().is_ok()
    }

    /// Waits until [`has_credentials`](Self::has_credentials) holds.
    pub async fn credentials(&self) {
        loop {
            let arrived = self.token_arrived.notified();
            if self.has_credentials() {
                return;
            }
            arrived.await;
        }
    }

    fn token_slot(&self) -> std::sync::MutexGuard<'_, Option<(Secret, Instant)>> {
        // A token is replaced whole; a panic elsewhere cannot leave half of one.
        self.token.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The API key, else a token young enough to still be valid.
    fn credential(&self) -> Result<Secret, ApiError> {
        if let Some(key) = &self.api_key {
            return Ok(key.clone());
        }
        match &*self.token_slot() {
            Some((token, at)) if at.elapsed() < TOKEN_USABLE_FOR => Ok(token.clone()),
            _ => Err(ApiError::NoCredentials),
        }
    }

    /// One page of a list, newest first (`GET /v2/<plural>?limit&after`).
    ///
    /// # Errors
    ///
    /// An [`ApiError`].
    pub async fn list_page(&self, kind: Kind, after: Option<Uuid>) -> Result<Vec<Value>, ApiError> {
        let mut path = format!("/v2/{}?limit={PAGE_SIZE}", kind.plural());
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        let body = self.get(&path).await?.ok_or_else(|| ApiError::Status {
            status: 404,
            path: path.clone(),
            body: "the list is not there: is the server URL right?".into(),
        })?;
        take_list(body, kind.plural(), &path)
    }

    /// One page of a resource's history after `after_version`, oldest first
    /// (`GET /v2/<plural>/{uuid}/history`); `None` when fieldhook does not
    /// know the resource (it answers 404).
    ///
    /// # Errors
    ///
    /// An [`ApiError`].
    pub async fn history_page(
        &self,
        kind: Kind,
        uuid: Uuid,
        after_version: i64,
    ) -> Result<Option<Vec<Value>>, ApiError> {
        let path = format!("/v2/{}/{uuid}/history?after={after_version}&limit={PAGE_SIZE}", kind.plural());
        match self.get(&path).await? {
            None => Ok(None),
            Some(body) => take_list(body, "history", &path).map(Some),
        }
    }

    /// GETs `path`: the JSON body, or `None` for a 404.
    async fn get(&self, path: &str) -> Result<Option<Value>, ApiError> {
        let credential = self.credential()?;
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(credential.expose()).send().await?;
        let status = response.status().as_u16();
        match status {
            200 => Ok(Some(response.json().await?)),
            404 => Ok(None),
            _ => {
                if status == 401 && self.api_key.is_none() {
                    // The token expired early or its key was revoked: do not
                    // use it again; the next delivery brings a fresh one.
                    *self.token_slot() = None;
                }
                let body = response.text().await.unwrap_or_default();
                Err(ApiError::Status { status, path: path.to_string(), body })
            }
        }
    }
}

fn take_list(mut body: Value, key: &str, path: &str) -> Result<Vec<Value>, ApiError> {
    match body.get_mut(key).map(Value::take) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(ApiError::Shape { path: path.to_string(), key: key.to_string() }),
    }
}
