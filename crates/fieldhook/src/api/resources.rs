//! What jobs, clients and sites have in common over HTTP: create (with
//! idempotency), get by uuid or external_id, PATCH (optimistic version,
//! upsert), DELETE, list pages and history. Each resource module implements
//! [`ApiResource`] and keeps thin, documented handlers that call in here.

use super::AppState;
use super::auth::Auth;
use super::extract::{JsonBody, QueryParams};
use super::write::{self, WriteOp, raw_json, wrap_doc, wrap_docs};
use crate::domain::EntityKind;
use crate::domain::common::{RefInput, RefOutput};
use crate::domain::event::{Context, EventType};
use crate::error::{Error, Result};
use crate::storage::events;
use crate::storage::resources::{self, Filter, Stored};
use crate::storage::sql::Conn;
use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// What accompanies one write besides its body: the time, the request's
/// choices (headers) and the server's push gateway.
#[derive(Debug, Clone)]
pub struct WriteContext {
    pub now: DateTime<Utc>,
    /// `X-Planado-Notify-Assignees: false` turns assignee notifications off.
    pub notify_assignees: bool,
    pub push_url: Option<String>,
}

impl WriteContext {
    pub fn new(state: &AppState, headers: &HeaderMap) -> Self {
        let notify_assignees = headers
            .get("x-planado-notify-assignees")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"));
        WriteContext { now: state.clock.now(), notify_assignees, push_url: state.push_url.clone() }
    }
}

/// A versioned resource served under `/v2/<plural>`.
#[async_trait]
pub trait ApiResource: Stored {
    type Input: DeserializeOwned + Clone + Send + Sync + 'static;
    /// `client` — the key of one resource in answers and the prefix of `<name>_uuid`.
    const NAME: &'static str;
    /// `clients` — the path segment and the key of lists.
    const PLURAL: &'static str;
    const READ_SCOPE: &'static str;
    const WRITE_SCOPE: &'static str;

    /// The `version` the caller expects (PATCH), if it sent one.
    fn expected_version(input: &Self::Input) -> Option<i64>;

    /// For upsert: the external_id the new resource takes from the path.
    fn set_external_id(input: &mut Self::Input, external_id: String);

    /// Builds the new state from the request: a new resource when `current`
    /// is `None`. Also returns the events that accompany the CRUD event.
    async fn build(
        conn: &mut Conn,
        account: Uuid,
        input: Self::Input,
        current: Option<&Self>,
        now: DateTime<Utc>,
    ) -> Result<(Self, Vec<EventType>)>;

    /// Refuses removal while something refers to the resource (409).
    async fn check_removable(conn: &mut Conn, resource: &Self) -> Result<()>;

    /// Work that goes with a change, in its transaction (jobs notify their
    /// assignees). `before` is `None` for a creation.
    async fn after_write(
        _conn: &mut Conn,
        _account: Uuid,
        _before: Option<&Self>,
        _after: &Self,
        _write: &WriteContext,
    ) -> Result<()> {
        Ok(())
    }
}

fn uuid_key<R: ApiResource>() -> String {
    format!("{}_uuid", R::NAME)
}

pub async fn create<R: ApiResource>(
    state: &AppState,
    auth: &Auth,
    headers: &HeaderMap,
    body: JsonBody<R::Input>,
) -> Result<Response> {
    auth.require(R::WRITE_SCOPE)?;
    let account = auth.account();
    let write = WriteContext::new(state, headers);
    let now = write.now;
    let input = body.value;
    let op: WriteOp = std::sync::Arc::new(move |conn| {
        let (input, write) = (input.clone(), write.clone());
        Box::pin(async move {
            let (resource, extra) = R::build(conn, account, input, None, now).await?;
            resources::create(conn, account, &resource, &Context::api(now), &extra).await?;
            R::after_write(conn, account, None, &resource, &write).await?;
            Ok((StatusCode::CREATED, serde_json::json!({ uuid_key::<R>(): resource.uuid() })))
        })
    });
    write::create(state, account, headers, &format!("/v2/{}", R::PLURAL), &body.raw, op).await
}

pub async fn get<R: ApiResource>(state: &AppState, auth: &Auth, id: &str) -> Result<Response> {
    auth.require(R::READ_SCOPE)?;
    let mut conn = state.db.read.acquire().await?;
    let found = resources::find::<R>(&mut conn, auth.account(), id, false).await?.ok_or(Error::NotFound(R::NAME))?;
    Ok(raw_json(StatusCode::OK, wrap_doc(R::NAME, &serde_json::to_string(&found)?)))
}

