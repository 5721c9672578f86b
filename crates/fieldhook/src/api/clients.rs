//! `/v2/clients` (api.md, "Clients").

use super::AppState;
use super::error::ErrorBody;
use super::resources::{self, ApiResource};
use crate::domain::client::{Client, ClientInput};
use crate::domain::event::EventType;
use crate::error::{Error, Result};
use crate::storage::resources::count_refs;
use crate::storage::sql::Conn;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[async_trait]
impl ApiResource for Client {
    type Input = ClientInput;
    const NAME: &'static str = "client";
    const PLURAL: &'static str = "clients";
    const READ_SCOPE: &'static str = "clients:read";
    const WRITE_SCOPE: &'static str = "clients:write";

    fn expected_version(input: &ClientInput) -> Option<i64> {
        input.version
    }

    fn set_external_id(input: &mut ClientInput, external_id: String) {
        input.external_id = Some(Some(external_id));
    }

    async fn build(
        _: &mut Conn,
        _: Uuid,
        input: ClientInput,
        current: Option<&Client>,
        now: DateTime<Utc>,
    ) -> Result<(Client, Vec<EventType>)> {
        let client = match current {
            None => input.create(Uuid::now_v7(), now)?,
            Some(c) => input.apply(c)?,
        };
        Ok((client, Vec::new()))
    }

    async fn check_removable(conn: &mut Conn, client: &Client) -> Result<()> {
        if count_refs(conn, "sites", "client_uuid", client.uuid).await? > 0 {
            return Err(Error::Conflict("a site refers to this client; remove it first".into()));
        }
        if count_refs(conn, "jobs", "client_uuid", client.uuid).await? > 0 {
            return Err(Error::Conflict("a job refers to this client; remove it first".into()));
        }
        Ok(())
    }
}

crate::resource_handlers! {
    resource: Client, input: ClientInput, tag: "clients",
    read: "clients:read", write: "clients:write", upsert: true,
    collection: "/v2/clients", item: "/v2/clients/{id}", history: "/v2/clients/{id}/history",
    uuid_body: ClientUuid { client_uuid }, envelope: ClientEnvelope { client },
    handlers: [create_client, get_client, patch_client, delete_client, client_history]
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ClientList {
    pub clients: Vec<Client>,
}

/// List clients, newest first.
#[utoipa::path(get, path = "/v2/clients", tag = "clients",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1..100, default 50"),
        ("after" = Option<Uuid>, Query, description = "uuid of the last item seen"),
        ("updated_at[after]" = Option<String>, Query), ("updated_at[before]" = Option<String>, Query)),
    responses((status = 200, body = ClientList), (status = "4XX", body = ErrorBody)),
    security(("api_key" = ["clients:read"])))]
pub async fn list_clients(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: super::auth::Auth,
    query: super::extract::QueryParams,
) -> Result<axum::response::Response> {
    resources::list::<Client>(&state, &auth, query, Vec::new()).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_client, list_clients))
        .routes(routes!(get_client, patch_client, delete_client))
        .routes(routes!(client_history))
}
