//! The HTTP side: `POST /webhook` receives fieldhook's deliveries, `GET
//! /healthz` says the process is up.
//!
//! A delivery is verified against the raw body, parsed by the SDK, and
//! applied through [`Replica::apply`](crate::replica::Replica::apply); the
//! answer is what fieldhook's retry logic needs: 200 for an applied or
//! already-known version, 422 for a gap (fieldhook retries it later), 500
//! when the replica failed (nothing was recorded; fieldhook retries), 401
//! and 400 from the SDK's rejection when the request is not a genuine event.

use crate::app::Shared;
use crate::replica::{Change, Source};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fieldhook_receiver::axum::WebhookRejection;
use fieldhook_receiver::verify::API_TOKEN_HEADER;
use fieldhook_receiver::{Decision, Event};
use serde_json::{Value, json};
use std::sync::Arc;

/// The mirror's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/webhook", post(deliver)).route("/healthz", get(|| async { "ok" })).with_state(shared)
}

fn answer(status: StatusCode, code: &str, message: String) -> Response {
    // fieldhook keeps the body in its request log: the message is what an
    // operator reads there to learn why a delivery was refused.
    (status, axum::Json(json!({ "code": code, "message": message }))).into_response()
}

async fn deliver(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    // Verify the raw bytes before anything else: the signature covers them
    // exactly, and an unauthenticated body is not worth parsing.
    if let Err(e) = shared.verifier.verify_now(&headers, &body) {
        tracing::warn!(error = %e, "refused an unverified delivery");
        return WebhookRejection::from(e).into_response();
    }
    let response = replicate(&shared, &body).await;
    // The token of a genuine delivery is what catch-up uses without an API
    // key. It is kept once this delivery is settled, so that the catch-up it
    // may wake does not race the delivery for the very same version.
    if let Some(token) = headers.get(API_TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        shared.api.remember_token(token);
    }
    response
}

/// Applies a verified delivery and says what to answer.
async fn replicate(shared: &Shared, body: &[u8]) -> Response {
    let event = match Event::from_slice(body) {
        Ok(event) => event,
        Err(e) => return WebhookRejection::from(e).into_response(),
    };
    // The typed event says what happened; the snapshot is kept from the raw
    // JSON so that fields this SDK does not know are replicated too.
    let raw: Value = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    let change = match Change::from_event(&event, &raw) {
        Ok(Some(change)) => change,
        Ok(None) => {
            shared.stats.delivered_ignored();
            return answer(StatusCode::OK, "ignored", format!("{} is not replicated", event.event_type()));
        }
        Err(e) => return answer(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    match shared.replica.apply(&change, Source::Delivery).await {
        Ok(Decision::Apply) => {
            shared.stats.delivered_applied();
            shared.gaps.progressed(change.kind, change.uuid);
            tracing::debug!(kind = %change.kind, uuid = %change.uuid, version = change.version, "applied");
            answer(
                StatusCode::OK,
                "applied",
                format!("{} {} is at version {}", change.kind, change.uuid, change.version),
            )
        }
        Ok(Decision::Ignore) => {
            shared.stats.delivered_ignored();
            answer(StatusCode::OK, "duplicate", format!("version {} is already applied", change.version))
        }
        Ok(Decision::Gap) => {
            shared.stats.delivered_gap();
            shared.gaps.opened(change.kind, change.uuid);
            let have = shared.replica.version(change.kind, change.uuid).await.ok().flatten().unwrap_or(0);
            answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                "version_gap",
                format!("{} {} is at version {have}; version {} must come first", change.kind, change.uuid, have + 1),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, kind = %change.kind, uuid = %change.uuid, "the replica failed");
            answer(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the replica could not be written".into())
        }
    }
}
