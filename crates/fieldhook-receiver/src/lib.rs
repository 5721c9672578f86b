//! # fieldhook-receiver
//!
//! The receiving end of fieldhook webhooks (and of Planado-compatible
//! ones): everything between "an HTTP POST arrived" and "apply this change
//! to my data", so that a receiver is a few lines of glue.
//!
//! 1. **Verify** the request — [`Verifier`] checks the shared
//!    `X-Planado-Secret` (constant-time) and/or the
//!    [Standard Webhooks](https://www.standardwebhooks.com/) signature with a
//!    timestamp tolerance (5 minutes by default), and says why it refused
//!    ([`VerifyError`]).
//! 2. **Parse** the body into an [`Event`]: one variant per event type, with
//!    typed [`Job`], [`Client`] and [`Site`] snapshots and the [`Context`].
//!    Unknown event types arrive as [`Event::Unknown`], unknown fields are
//!    ignored: a newer server never breaks an older receiver.
//! 3. **Order** — fieldhook delivers at least once and, unless the webhook
//!    asks for `ordering: "entity"`, possibly out of order. A [`VersionGate`]
//!    applies one of the two [`Strategy`]s of the specification over a
//!    [`VersionStore`] and tells the handler what to answer ([`Decision`]:
//!    apply and answer 200, ignore and answer 200, or answer 422 for a gap so
//!    that fieldhook retries later). See [`ordering`] for how applying and
//!    recording stay atomic.
//!
//! Optional features:
//!
//! * `axum` — `axum::VerifiedEvent`, an axum 0.8 extractor yielding a
//!   verified, typed event (401 with the reason otherwise), and
//!   `IntoResponse` for [`Decision`].
//! * `sqlite` — `sqlite::SqliteVersionStore`, versions in SQLite through
//!   sqlx, with a transaction that commits your writes and the version
//!   together.
//!
//! ## Without a framework
//!
//! ```
//! use fieldhook_receiver::{Event, MemoryVersionStore, Outcome, SigningSecret, Strategy, Verifier, VersionGate};
//! use std::convert::Infallible;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"; // the webhook's signing_secret
//! let verifier = Verifier::builder().signing_secret(secret).build()?;
//! let gate = VersionGate::new(Strategy::LastWriteWins, MemoryVersionStore::new());
//!
//! // What arrives (here signed by hand, as fieldhook would).
//! let body = br#"{"event_uuid": "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e01", "event_type": "site_created",
//!     "context": {"source": "api", "happened_at": "2026-11-22T10:00:00+00:00",
//!                 "created_at": "2026-11-22T10:00:00+00:00", "user_uuid": null, "user_email": null,
//!                 "device_uuid": null},
//!     "site": {"uuid": "0190f3a4-0000-7000-8000-0000000000dd", "external_id": null, "name": "Depot",
//!              "description": null, "address": null, "contacts": [], "client": null, "version": 1,
//!              "created_at": "2026-11-22T10:00:00+00:00", "updated_at": "2026-11-22T10:00:00+00:00"}}"#;
//! let now = chrono::Utc::now();
//! let id = "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e01";
//! let signature = SigningSecret::parse(secret)?.sign(id, now.timestamp(), body);
//! let headers = [
//!     ("webhook-id", id.to_string()),
//!     ("webhook-timestamp", now.timestamp().to_string()),
//!     ("webhook-signature", signature),
//! ];
//!
//! // The receiver.
//! verifier.verify(&headers, body, now)?; // else answer 401
//! let event = Event::from_slice(body)?; // else answer 400
//! let status = match (&event, event.entity()) {
//!     (Event::SiteCreated(e) | Event::SiteUpdated(e), Some(entity)) => {
//!         let outcome = gate.process(&entity, || async {
//!             println!("saving site {} at version {}", e.site.name, e.site.version);
//!             Ok::<_, Infallible>(())
//!         });
//!         outcome.await?.status_code()
//!     }
//!     _ => 200, // not subscribed, webhook_test, or a type newer than this SDK
//! };
//! assert_eq!(status, 200);
//! # Ok(())
//! # }
//! ```
//!
//! ## With axum
//!
//! The documentation of the `axum` module (feature `axum`) and the README
//! show a complete replicating receiver.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod event;
pub mod ordering;
pub mod snapshot;
pub mod store;
pub mod verify;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

pub use event::{
    ClientEvent, Context, Event, EventType, JobEvent, ParseError, SiteEvent, Source, UnknownEvent, WebhookTestEvent,
};
pub use ordering::{Decision, EntityKey, EntityVersion, Outcome, ProcessError, Strategy, VersionGate};
pub use snapshot::{
    Address, Assignee, Client, Contact, ContactType, Geolocation, Job, JobStatus, JobTypeRef, Reference, ReportField,
    Resolution, ScheduledDuration, Site, TeamRef, Timestamps, WebhookSnapshot, WorkerRef,
};
pub use store::{MemoryVersionStore, VersionStore};
pub use verify::{
    ConfigError, DEFAULT_TOLERANCE, HeaderSource, InvalidSigningSecret, SigningSecret, Verifier, VerifierBuilder,
    VerifyError,
};
