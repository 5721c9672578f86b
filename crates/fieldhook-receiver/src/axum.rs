//! The axum 0.8 integration (feature `axum`): [`VerifiedEvent`], an
//! extractor that hands a handler a verified, typed event, and
//! `IntoResponse` for [`Decision`] and [`Outcome`] so a handler can answer
//! with the ordering decision.
//!
//! The [`Verifier`] comes from the router state through [`FromRef`].
//! Rejections answer in fieldhook's own error format
//! (`{"code", "message"}`): `401 unauthorized` with the reason when
//! verification fails, `400 invalid_json` when a verified body is not an
//! event. A 4xx makes fieldhook retry, and the reason shows in its request
//! log (`http_response_body`), which is where a misconfigured secret is
//! diagnosed.
//!
//! A complete receiver, replicating jobs (the example of the README):
//!
//! ```no_run
//! use axum::{Router, extract::{FromRef, State}, http::StatusCode, routing::post};
//! use fieldhook_receiver::axum::VerifiedEvent;
//! use fieldhook_receiver::{Decision, Event, Job, MemoryVersionStore, Strategy, Verifier, VersionGate};
//! use std::{collections::HashMap, convert::Infallible, sync::{Arc, Mutex}};
//!
//! #[derive(Clone)]
//! struct App {
//!     verifier: Verifier,
//!     gate: Arc<VersionGate<MemoryVersionStore>>,
//!     jobs: Arc<Mutex<HashMap<uuid::Uuid, Job>>>, // stands for your database
//! }
//!
//! impl FromRef<App> for Verifier {
//!     fn from_ref(app: &App) -> Verifier {
//!         app.verifier.clone()
//!     }
//! }
//!
//! /// Subscribed to job_created, job_updated and job_removed: one event per version.
//! async fn webhook(State(app): State<App>, VerifiedEvent { event, .. }: VerifiedEvent) -> Result<Decision, StatusCode> {
//!     let Some(entity) = event.entity() else { return Ok(Decision::Ignore) }; // webhook_test, unknown types
//!     let outcome = app
//!         .gate
//!         .process(&entity, || async {
//!             let mut jobs = app.jobs.lock().unwrap();
//!             match &event {
//!                 Event::JobRemoved(e) => { jobs.remove(&e.job.uuid); }
//!                 Event::JobCreated(e) | Event::JobUpdated(e) => { jobs.insert(e.job.uuid, e.job.clone()); }
//!                 _ => {}
//!             }
//!             Ok::<_, Infallible>(())
//!         })
//!         .await
//!         .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?; // nothing recorded: fieldhook retries
//!     Ok(outcome.decision()) // 200, or 422 for a gap: fieldhook retries it later
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App {
//!     verifier: Verifier::builder().signing_secret(std::env::var("FIELDHOOK_SIGNING_SECRET")?).build()?,
//!     gate: Arc::new(VersionGate::new(Strategy::FullReplication, MemoryVersionStore::new())),
//!     jobs: Arc::default(),
//! };
//! let router: Router = Router::new().route("/fieldhook", post(webhook)).with_state(app);
//! // axum::serve(tokio::net::TcpListener::bind("0.0.0.0:8080").await?, router).await?;
//! # let _ = router;
//! # Ok(())
//! # }
//! ```

use crate::event::{Event, ParseError};
use crate::ordering::{Decision, Outcome};
use crate::verify::{API_TOKEN_HEADER, DELIVERY_ATTEMPT_HEADER, HeaderSource, Verifier, VerifyError};
use ::axum::body::Bytes;
use ::axum::extract::rejection::BytesRejection;
use ::axum::extract::{FromRef, FromRequest, Request};
use ::axum::http::{StatusCode, header};
use ::axum::response::{IntoResponse, Response};

/// A request verified by the state's [`Verifier`] and parsed into an
/// [`Event`]. Put it last among a handler's extractors: it reads the body.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifiedEvent {
    /// The event.
    pub event: Event,
    /// `X-Planado-Delivery-Attempt`: 1 for the first attempt.
    pub attempt: Option<u32>,
    /// `X-Planado-Api-Token`: valid for 60 s, to call fieldhook's API back.
    pub api_token: Option<String>,
}

