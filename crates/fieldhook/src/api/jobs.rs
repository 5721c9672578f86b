//! `/v2/jobs` (api.md, "Jobs").

use super::AppState;
use super::error::ErrorBody;
use super::extract::{JsonBody, OptionalJsonBody};
use super::resources::{self, ApiResource, WriteContext, resolve_ref};
use crate::domain::EntityKind;
use crate::domain::event::EventType;
use crate::domain::event::{Context, Source};
use crate::domain::job::{Action, ActionInput, ReportInput};
use crate::domain::job::{
    Assignee, AssigneeInput, Job, JobInput, JobTypeRef, ResolvedRefs, Status, TeamRef, WorkerRef,
};
use crate::domain::notification;
use crate::domain::people::{JobType, Team, User};
use crate::domain::site::Site;
use crate::error::{Error, Result};
use crate::storage::Backend;
use crate::storage::notifications;
use crate::storage::people::{JOB_TYPES, TEAMS, USERS};
use crate::storage::resources::{Filter, Op, Param};
use crate::storage::resources::{find, save};
use crate::storage::sql::{self, Conn};
use async_trait::async_trait;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Hands out the next `serial_no` of the account. The row update also
/// serialises concurrent job creation in one account on PostgreSQL.
async fn next_serial(conn: &mut Conn, account: Uuid) -> Result<i64> {
    let account = account.to_string();
    if conn.backend() == Backend::Postgres {
        // One round trip.
        return Ok(sql::query_scalar(
            "UPDATE accounts SET job_serial = job_serial + 1 WHERE uuid = $1 RETURNING job_serial",
        )
        .bind(account)
        .fetch_one(conn)
        .await?);
    }
    // SQLite runs `UPDATE … RETURNING` through a temporary table and a
    // statement journal: about 5 % of the writer's time under a create
    // load. In process, a second statement costs no round trip.
    sql::query("UPDATE accounts SET job_serial = job_serial + 1 WHERE uuid = $1")
        .bind(&account)
        .execute(&mut *conn)
        .await?;
    Ok(sql::query_scalar("SELECT job_serial FROM accounts WHERE uuid = $1").bind(account).fetch_one(conn).await?)
}

async fn resolve_refs(conn: &mut Conn, account: Uuid, input: &mut JobInput) -> Result<ResolvedRefs> {
    let mut refs = ResolvedRefs::default();
    if let Some(job_type) = input.job_type.take() {
        refs.job_type = Some(match job_type {
            None => None,
            Some(r) => {
                let found: Option<JobType> = match (r.uuid, r.code.as_deref()) {
                    (Some(u), None) => JOB_TYPES.get(conn, account, u).await?,
                    (None, Some(code)) => JOB_TYPES.get_by_unique(conn, account, code).await?,
                    _ => return Err(Error::invalid("job_type", "must have exactly one of uuid and code")),
                };
                let t = found.ok_or_else(|| Error::invalid("job_type", "refers to a job type that does not exist"))?;
                Some(JobTypeRef { uuid: t.uuid, code: t.code })
            }
        });
    }
    if let Some(assignee) = input.assignee.take() {
        refs.assignee = Some(match assignee {
            None => None,
            Some(AssigneeInput::Worker(w)) => {
                let user: User = USERS
                    .get(conn, account, w.uuid)
                    .await?
                    .ok_or_else(|| Error::invalid("assignee.worker.uuid", "refers to a user that does not exist"))?;
                Some(Assignee::Worker(WorkerRef { uuid: user.uuid, email: user.email }))
            }
            Some(AssigneeInput::Team(t)) => {
                let team: Team = TEAMS
                    .get(conn, account, t.uuid)
                    .await?
                    .ok_or_else(|| Error::invalid("assignee.team.uuid", "refers to a team that does not exist"))?;
                Some(Assignee::Team(TeamRef { uuid: team.uuid, name: team.name }))
            }
        });
    }
    refs.client = resolve_ref(conn, EntityKind::Client, account, "client", input.client.take())
        .await?
        .map(|r| r.map(|(reference, _)| reference));
    refs.site = match resolve_ref(conn, EntityKind::Site, account, "site", input.site.take()).await? {
        None => None,
        Some(None) => Some(None),
        Some(Some((reference, doc))) => {
            let site: Site = serde_json::from_str(&doc)?;
            Some(Some((reference, site.address)))
        }
    };
    Ok(refs)
}

