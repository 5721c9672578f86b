//! `/v2/api_keys`: per-integration keys (api.md, "Authentication"). Every
//! call needs `api_keys:write`; a key never grants more than its creator.

use super::AppState;
use super::auth::Auth;
use super::error::ErrorBody;
use super::extract::JsonBody;
use crate::domain::scope::Scopes;
use crate::error::{Error, Result};
use crate::storage::accounts::{self, ApiKeyInfo, NewApiKey};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    /// Which integration uses the key ("the CRM", "billing").
    #[schema(max_length = 200, pattern = r"\S")]
    pub name: String,
    /// Scope names, or `*` for all.
    pub scopes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyInfo>,
}

/// Validates a key request against the scopes of the key that makes it.
pub fn validate_key_request(name: &str, scopes: &[String], creator: &Scopes) -> Result<Scopes> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid("name", "must be 1 to 200 characters"));
    }
    let scopes = Scopes::parse(scopes).map_err(|s| Error::invalid("scopes", format!("{s:?} is not a scope")))?;
    if scopes.is_empty() {
        return Err(Error::invalid("scopes", "must name at least one scope"));
    }
    if !creator.covers(&scopes) {
        return Err(Error::Forbidden("a key cannot grant scopes that the key creating it does not hold".into()));
    }
    Ok(scopes)
}

/// Create an API key; its secret is shown in this answer only.
#[utoipa::path(post, path = "/v2/api_keys", tag = "api keys", request_body = ApiKeyInput,
    responses((status = 201, body = NewApiKey), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["api_keys:write"])))]
pub async fn create_key(State(state): State<AppState>, auth: Auth, body: JsonBody<ApiKeyInput>) -> Result<Response> {
    auth.require("api_keys:write")?;
    let input = body.value;
    let scopes = validate_key_request(&input.name, &input.scopes, &auth.0.scopes)?;
    let account = auth.account();
    let now = state.clock.now();
    let name = input.name.trim().to_string();
    let key = state
        .db
        .committer
        .write(move |conn| Box::pin(async move { accounts::create_key(conn, account, &name, &scopes, now).await }))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(key)).into_response())
}

/// List the account's API keys (never their secrets).
#[utoipa::path(get, path = "/v2/api_keys", tag = "api keys",
    responses((status = 200, body = ApiKeyList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["api_keys:write"])))]
pub async fn list_keys(State(state): State<AppState>, auth: Auth) -> Result<Response> {
    auth.require("api_keys:write")?;
    let mut conn = state.db.read.acquire().await?;
    let keys = accounts::list_keys(&mut conn, auth.account()).await?;
    Ok(axum::Json(ApiKeyList { api_keys: keys }).into_response())
}

/// Revoke an API key; it stops working with the next request.
#[utoipa::path(delete, path = "/v2/api_keys/{uuid}", tag = "api keys", params(("uuid" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["api_keys:write"])))]
pub async fn revoke_key(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("api_keys:write")?;
    let uuid = Uuid::parse_str(&id).map_err(|_| Error::NotFound("api key"))?;
    let account = auth.account();
    let now = state.clock.now();
    let revoked = state
        .db
        .committer
        .write(move |conn| Box::pin(async move { accounts::revoke_key(conn, account, uuid, now).await }))
        .await?;
    if !revoked {
        return Err(Error::NotFound("api key"));
    }
    if let Some(cache) = &state.keys {
        cache.clear();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