/// Why [`VerifiedEvent`] refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// The request is not proven to come from fieldhook: `401`.
    #[error(transparent)]
    Unverified(#[from] VerifyError),
    /// Verified, but not an event: `400`.
    #[error(transparent)]
    InvalidBody(#[from] ParseError),
    /// The body could not be read (too large, connection lost): the status
    /// axum gives it.
    #[error(transparent)]
    Body(#[from] BytesRejection),
}

impl WebhookRejection {
    /// The status the rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            WebhookRejection::Unverified(_) => StatusCode::UNAUTHORIZED,
            WebhookRejection::InvalidBody(_) => StatusCode::BAD_REQUEST,
            WebhookRejection::Body(r) => r.status(),
        }
    }
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = match &self {
            WebhookRejection::Unverified(_) => "unauthorized",
            WebhookRejection::InvalidBody(_) => "invalid_json",
            WebhookRejection::Body(_) if status == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            WebhookRejection::Body(_) => "invalid_body",
        };
        let body = serde_json::json!({ "code": code, "message": self.to_string() }).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

impl<S> FromRequest<S> for VerifiedEvent
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = WebhookRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        // The headers outlive the body extraction, which consumes the request.
        let headers = req.headers().clone();
        // Through the Bytes extractor so that axum's body limit applies.
        let body = Bytes::from_request(req, state).await?;
        // Verify before parsing: an unauthenticated body is not worth reading.
        verifier.verify_now(&headers, &body)?;
        let event = Event::from_slice(&body)?;
        Ok(VerifiedEvent {
            event,
            attempt: headers.header(DELIVERY_ATTEMPT_HEADER).and_then(|a| a.trim().parse().ok()),
            api_token: headers.header(API_TOKEN_HEADER).map(str::to_string),
        })
    }
}

impl IntoResponse for Decision {
    /// `200 OK` for [`Decision::Apply`] and [`Decision::Ignore`],
    /// `422 Unprocessable Entity` for [`Decision::Gap`].
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        status.into_response()
    }
}