#[async_trait]
impl ApiResource for Job {
    type Input = JobInput;
    const NAME: &'static str = "job";
    const PLURAL: &'static str = "jobs";
    const READ_SCOPE: &'static str = "jobs:read";
    const WRITE_SCOPE: &'static str = "jobs:write";

    fn expected_version(input: &JobInput) -> Option<i64> {
        input.version
    }

    fn set_external_id(input: &mut JobInput, external_id: String) {
        input.external_id = Some(Some(external_id));
    }

    async fn build(
        conn: &mut Conn,
        account: Uuid,
        mut input: JobInput,
        current: Option<&Job>,
        now: DateTime<Utc>,
    ) -> Result<(Job, Vec<EventType>)> {
        let refs = resolve_refs(conn, account, &mut input).await?;
        let job = match current {
            None => {
                // A refused request's serial number is rolled back with
                // its savepoint, so serial numbers have no gaps.
                let serial = next_serial(conn, account).await?;
                input.create(Uuid::now_v7(), serial, now, refs)?
            }
            Some(j) => input.apply(j, refs)?,
        };
        let assigned = job.assignee.is_some() && current.is_none_or(|c| c.assignee != job.assignee);
        Ok((job, if assigned { vec![EventType::JobAssigned] } else { Vec::new() }))
    }

    async fn check_removable(_: &mut Conn, _: &Job) -> Result<()> {
        Ok(())
    }

    async fn after_write(
        conn: &mut Conn,
        account: Uuid,
        before: Option<&Job>,
        after: &Job,
        write: &WriteContext,
    ) -> Result<()> {
        if write.notify_assignees
            && let Some(kind) = notification::notice(before, after)
        {
            notifications::notify(conn, account, after, kind, write.push_url.as_deref(), write.now).await?;
        }
        Ok(())
    }
}

/// The event context of an action: when and where it happened, on whose
/// behalf (webhooks.md, "The body").
async fn action_context(conn: &mut Conn, account: Uuid, input: &ActionInput, now: DateTime<Utc>) -> Result<Context> {
    let mut ctx = Context::api(now);
    if let Some(at) = input.happened_at {
        ctx.happened_at = at;
    }
    if let Some(device) = input.device_uuid {
        ctx.source = Source::Mobile;
        ctx.device_uuid = Some(device);
    }
    if let Some(user) = input.user_uuid {
        let user: User = USERS
            .get(conn, account, user)
            .await?
            .ok_or_else(|| Error::invalid("user_uuid", "refers to a user that does not exist"))?;
        ctx.user_uuid = Some(user.uuid);
        ctx.user_email = Some(user.email);
    }
    Ok(ctx)
}

/// Move a job through its lifecycle: `publish`, `en_route`, `start`,
/// `suspend`, `resume`, `finish` (with `resolution`) or `cancel`.
#[utoipa::path(post, path = "/v2/jobs/{id}/{action}", tag = "jobs", request_body = Option<ActionInput>,
    params(("id" = String, Path, description = "uuid or external_id"), ("action" = Action, Path)),
    responses((status = 200, body = JobEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["jobs:write"])))]
pub async fn job_action(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: super::auth::Auth,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    OptionalJsonBody(input): OptionalJsonBody<ActionInput>,
) -> Result<axum::response::Response> {
    auth.require("jobs:write")?;
    let action = Action::parse(&action).ok_or(Error::NotFound("action"))?;
    let account = auth.account();
    let now = state.clock.now();
    let job = state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let current = find::<Job>(conn, account, &id, true).await?.ok_or(Error::NotFound("job"))?;
                let ctx = action_context(conn, account, &input, now).await?;
                let mut next = current.clone();
                let extra = next.perform(action, &input, ctx.happened_at)?;
                Ok(save(conn, account, &current, next, &ctx, now, &extra).await?.unwrap_or(current))
            })
        })
        .await?;
    Ok(axum::Json(JobEnvelope { job }).into_response())
}