/// PATCH; with `upsert`, an unknown id is taken as an external_id and the
/// resource is created with it (201).
pub async fn patch<R: ApiResource>(
    state: &AppState,
    auth: &Auth,
    headers: &HeaderMap,
    id: String,
    body: JsonBody<R::Input>,
    upsert: bool,
) -> Result<Response> {
    auth.require(R::WRITE_SCOPE)?;
    let account = auth.account();
    let write = WriteContext::new(state, headers);
    let now = write.now;
    let mut input = body.value;
    let (status, uuid) = state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let ctx = Context::api(now);
                match resources::find::<R>(conn, account, &id, true).await? {
                    Some(current) => {
                        resources::check_version(&current, R::expected_version(&input))?;
                        let (next, extra) = R::build(conn, account, input, Some(&current), now).await?;
                        if let Some(saved) = resources::save(conn, account, &current, next, &ctx, now, &extra).await? {
                            R::after_write(conn, account, Some(&current), &saved, &write).await?;
                        }
                        Ok((StatusCode::OK, current.uuid()))
                    }
                    None if upsert => {
                        R::set_external_id(&mut input, id);
                        let (created, extra) = R::build(conn, account, input, None, now).await?;
                        resources::create(conn, account, &created, &ctx, &extra).await?;
                        R::after_write(conn, account, None, &created, &write).await?;
                        Ok((StatusCode::CREATED, created.uuid()))
                    }
                    None => Err(Error::NotFound(R::NAME)),
                }
            })
        })
        .await?;
    Ok((status, axum::Json(serde_json::json!({ uuid_key::<R>(): uuid }))).into_response())
}

pub async fn delete<R: ApiResource>(state: &AppState, auth: &Auth, id: String) -> Result<Response> {
    auth.require(R::WRITE_SCOPE)?;
    let account = auth.account();
    let now = state.clock.now();
    state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let current = resources::find::<R>(conn, account, &id, true).await?.ok_or(Error::NotFound(R::NAME))?;
                R::check_removable(conn, &current).await?;
                resources::remove(conn, account, current, &Context::api(now), now).await
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list<R: ApiResource>(
    state: &AppState,
    auth: &Auth,
    mut query: QueryParams,
    mut filters: Vec<Filter>,
) -> Result<Response> {
    auth.require(R::READ_SCOPE)?;
    let page = query.page(50, 100)?;
    if let Some(t) = query.take_time("updated_at[after]")? {
        filters.push(Filter {
            column: "updated_at",
            op: resources::Op::Gt,
            values: vec![resources::Param::Int(Some(t))],
        });
    }
    if let Some(t) = query.take_time("updated_at[before]")? {
        filters.push(Filter {
            column: "updated_at",
            op: resources::Op::Lt,
            values: vec![resources::Param::Int(Some(t))],
        });
    }
    query.finish()?;
    // A filter on an unindexed column may scan the account's rows: off the
    // runtime's threads (see ReadPool::run_long).
    let account = auth.account();
    let docs = state
        .db
        .read
        .run_long(move |conn| {
            Box::pin(async move { resources::list_docs(conn, R::KIND.table(), account, true, filters, &page).await })
        })
        .await??;
    Ok(raw_json(StatusCode::OK, wrap_docs(R::PLURAL, &docs)))
}

/// `GET /v2/<plural>/{id}/history`: readable by uuid even after removal.
pub async fn history<R: ApiResource>(
    state: &AppState,
    auth: &Auth,
    id: &str,
    mut query: QueryParams,
) -> Result<Response> {
    auth.require(R::READ_SCOPE)?;
    let after = match query.take("after") {
        None => 0,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| Error::invalid("after", "must be a version number"))?,
    };
    let limit = match query.take("limit") {
        None => 20,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| Error::invalid("limit", "must be an integer between 1 and 100"))?,
    };
    query.finish()?;
    let account = auth.account();
    let mut conn = state.db.read.acquire().await?;
    let uuid = match resources::find::<R>(&mut conn, account, id, false).await? {
        Some(r) => r.uuid(),
        None => match Uuid::parse_str(id) {
            Ok(u) if resources::existed(&mut conn, R::KIND, account, u).await? => u,
            _ => return Err(Error::NotFound(R::NAME)),
        },
    };
    let entries = events::history(&mut conn, uuid, after, limit).await?;
    Ok(axum::Json(serde_json::json!({ "history": entries })).into_response())
}

/// Resolves a `{"uuid"}` / `{"external_id"}` reference of a request to a
/// live resource of the account; `422` naming `field` when it is malformed
/// or points at nothing. Also returns the target's stored document.
pub async fn resolve_ref(
    conn: &mut Conn,
    kind: EntityKind,
    account: Uuid,
    field: &str,
    reference: Option<Option<RefInput>>,
) -> Result<Option<Option<(RefOutput, String)>>> {
    let Some(reference) = reference else { return Ok(None) };
    let Some(r) = reference else { return Ok(Some(None)) };
    if r.uuid.is_some() == r.external_id.is_some() {
        return Err(Error::invalid(field, "must have exactly one of uuid and external_id"));
    }
    let found = resources::reference(conn, kind, account, r.uuid, r.external_id.as_deref()).await?;
    match found {
        Some((uuid, external_id, doc)) => Ok(Some(Some((RefOutput { uuid, external_id }, doc)))),
        None => Err(Error::invalid(field, format!("refers to a {} that does not exist", kind.as_str()))),
    }
}

