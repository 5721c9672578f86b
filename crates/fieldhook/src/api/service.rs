//! Service endpoints without authentication: `/healthz`, `/readyz` and
//! `/metrics` (the OpenAPI document and `/docs` come with `/v2`).

use super::AppState;
use crate::storage::sql;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(super::metrics::render))
}

/// The process is up.
async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// The database answers.
async fn readyz(State(state): State<AppState>) -> Response {
    match sql::query_scalar::<i64>("SELECT 1").fetch_one(&state.db.read).await {
        Ok(_) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "database unavailable" })))
                .into_response()
        }
    }
}
