//! `/v2/users`, `/v2/teams`, `/v2/job_types` (api.md, "Users and teams").
//! Users and teams need `users:*`; job types need `jobs:*`.

use super::AppState;
use super::auth::Auth;
use super::error::ErrorBody;
use super::extract::{JsonBody, QueryParams};
use super::write::{self, WriteOp, raw_json, wrap_docs};
use crate::domain::people::{JobType, JobTypeInput, Team, TeamInput, User, UserInput};
use crate::error::{Error, Result};
use crate::storage::people::{self, DocTable, JOB_TYPES, TEAMS, USERS};
use crate::storage::resources::list_docs;
use crate::storage::sql::Conn;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(create_team, list_teams))
        .routes(routes!(get_team, patch_team, delete_team))
        .routes(routes!(create_job_type, list_job_types))
        .routes(routes!(list_notifications))
}

#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    pub notifications: Vec<crate::domain::notification::Notification>,
}

/// A user's assignee notifications, newest first.
#[utoipa::path(get, path = "/v2/users/{uuid}/notifications", tag = "users",
    params(("uuid" = Uuid, Path), ("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("after" = Option<Uuid>, Query)),
    responses((status = 200, body = NotificationList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:read"])))]
pub async fn list_notifications(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    mut q: QueryParams,
) -> Result<Response> {
    auth.require("users:read")?;
    let uuid = path_uuid(&id, "user")?;
    let page = q.page(50, 100)?;
    q.finish()?;
    let mut conn = state.db.read.acquire().await?;
    if USERS.get::<User>(&mut conn, auth.account(), uuid).await?.is_none() {
        return Err(Error::NotFound("user"));
    }
    let notifications = crate::storage::notifications::list(&mut conn, uuid, page.after, page.limit).await?;
    Ok(axum::Json(NotificationList { notifications }).into_response())
}

/// Path uuids of unversioned resources; anything else cannot exist.
fn path_uuid(id: &str, what: &'static str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| Error::NotFound(what))
}

async fn list_table(
    state: &AppState,
    auth: &Auth,
    scope: &str,
    table: DocTable,
    key: &str,
    mut q: QueryParams,
) -> Result<Response> {
    auth.require(scope)?;
    let page = q.page(50, 100)?;
    q.finish()?;
    let mut conn = state.db.read.acquire().await?;
    let docs = list_docs(&mut conn, table.table, auth.account(), false, Vec::new(), &page).await?;
    Ok(raw_json(StatusCode::OK, wrap_docs(key, &docs)))
}

#[derive(Serialize, ToSchema)]
pub struct UserUuid {
    pub user_uuid: Uuid,
}
#[derive(Serialize, ToSchema)]
pub struct UserEnvelope {
    pub user: User,
}
#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

/// Create a user (a technician, dispatcher or admin).
#[utoipa::path(post, path = "/v2/users", tag = "users", request_body = UserInput,
    responses((status = 201, body = UserUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:write"])))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: JsonBody<UserInput>,
) -> Result<Response> {
    auth.require("users:write")?;
    let account = auth.account();
    let now = state.clock.now();
    let input = body.value;
    let op: WriteOp = Arc::new(move |conn| {
        let input = input.clone();
        Box::pin(async move {
            let user = input.create(Uuid::now_v7(), now)?;
            USERS.insert(conn, account, user.uuid, &user.email, &user).await?;
            Ok((StatusCode::CREATED, json!({ "user_uuid": user.uuid })))
        })
    });
    write::create(&state, account, &headers, "/v2/users", &body.raw, op).await
}

/// List users.
#[utoipa::path(get, path = "/v2/users", tag = "users",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("after" = Option<Uuid>, Query)),
    responses((status = 200, body = UserList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:read"])))]
pub async fn list_users(State(state): State<AppState>, auth: Auth, q: QueryParams) -> Result<Response> {
    list_table(&state, &auth, "users:read", USERS, "users", q).await
}

/// Get a user.
#[utoipa::path(get, path = "/v2/users/{uuid}", tag = "users", params(("uuid" = Uuid, Path)),
    responses((status = 200, body = UserEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:read"])))]
pub async fn get_user(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("users:read")?;
    let uuid = path_uuid(&id, "user")?;
    let mut conn = state.db.read.acquire().await?;
    let user: User = USERS.get(&mut conn, auth.account(), uuid).await?.ok_or(Error::NotFound("user"))?;
    Ok(axum::Json(json!({ "user": user })).into_response())
}

/// Change a user.
#[utoipa::path(patch, path = "/v2/users/{uuid}", tag = "users", params(("uuid" = Uuid, Path)), request_body = UserInput,
    responses((status = 200, body = UserUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:write"])))]
pub async fn patch_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<UserInput>,
) -> Result<Response> {
    auth.require("users:write")?;
    let uuid = path_uuid(&id, "user")?;
    let account = auth.account();
    let input = body.value;
    state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let current: User = USERS.get(conn, account, uuid).await?.ok_or(Error::NotFound("user"))?;
                let next = input.apply(&current)?;
                USERS.update(conn, account, uuid, &next.email, &next).await
            })
        })
        .await?;
    Ok(axum::Json(json!({ "user_uuid": uuid })).into_response())
}

/// Delete a user (409 while an unfinished job is assigned to them).
#[utoipa::path(delete, path = "/v2/users/{uuid}", tag = "users", params(("uuid" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:write"])))]
pub async fn delete_user(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("users:write")?;
    let uuid = path_uuid(&id, "user")?;
    let account = auth.account();
    state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                if USERS.get::<User>(conn, account, uuid).await?.is_none() {
                    return Err(Error::NotFound("user"));
                }
                if people::open_jobs_assigned(conn, "worker_uuid", uuid).await? > 0 {
                    return Err(Error::Conflict("an unfinished job is assigned to this user".into()));
                }
                // The user leaves every team it was in.
                for mut team in TEAMS.all::<Team>(conn, account).await? {
                    if team.worker_uuids.contains(&uuid) {
                        team.worker_uuids.retain(|w| *w != uuid);
                        TEAMS.update(conn, account, team.uuid, &team.name, &team).await?;
                    }
                }
                USERS.delete(conn, account, uuid).await.map(drop)
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub struct TeamUuid {
    pub team_uuid: Uuid,
}
#[derive(Serialize, ToSchema)]
pub struct TeamEnvelope {
    pub team: Team,
}
#[derive(Serialize, ToSchema)]
pub struct TeamList {
    pub teams: Vec<Team>,
}

async fn check_workers(conn: &mut Conn, account: Uuid, team: &Team) -> Result<()> {
    if people::count_users(conn, account, &team.worker_uuids).await? != team.worker_uuids.len() {
        return Err(Error::invalid("worker_uuids", "refers to a user that does not exist"));
    }
    Ok(())
}

/// Create a team.
#[utoipa::path(post, path = "/v2/teams", tag = "teams", request_body = TeamInput,
    responses((status = 201, body = TeamUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:write"])))]
pub async fn create_team(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: JsonBody<TeamInput>,
) -> Result<Response> {
    auth.require("users:write")?;
    let account = auth.account();
    let input = body.value;
    let op: WriteOp = Arc::new(move |conn| {
        let input = input.clone();
        Box::pin(async move {
            let team = input.create(Uuid::now_v7())?;
            check_workers(conn, account, &team).await?;
            TEAMS.insert(conn, account, team.uuid, &team.name, &team).await?;
            Ok((StatusCode::CREATED, json!({ "team_uuid": team.uuid })))
        })
    });
    write::create(&state, account, &headers, "/v2/teams", &body.raw, op).await
}

/// List teams.
#[utoipa::path(get, path = "/v2/teams", tag = "teams",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("after" = Option<Uuid>, Query)),
    responses((status = 200, body = TeamList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:read"])))]
pub async fn list_teams(State(state): State<AppState>, auth: Auth, q: QueryParams) -> Result<Response> {
    list_table(&state, &auth, "users:read", TEAMS, "teams", q).await
}

/// Get a team.
#[utoipa::path(get, path = "/v2/teams/{uuid}", tag = "teams", params(("uuid" = Uuid, Path)),
    responses((status = 200, body = TeamEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:read"])))]
pub async fn get_team(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("users:read")?;
    let uuid = path_uuid(&id, "team")?;
    let mut conn = state.db.read.acquire().await?;
    let team: Team = TEAMS.get(&mut conn, auth.account(), uuid).await?.ok_or(Error::NotFound("team"))?;
    Ok(axum::Json(json!({ "team": team })).into_response())
}

/// Change a team.
#[utoipa::path(patch, path = "/v2/teams/{uuid}", tag = "teams", params(("uuid" = Uuid, Path)), request_body = TeamInput,
    responses((status = 200, body = TeamUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:write"])))]
pub async fn patch_team(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: JsonBody<TeamInput>,
) -> Result<Response> {
    auth.require("users:write")?;
    let uuid = path_uuid(&id, "team")?;
    let account = auth.account();
    let input = body.value;
    state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let current: Team = TEAMS.get(conn, account, uuid).await?.ok_or(Error::NotFound("team"))?;
                let next = input.apply(&current)?;
                check_workers(conn, account, &next).await?;
                TEAMS.update(conn, account, uuid, &next.name, &next).await
            })
        })
        .await?;
    Ok(axum::Json(json!({ "team_uuid": uuid })).into_response())
}

/// Delete a team (409 while an unfinished job is assigned to it).
#[utoipa::path(delete, path = "/v2/teams/{uuid}", tag = "teams", params(("uuid" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["users:write"])))]
pub async fn delete_team(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> Result<Response> {
    auth.require("users:write")?;
    let uuid = path_uuid(&id, "team")?;
    let account = auth.account();
    state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                if TEAMS.get::<Team>(conn, account, uuid).await?.is_none() {
                    return Err(Error::NotFound("team"));
                }
                if people::open_jobs_assigned(conn, "team_uuid", uuid).await? > 0 {
                    return Err(Error::Conflict("an unfinished job is assigned to this team".into()));
                }
                TEAMS.delete(conn, account, uuid).await.map(drop)
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub struct JobTypeUuid {
    pub job_type_uuid: Uuid,
}
#[derive(Serialize, ToSchema)]
pub struct JobTypeList {
    pub job_types: Vec<JobType>,
}

/// Create a job type.
#[utoipa::path(post, path = "/v2/job_types", tag = "job types", request_body = JobTypeInput,
    responses((status = 201, body = JobTypeUuid), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["jobs:write"])))]
pub async fn create_job_type(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: JsonBody<JobTypeInput>,
) -> Result<Response> {
    auth.require("jobs:write")?;
    let account = auth.account();
    let input = body.value;
    let op: WriteOp = Arc::new(move |conn| {
        let input = input.clone();
        Box::pin(async move {
            let t = input.create(Uuid::now_v7())?;
            JOB_TYPES.insert(conn, account, t.uuid, &t.code, &t).await?;
            Ok((StatusCode::CREATED, json!({ "job_type_uuid": t.uuid })))
        })
    });
    write::create(&state, account, &headers, "/v2/job_types", &body.raw, op).await
}

/// List job types.
#[utoipa::path(get, path = "/v2/job_types", tag = "job types",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100), ("after" = Option<Uuid>, Query)),
    responses((status = 200, body = JobTypeList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["jobs:read"])))]
pub async fn list_job_types(State(state): State<AppState>, auth: Auth, q: QueryParams) -> Result<Response> {
    list_table(&state, &auth, "jobs:read", JOB_TYPES, "job_types", q).await
}