/// Generates the documented handlers of a versioned resource: create, get,
/// PATCH, DELETE and history (lists differ by filters and stay by hand).
/// utoipa needs literal paths, hence the macro rather than generic handlers.
#[macro_export]
macro_rules! resource_handlers {
    (
        resource: $R:ty, input: $Input:ty, tag: $tag:literal,
        read: $read:literal, write: $write:literal, upsert: $upsert:expr,
        collection: $collection:literal, item: $item:literal, history: $history:literal,
        uuid_body: $UuidBody:ident { $uuid_field:ident }, envelope: $Envelope:ident { $one:ident },
        handlers: [$create:ident, $get:ident, $patch:ident, $delete:ident, $hist:ident]
    ) => {
        #[derive(serde::Serialize, utoipa::ToSchema)]
        pub struct $UuidBody {
            pub $uuid_field: uuid::Uuid,
        }

        #[derive(serde::Serialize, utoipa::ToSchema)]
        pub struct $Envelope {
            pub $one: $R,
        }

        #[doc = "Create one; `Idempotency-Key` makes a repeat safe (same answer, nothing created twice)."]
        #[utoipa::path(post, path = $collection, tag = $tag, request_body = $Input,
            params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe creation, remembered 24 h")),
            responses((status = 201, body = $UuidBody), (status = "4XX", body = $crate::api::error::ErrorBody)),
            security(("api_key" = [$write])))]
        pub async fn $create(
            axum::extract::State(state): axum::extract::State<$crate::api::AppState>,
            auth: $crate::api::auth::Auth,
            headers: axum::http::HeaderMap,
            body: $crate::api::extract::JsonBody<$Input>,
        ) -> $crate::error::Result<axum::response::Response> {
            $crate::api::resources::create::<$R>(&state, &auth, &headers, body).await
        }

        #[doc = "Get one by uuid or external_id."]
        #[utoipa::path(get, path = $item, tag = $tag,
            params(("id" = String, Path, description = "uuid or external_id")),
            responses((status = 200, body = $Envelope), (status = "4XX", body = $crate::api::error::ErrorBody)),
            security(("api_key" = [$read])))]
        pub async fn $get(
            axum::extract::State(state): axum::extract::State<$crate::api::AppState>,
            auth: $crate::api::auth::Auth,
            axum::extract::Path(id): axum::extract::Path<String>,
        ) -> $crate::error::Result<axum::response::Response> {
            $crate::api::resources::get::<$R>(&state, &auth, &id).await
        }

        #[doc = "Change fields; `version` makes it conditional (409 when stale). For clients and sites an unknown external_id creates the resource (201)."]
        #[utoipa::path(patch, path = $item, tag = $tag, request_body = $Input,
            params(("id" = String, Path, description = "uuid or external_id")),
            responses((status = 200, body = $UuidBody), (status = 201, body = $UuidBody),
                (status = "4XX", body = $crate::api::error::ErrorBody)),
            security(("api_key" = [$write])))]
        pub async fn $patch(
            axum::extract::State(state): axum::extract::State<$crate::api::AppState>,
            auth: $crate::api::auth::Auth,
            headers: axum::http::HeaderMap,
            axum::extract::Path(id): axum::extract::Path<String>,
            body: $crate::api::extract::JsonBody<$Input>,
        ) -> $crate::error::Result<axum::response::Response> {
            $crate::api::resources::patch::<$R>(&state, &auth, &headers, id, body, $upsert).await
        }

        #[doc = "Remove; its history stays readable by uuid."]
        #[utoipa::path(delete, path = $item, tag = $tag,
            params(("id" = String, Path, description = "uuid or external_id")),
            responses((status = 204), (status = "4XX", body = $crate::api::error::ErrorBody)),
            security(("api_key" = [$write])))]
        pub async fn $delete(
            axum::extract::State(state): axum::extract::State<$crate::api::AppState>,
            auth: $crate::api::auth::Auth,
            axum::extract::Path(id): axum::extract::Path<String>,
        ) -> $crate::error::Result<axum::response::Response> {
            $crate::api::resources::delete::<$R>(&state, &auth, id).await
        }

        #[doc = "The events of one resource, oldest first; one version never spans two pages."]
        #[utoipa::path(get, path = $history, tag = $tag,
            params(("id" = String, Path, description = "uuid or external_id"),
                ("after" = Option<i64>, Query, minimum = 0, description = "only versions after this one"),
                ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 20")),
            responses((status = 200, body = $crate::api::HistoryPage), (status = "4XX", body = $crate::api::error::ErrorBody)),
            security(("api_key" = [$read])))]
        pub async fn $hist(
            axum::extract::State(state): axum::extract::State<$crate::api::AppState>,
            auth: $crate::api::auth::Auth,
            axum::extract::Path(id): axum::extract::Path<String>,
            query: $crate::api::extract::QueryParams,
        ) -> $crate::error::Result<axum::response::Response> {
            $crate::api::resources::history::<$R>(&state, &auth, &id, query).await
        }
    };
}
