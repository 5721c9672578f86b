//! `/v2/sites` (api.md, "Sites").

use super::AppState;
use super::error::ErrorBody;
use super::resources::{self, ApiResource, resolve_ref};
use crate::domain::EntityKind;
use crate::domain::event::EventType;
use crate::domain::site::{Site, SiteInput};
use crate::error::{Error, Result};
use crate::storage::resources::{Filter, Op, Param, count_refs};
use crate::storage::sql::Conn;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[async_trait]
impl ApiResource for Site {
    type Input = SiteInput;
    const NAME: &'static str = "site";
    const PLURAL: &'static str = "sites";
    const READ_SCOPE: &'static str = "sites:read";
    const WRITE_SCOPE: &'static str = "sites:write";

    fn expected_version(input: &SiteInput) -> Option<i64> {
        input.version
    }

    fn set_external_id(input: &mut SiteInput, external_id: String) {
        input.external_id = Some(Some(external_id));
    }

    async fn build(
        conn: &mut Conn,
        account: Uuid,
        mut input: SiteInput,
        current: Option<&Site>,
        now: DateTime<Utc>,
    ) -> Result<(Site, Vec<EventType>)> {
        let client = resolve_ref(conn, EntityKind::Client, account, "client", input.client.take())
            .await?
            .map(|r| r.map(|(reference, _)| reference));
        let site = match current {
            None => input.create(Uuid::now_v7(), now, client)?,
            Some(s) => input.apply(s, client)?,
        };
        Ok((site, Vec::new()))
    }

    async fn check_removable(conn: &mut Conn, site: &Site) -> Result<()> {
        if count_refs(conn, "jobs", "site_uuid", site.uuid).await? > 0 {
            return Err(Error::Conflict("a job refers to this site; remove it first".into()));
        }
        Ok(())
    }
}

crate::resource_handlers! {
    resource: Site, input: SiteInput, tag: "sites",
    read: "sites:read", write: "sites:write", upsert: true,
    collection: "/v2/sites", item: "/v2/sites/{id}", history: "/v2/sites/{id}/history",
    uuid_body: SiteUuid { site_uuid }, envelope: SiteEnvelope { site },
    handlers: [create_site, get_site, patch_site, delete_site, site_history]
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SiteList {
    pub sites: Vec<Site>,
}

/// List sites, newest first.
#[utoipa::path(get, path = "/v2/sites", tag = "sites",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 50"),
        ("after" = Option<Uuid>, Query, description = "uuid of the last item seen"),
        ("client_uuid" = Option<Uuid>, Query, description = "only sites of this client"),
        ("updated_at[after]" = Option<String>, Query), ("updated_at[before]" = Option<String>, Query)),
    responses((status = 200, body = SiteList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["sites:read"])))]
pub async fn list_sites(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: super::auth::Auth,
    mut query: super::extract::QueryParams,
) -> Result<axum::response::Response> {
    let mut filters = Vec::new();
    if let Some(c) = query.take_uuid("client_uuid")? {
        filters.push(Filter { column: "client_uuid", op: Op::Eq, values: vec![Param::uuid(Some(c))] });
    }
    resources::list::<Site>(&state, &auth, query, filters).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_site, list_sites))
        .routes(routes!(get_site, patch_site, delete_site))
        .routes(routes!(site_history))
}
