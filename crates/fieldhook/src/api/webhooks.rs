//! `/v2/webhooks`, the request log and `/v2/event_types` (webhooks.md,
//! "Managing webhooks", "The request log"). Scopes `webhooks:read` and
//! `webhooks:write`.

use super::AppState;
use super::auth::Auth;
use super::error::ErrorBody;
use super::extract::{JsonBody, QueryParams};
use crate::domain::event::{Context, Event, EventType};
use crate::domain::webhook::{Webhook, WebhookInput, WebhookStatus};
use crate::error::{Error, Result};
use crate::storage::webhooks::{self, RequestFilter, RequestLog};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, patch_webhook, delete_webhook))
        .routes(routes!(pause_webhook))
        .routes(routes!(resume_webhook))
        .routes(routes!(test_webhook))
        .routes(routes!(list_requests))
        .routes(routes!(get_request))
        .routes(routes!(resend_request))
        .routes(routes!(event_types))
}

#[derive(Serialize, ToSchema)]
pub struct WebhookUuid {
    pub webhook_uuid: Uuid,
}
#[derive(Serialize, ToSchema)]
pub struct WebhookEnvelope {
    pub webhook: Webhook,
}
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}
#[derive(Serialize, ToSchema)]
pub struct RequestUuid {
    pub request_uuid: Uuid,
}
#[derive(Serialize, ToSchema)]
pub struct RequestList {
    pub requests: Vec<RequestLog>,
}
#[derive(Serialize, ToSchema)]
pub struct RequestEnvelope {
    pub request: RequestLog,
}
#[derive(Serialize, ToSchema)]
pub struct EventTypeInfo {
    pub name: &'static str,
    pub resource: &'static str,
    pub description: &'static str,
}
#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub event_types: Vec<EventTypeInfo>,
}

fn webhook_uuid(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| Error::NotFound("webhook"))
}

async fn load(state: &AppState, auth: &Auth, id: &str) -> Result<Webhook> {
    let uuid = webhook_uuid(id)?;
    let mut conn = state.db.read.acquire().await?;
    webhooks::get(&mut conn, auth.account(), uuid).await?.ok_or(Error::NotFound("webhook"))
}

/// Subscribe a URL to events. `signing_secret` is generated.
#[utoipa::path(post, path = "/v2/webhooks", tag = "webhooks", request_body = WebhookInput,
    responses((status = 201, body = WebhookUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<WebhookInput>,
) -> Result<Response> {
    auth.require("webhooks:write")?;
    let account = auth.account();
    let key = auth.0.key_uuid;
    let now = state.clock.now();
    let webhook = body.value.create(Uuid::now_v7(), now, state.allow_private_targets)?;
    let uuid = webhook.uuid;
    state
        .db
        .committer
        .write(move |conn| Box::pin(async move { webhooks::insert(conn, account, key, &webhook).await }))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(WebhookUuid { webhook_uuid: uuid })).into_response())
}