impl<T> IntoResponse for Outcome<T> {
    /// As the [`Decision`] that led to it.
    fn into_response(self) -> Response {
        self.decision().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ordering::{Strategy, VersionGate};
    use crate::store::MemoryVersionStore;
    use crate::verify::SigningSecret;
    use ::axum::Router;
    use ::axum::body::Body;
    use ::axum::extract::State;
    use ::axum::routing::post;
    use chrono::{DateTime, Utc};
    use std::convert::Infallible;
    use std::sync::Arc;
    use tower::ServiceExt;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_800_000_000;

    #[derive(Clone)]
    struct App {
        verifier: Verifier,
        gate: Arc<VersionGate<MemoryVersionStore>>,
    }

    impl FromRef<App> for Verifier {
        fn from_ref(app: &App) -> Verifier {
            app.verifier.clone()
        }
    }

    fn router() -> Router {
        let verifier = Verifier::builder()
            .signing_secret(SECRET)
            .planado_secret("s3cret")
            .clock(|| DateTime::<Utc>::from_timestamp(NOW, 0).unwrap())
            .build()
            .unwrap();
        let gate = Arc::new(VersionGate::new(Strategy::FullReplication, MemoryVersionStore::new()));

        async fn echo(event: VerifiedEvent) -> String {
            format!("{} attempt {:?} token {:?}", event.event.event_type(), event.attempt, event.api_token)
        }
        async fn replicate(State(app): State<App>, VerifiedEvent { event, .. }: VerifiedEvent) -> Outcome<()> {
            let entity = event.entity().expect("a versioned resource");
            app.gate.process(&entity, || async { Ok::<_, Infallible>(()) }).await.unwrap()
        }
        Router::new().route("/echo", post(echo)).route("/replicate", post(replicate)).with_state(App { verifier, gate })
    }

    fn client_created(version: i64) -> String {
        serde_json::json!({
            "event_uuid": "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e01",
            "event_type": if version == 1 { "client_created" } else { "client_updated" },
            "context": {"source": "api", "happened_at": "2026-11-22T10:00:00+00:00",
                        "created_at": "2026-11-22T10:00:00+00:00", "user_uuid": null, "user_email": null,
                        "device_uuid": null},
            "client": {"uuid": "0190f3a4-0000-7000-8000-0000000000cc", "external_id": null,
                       "organization": false, "organization_name": null, "first_name": "Ada",
                       "middle_name": null, "last_name": "Lovelace", "name": "Ada Lovelace",
                       "site_address": null, "contacts": [], "version": version,
                       "created_at": "2026-11-20T08:00:00+00:00", "updated_at": "2026-11-22T10:00:00+00:00"}
        })
        .to_string()
    }

    /// A request as fieldhook sends it, signed at `timestamp`.
    fn signed(path: &str, body: &str, timestamp: i64) -> ::axum::http::request::Builder {
        signed_with_secret(path, body, timestamp, "s3cret")
    }

    fn signed_with_secret(path: &str, body: &str, timestamp: i64, secret: &str) -> ::axum::http::request::Builder {
        let id = "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e01";
        let signature = SigningSecret::parse(SECRET).unwrap().sign(id, timestamp, body.as_bytes());
        ::axum::http::Request::post(path)
            .header("content-type", "application/json")
            .header("x-planado-secret", secret)
            .header("x-planado-delivery-attempt", "2")
            .header("x-planado-api-token", "tok")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
    }

    async fn send(request: ::axum::http::Request<Body>) -> (StatusCode, String) {
        let response = router().oneshot(request).await.unwrap();
        let status = response.status();
        let body = ::axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_signed_request_reaches_the_handler_as_a_typed_event() {
        let body = client_created(1);
        let (status, text) = send(signed("/echo", &body, NOW).body(Body::from(body)).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(text, "client_created attempt Some(2) token Some(\"tok\")");
    }

    #[tokio::test]
    async fn unverified_requests_are_refused_with_401_and_the_reason() {
        let body = client_created(1);
        let cases = [
            (
                "tampered body",
                signed("/echo", &body, NOW).body(Body::from(client_created(2))),
                "no valid webhook-signature",
            ),
            ("stale", signed("/echo", &body, NOW - 3600).body(Body::from(body.clone())), "older than the tolerance"),
            (
                "wrong X-Planado-Secret",
                signed_with_secret("/echo", &body, NOW, "guess").body(Body::from(body.clone())),
                "wrong X-Planado-Secret",
            ),
            ("unsigned", ::axum::http::Request::post("/echo").body(Body::from(body.clone())), "missing header"),
        ];
        for (why, request, reason) in cases {
            let (status, text) = send(request.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {text}");
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["code"], "unauthorized", "{why}");
            assert!(json["message"].as_str().unwrap().contains(reason), "{why}: {text}");
        }
    }

    #[tokio::test]
    async fn a_verified_body_that_is_not_json_is_a_400() {
        let body = "this is not json";
        let (status, text) = send(signed("/echo", body, NOW).body(Body::from(body)).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains("invalid_json"), "{text}");
    }

    #[tokio::test]
    async fn a_replicating_handler_answers_422_for_a_gap_and_200_once_it_is_filled() {
        let app = router();
        let mut answers = Vec::new();
        for version in [2, 1, 2, 2] {
            let body = client_created(version);
            let request = signed("/replicate", &body, NOW).body(Body::from(body)).unwrap();
            answers.push(app.clone().oneshot(request).await.unwrap().status().as_u16());
        }
        // v2 too early, v1 applied, v2's retry applied, v2 again a duplicate.
        assert_eq!(answers, [422, 200, 200, 200]);
    }
}