/// Set the technician's report of a finished job.
#[utoipa::path(put, path = "/v2/jobs/{id}/report", tag = "jobs", request_body = ReportInput,
    params(("id" = String, Path, description = "uuid or external_id")),
    responses((status = 200, body = JobEnvelope), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["jobs:write"])))]
pub async fn put_report(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: super::auth::Auth,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: JsonBody<ReportInput>,
) -> Result<axum::response::Response> {
    auth.require("jobs:write")?;
    let account = auth.account();
    let now = state.clock.now();
    let fields = body.value.report_fields;
    let job = state
        .db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                let current = find::<Job>(conn, account, &id, true).await?.ok_or(Error::NotFound("job"))?;
                let mut next = current.clone();
                let extra = next.set_report(fields)?;
                Ok(save(conn, account, &current, next, &Context::api(now), now, &extra).await?.unwrap_or(current))
            })
        })
        .await?;
    Ok(axum::Json(JobEnvelope { job }).into_response())
}

crate::resource_handlers! {
    resource: Job, input: JobInput, tag: "jobs",
    read: "jobs:read", write: "jobs:write", upsert: false,
    collection: "/v2/jobs", item: "/v2/jobs/{id}", history: "/v2/jobs/{id}/history",
    uuid_body: JobUuid { job_uuid }, envelope: JobEnvelope { job },
    handlers: [create_job, get_job, patch_job, delete_job, job_history]
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// List jobs, newest first, with filters.
#[utoipa::path(get, path = "/v2/jobs", tag = "jobs",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 50"),
        ("after" = Option<Uuid>, Query, description = "uuid of the last item seen"),
        ("status[]" = Option<Vec<Status>>, Query, description = "any of these statuses"),
        ("scheduled_at[after]" = Option<String>, Query), ("scheduled_at[before]" = Option<String>, Query),
        ("updated_at[after]" = Option<String>, Query), ("updated_at[before]" = Option<String>, Query),
        ("assignee[worker_uuid]" = Option<Uuid>, Query), ("assignee[team_uuid]" = Option<Uuid>, Query),
        ("external_order_id" = Option<String>, Query),
        ("client_uuid" = Option<Uuid>, Query), ("site_uuid" = Option<Uuid>, Query)),
    responses((status = 200, body = JobList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["jobs:read"])))]
pub async fn list_jobs(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: super::auth::Auth,
    mut query: super::extract::QueryParams,
) -> Result<axum::response::Response> {
    let mut filters = Vec::new();
    let statuses = query.take_all("status[]");
    if !statuses.is_empty() {
        let mut values = Vec::new();
        for s in statuses {
            let st =
                Status::parse(&s).ok_or_else(|| Error::invalid("status[]", format!("{s:?} is not a job status")))?;
            values.push(Param::Text(Some(st.as_str().to_string())));
        }
        filters.push(Filter { column: "status", op: Op::In, values });
    }
    for (param, op) in [("scheduled_at[after]", Op::Gt), ("scheduled_at[before]", Op::Lt)] {
        if let Some(t) = query.take_time(param)? {
            filters.push(Filter { column: "scheduled_at", op, values: vec![Param::Int(Some(t))] });
        }
    }
    for (param, column) in [
        ("assignee[worker_uuid]", "worker_uuid"),
        ("assignee[team_uuid]", "team_uuid"),
        ("client_uuid", "client_uuid"),
        ("site_uuid", "site_uuid"),
    ] {
        if let Some(u) = query.take_uuid(param)? {
            filters.push(Filter { column, op: Op::Eq, values: vec![Param::uuid(Some(u))] });
        }
    }
    if let Some(order) = query.take("external_order_id") {
        filters.push(Filter { column: "external_order_id", op: Op::Eq, values: vec![Param::Text(Some(order))] });
    }
    resources::list::<Job>(&state, &auth, query, filters).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job, patch_job, delete_job))
        .routes(routes!(job_history))
        .routes(routes!(job_action))
        .routes(routes!(put_report))
}