/// List webhooks, newest first.
#[utoipa::path(get, path = "/v2/webhooks", tag = "webhooks",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("after" = Option<Uuid>, Query)),
    responses((status = 200, body = WebhookList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:read"])))]
pub async fn list_webhooks(State(state): State<AppState>, auth: Auth, mut q: QueryParams) -> Result<Response> {
    auth.require("webhooks:read")?;
    let page = q.page(50, 100)?;
    q.finish()?;
    let mut conn = state.db.read.acquire().await?;
    let list = webhooks::list(&mut conn, auth.account(), page.after, page.limit).await?;
    Ok(axum::Json(WebhookList { webhooks: list }).into_response())
}

/// Get a webhook.
#[utoipa::path(get, path = "/v2/webhooks/{uuid}", tag = "webhooks", params(("uuid" = Uuid, Path)),
    responses((status = 200, body = WebhookEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:read"])))]
pub async fn get_webhook(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("webhooks:read")?;
    Ok(axum::Json(WebhookEnvelope { webhook: load(&state, &auth, &id).await? }).into_response())
}

/// Change a webhook's URL, event types, secret or ordering.
#[utoipa::path(patch, path = "/v2/webhooks/{uuid}", tag = "webhooks", params(("uuid" = Uuid, Path)), request_body = WebhookInput,
    responses((status = 200, body = WebhookUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn patch_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<WebhookInput>,
) -> Result<Response> {
    auth.require("webhooks:write")?;
    let uuid = webhook_uuid(&id)?;
    let account = auth.account();
    let now = state.clock.now();
    let allow_private = state.allow_private_targets;
    let input = body.value;
    state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let current = webhooks::get(conn, account, uuid).await?.ok_or(Error::NotFound("webhook"))?;
                let next = input.apply(&current, now, allow_private)?;
                webhooks::update(conn, account, current.ordering, &next).await
            })
        })
        .await?;
    Ok(axum::Json(WebhookUuid { webhook_uuid: uuid }).into_response())
}

/// Delete a webhook; its scheduled requests are dropped.
#[utoipa::path(delete, path = "/v2/webhooks/{uuid}", tag = "webhooks", params(("uuid" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn delete_webhook(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("webhooks:write")?;
    let uuid = webhook_uuid(&id)?;
    let account = auth.account();
    let now = state.clock.now();
    let removed = state
        .db
        .committer
        .write(move |conn| Box::pin(async move { webhooks::remove(conn, account, uuid, now).await }))
        .await?;
    if !removed {
        return Err(Error::NotFound("webhook"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_status(state: &AppState, auth: &Auth, id: &str, status: WebhookStatus) -> Result<Response> {
    auth.require("webhooks:write")?;
    let uuid = webhook_uuid(id)?;
    let account = auth.account();
    let now = state.clock.now();
    let webhook = state
        .db
        .committer
        .write(move |conn| Box::pin(async move { webhooks::set_status(conn, account, uuid, status, now).await }))
        .await?
        .ok_or(Error::NotFound("webhook"))?;
    Ok(axum::Json(WebhookEnvelope { webhook }).into_response())
}

/// Pause: events keep being recorded as scheduled requests; nothing is sent.
#[utoipa::path(post, path = "/v2/webhooks/{uuid}/pause", tag = "webhooks", params(("uuid" = Uuid, Path)),
    responses((status = 200, body = WebhookEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn pause_webhook(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    set_status(&state, &auth, &id, WebhookStatus::Paused).await
}

/// Lift a pause or a suspension; pending requests become due now.
#[utoipa::path(post, path = "/v2/webhooks/{uuid}/resume", tag = "webhooks", params(("uuid" = Uuid, Path)),
    responses((status = 200, body = WebhookEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn resume_webhook(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    set_status(&state, &auth, &id, WebhookStatus::Active).await
}

/// Send a `webhook_test` event now.
#[utoipa::path(post, path = "/v2/webhooks/{uuid}/test", tag = "webhooks", params(("uuid" = Uuid, Path)),
    responses((status = 202, body = RequestUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn test_webhook(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("webhooks:write")?;
    let uuid = webhook_uuid(&id)?;
    let account = auth.account();
    let now = state.clock.now();
    let request = state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let mut webhook = webhooks::get(conn, account, uuid).await?.ok_or(Error::NotFound("webhook"))?;
                // The receiver already holds its secrets; they are not echoed.
                webhook.secret = None;
                webhook.signing_secret = String::new();
                let mut snapshot = serde_json::to_value(&webhook)?;
                snapshot["version"] = json!(0);
                let event = Event::new(EventType::WebhookTest, "webhook", uuid, 0, &Context::api(now), &snapshot)?;
                webhooks::record_test(conn, account, uuid, &event).await
            })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(RequestUuid { request_uuid: request })).into_response())
}

/// The request log of a webhook, newest first.
#[utoipa::path(get, path = "/v2/webhooks/{uuid}/requests", tag = "webhooks",
    params(("uuid" = Uuid, Path),
        ("filter" = Option<String>, Query, pattern = "^(scheduled|failed)$", description = "`scheduled` (still waiting) or `failed` (retries ran out)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("after" = Option<Uuid>, Query)),
    responses((status = 200, body = RequestList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:read"])))]
pub async fn list_requests(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    mut q: QueryParams,
) -> Result<Response> {
    auth.require("webhooks:read")?;
    let filter = match q.take("filter").as_deref() {
        None => RequestFilter::All,
        Some("scheduled") => RequestFilter::Scheduled,
        Some("failed") => RequestFilter::Failed,
        Some(other) => return Err(Error::invalid("filter", format!("must be scheduled or failed, got {other:?}"))),
    };
    let page = q.page(50, 100)?;
    q.finish()?;
    let webhook = load(&state, &auth, &id).await?;
    let mut conn = state.db.read.acquire().await?;
    let requests = webhooks::list_requests(&mut conn, webhook.uuid, filter, page.after, page.limit).await?;
    Ok(axum::Json(RequestList { requests }).into_response())
}

/// One request of the log.
#[utoipa::path(get, path = "/v2/webhooks/{uuid}/requests/{request_uuid}", tag = "webhooks",
    params(("uuid" = Uuid, Path), ("request_uuid" = Uuid, Path)),
    responses((status = 200, body = RequestEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:read"])))]
pub async fn get_request(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, request)): Path<(String, String)>,
) -> Result<Response> {
    auth.require("webhooks:read")?;
    let webhook = load(&state, &auth, &id).await?;
    let request = Uuid::parse_str(&request).map_err(|_| Error::NotFound("request"))?;
    let mut conn = state.db.read.acquire().await?;
    let found = webhooks::get_request(&mut conn, webhook.uuid, request).await?.ok_or(Error::NotFound("request"))?;
    Ok(axum::Json(RequestEnvelope { request: found }).into_response())
}

/// Deliver that request's event again now, whatever happened before.
#[utoipa::path(post, path = "/v2/webhooks/{uuid}/requests/{request_uuid}/resend", tag = "webhooks",
    params(("uuid" = Uuid, Path), ("request_uuid" = Uuid, Path)),
    responses((status = 202, body = RequestUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["webhooks:write"])))]
pub async fn resend_request(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, request)): Path<(String, String)>,
) -> Result<Response> {
    auth.require("webhooks:write")?;
    let webhook = load(&state, &auth, &id).await?;
    let request = Uuid::parse_str(&request).map_err(|_| Error::NotFound("request"))?;
    let account = auth.account();
    let now = state.clock.now();
    let uuid = state
        .db
        .committer
        .write(move |conn| Box::pin(async move { webhooks::resend(conn, account, webhook.uuid, request, now).await }))
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(RequestUuid { request_uuid: uuid })).into_response())
}

/// The event types a webhook can subscribe to.
#[utoipa::path(get, path = "/v2/event_types", tag = "webhooks",
    responses((status = 200, body = EventTypeList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn event_types(_auth: Auth) -> Response {
    let event_types = EventType::ALL
        .iter()
        .filter(|t| t.subscribable())
        .map(|t| EventTypeInfo { name: t.name(), resource: t.resource(), description: t.description() })
        .collect();
    axum::Json(EventTypeList { event_types }).into_response()
}
