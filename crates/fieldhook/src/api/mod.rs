//! The HTTP API: `/v2` (api.md and the webhook management of webhooks.md)
//! and the service endpoints. Handlers authenticate, parse, call the domain
//! and write through the committer; they hold no state of their own.

pub mod api_keys;
pub mod auth;
pub mod clients;
pub mod docs;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod metrics;
pub mod people;
pub mod resources;
pub mod service;
pub mod sites;
pub mod webhooks;
pub mod write;

use crate::clock::SharedClock;
use crate::storage::Db;
use axum::Router;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

/// What every handler can reach: one shared [`AppStateInner`]. axum's
/// `State` extractor and each middleware clone the state for every request;
/// behind one `Arc` that is one reference count, where the fields cloned one
/// by one were a string copy (the database URL), a keyed HMAC and a dozen
/// reference counts per clone — 1.6 % of the server's time under a create
/// load (perf).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct AppStateInner {
    pub db: Db,
    pub clock: SharedClock,
    pub limiter: Option<Arc<auth::KeyedLimiter>>,
    /// Verified keys (SQLite only; see [`auth::KeyCache`]).
    pub keys: Option<Arc<auth::KeyCache>>,
    pub tokens: auth::TokenSigner,
    /// Whether webhook URLs may point at loopback and private addresses.
    pub allow_private_targets: bool,
    /// Where assignee notifications are pushed, if anywhere.
    pub push_url: Option<String>,
}

/// One page of a resource's history.
#[derive(serde::Serialize, ToSchema)]
pub struct HistoryPage {
    /// `{"version", "event_uuid", "event_type", "context", "<resource>": snapshot}`, oldest first.
    pub history: Vec<serde_json::Value>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fieldhook API", description = "Jobs, clients and sites in, webhooks out. Wire-compatible with the Planado API v2. \
        Errors are JSON bodies with `code`, `message` and, for `validation_failed`, `errors` per field."),
    modifiers(&BearerAuth),
    // Path and query parameter types are not collected from the handlers.
    components(schemas(error::ErrorBody, crate::domain::job::Action, crate::domain::job::Status))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`fh_…`) or a temporary token (`fht_…`)"))
                    .build(),
            ),
        );
    }
}

/// The `/v2` routes with their OpenAPI document.
pub fn v2_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(clients::router())
        .merge(sites::router())
        .merge(jobs::router())
        .merge(people::router())
        .merge(api_keys::router())
        .merge(webhooks::router())
}

/// The whole application. `serve_v2` is false on worker-only nodes, which
/// still answer the service endpoints.
pub fn router(state: AppState, serve_v2: bool) -> Router {
    let (v2, doc) = v2_routes().split_for_parts();
    let doc = docs::with_input_rules(docs::with_webhooks(doc));
    let mut app = service::router();
    if serve_v2 {
        app = app.merge(v2).merge(SwaggerUi::new("/docs").external_url_unchecked("/v2/openapi.json", doc));
    }
    app.fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(CatchPanicLayer::custom(error::panic_to_500))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
