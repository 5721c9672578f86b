//! Typed events (webhooks.md, "Event types" and "The body"): the envelope
//! `{"event_uuid", "event_type", "context", "<resource>": snapshot}` parsed
//! into one [`Event`] variant per event type.
//!
//! An event type this version of the SDK does not know becomes
//! [`Event::Unknown`] with the whole body kept as JSON: a newer server must
//! never make an older receiver fail.

use crate::ordering::{EntityKey, EntityVersion};
use crate::snapshot::{Client, Job, Site, WebhookSnapshot, open_enum};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! event_types {
    ($( $(#[$meta:meta])* $variant:ident = $name:literal, $resource:literal, $payload:ident; )*) => {
        /// Every event type this version of the SDK knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum EventType {
            $( $(#[$meta])* $variant, )*
        }

        impl EventType {
            /// All known event types, in the order of webhooks.md.
            pub const ALL: &'static [EventType] = &[ $( EventType::$variant, )* ];

            /// The name on the wire (`event_type`), e.g. `job_started`.
            pub fn name(self) -> &'static str {
                match self { $( EventType::$variant => $name, )* }
            }

            /// The resource key of the body: `job`, `client`, `site` or `webhook`.
            pub fn resource(self) -> &'static str {
                match self { $( EventType::$variant => $resource, )* }
            }

            /// The event type of a wire name, if this SDK knows it.
            pub fn from_name(name: &str) -> Option<EventType> {
                match name { $( $name => Some(EventType::$variant), )* _ => None }
            }
        }

        /// One webhook event, typed by its `event_type`.
        ///
        /// Match on the variants you subscribed to and keep a `_` arm: the
        /// enum is `#[non_exhaustive]` because the server may grow new event
        /// types (until the SDK learns them, they arrive as
        /// [`Event::Unknown`]).
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Event {
            $( $(#[$meta])* $variant($payload), )*
            /// An event type this version of the SDK does not know, kept whole.
            Unknown(UnknownEvent),
        }

        impl Event {
            /// The known event type, or `None` for [`Event::Unknown`].
            pub fn known_type(&self) -> Option<EventType> {
                match self {
                    $( Event::$variant(_) => Some(EventType::$variant), )*
                    Event::Unknown(_) => None,
                }
            }

            /// Parses a typed payload once the envelope named its event type.
            fn typed(event_type: EventType, body: &[u8]) -> serde_json::Result<Event> {
                match event_type {
                    $( EventType::$variant => serde_json::from_slice(body).map(Event::$variant), )*
                }
            }
        }
    };
}

event_types! {
    /// A job was created (CRUD; version 1).
    JobCreated = "job_created", "job", JobEvent;
    /// A job changed — every change, status changes included (CRUD).
    JobUpdated = "job_updated", "job", JobEvent;
    /// A job was removed (CRUD; the last snapshot, at the next version).
    JobRemoved = "job_removed", "job", JobEvent;
    /// A job was assigned to a worker or a team (shares the version of its CRUD event).
    JobAssigned = "job_assigned", "job", JobEvent;
    /// A job was published to the technician's app (status event).
    JobPublished = "job_published", "job", JobEvent;
    /// The technician is on the way (status event).
    JobEnRoute = "job_en_route", "job", JobEvent;
    /// Work on the job started (status event).
    JobStarted = "job_started", "job", JobEvent;
    /// Work on the job was paused (status event).
    JobSuspended = "job_suspended", "job", JobEvent;
    /// Work on the job resumed (status event).
    JobResumed = "job_resumed", "job", JobEvent;
    /// The job was finished, with a resolution (status event).
    JobFinished = "job_finished", "job", JobEvent;
    /// The job was canceled (status event).
    JobCanceled = "job_canceled", "job", JobEvent;
    /// The technician's report is ready (shares the version of its `job_updated`).
    JobReportReady = "job_report_ready", "job", JobEvent;
    /// A client was created (CRUD; version 1).
    ClientCreated = "client_created", "client", ClientEvent;
    /// A client changed (CRUD).
    ClientUpdated = "client_updated", "client", ClientEvent;
    /// A client was removed (CRUD; the last snapshot, at the next version).
    ClientRemoved = "client_removed", "client", ClientEvent;
    /// A site was created (CRUD; version 1).
    SiteCreated = "site_created", "site", SiteEvent;
    /// A site changed (CRUD).
    SiteUpdated = "site_updated", "site", SiteEvent;
    /// A site was removed (CRUD; the last snapshot, at the next version).
    SiteRemoved = "site_removed", "site", SiteEvent;
    /// A test event sent on request (`POST /v2/webhooks/{uuid}/test`).
    WebhookTest = "webhook_test", "webhook", WebhookTestEvent;
}

impl EventType {
    /// Whether this is a CRUD event (`*_created`, `*_updated`, `*_removed`):
    /// exactly one of them exists per version of a resource, which is what a
    /// full-replication receiver needs (see [`Strategy::FullReplication`](crate::Strategy::FullReplication)).
    pub fn is_crud(self) -> bool {
        let name = self.name();
        name.ends_with("_created") || name.ends_with("_updated") || name.ends_with("_removed")
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

open_enum! {
    /// Where a change came from.
    pub enum Source {
        /// Through the API.
        Api = "api",
        /// From a technician's device (the change came with a `device_uuid`).
        Mobile = "mobile",
    }
}

/// Who made a change, when and from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// `api`, or `mobile` when the change came with a `device_uuid`.
    pub source: Source,
    /// When it happened (on the device, if it says so).
    pub happened_at: DateTime<Utc>,
    /// When it reached the server.
    pub created_at: DateTime<Utc>,
    /// The user on whose behalf it was done (null for a plain integration key).
    pub user_uuid: Option<Uuid>,
    /// That user's e-mail address.
    pub user_email: Option<String>,
    /// The device it came from, if any.
    pub device_uuid: Option<Uuid>,
}

/// The body of a job event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Unique per event; the same on every attempt, resend and webhook — deduplicate on it.
    pub event_uuid: Uuid,
    /// Who made the change, when and from where.
    pub context: Context,
    /// The job at the event's version.
    pub job: Job,
}

/// The body of a client event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEvent {
    /// Unique per event; the same on every attempt, resend and webhook — deduplicate on it.
    pub event_uuid: Uuid,
    /// Who made the change, when and from where.
    pub context: Context,
    /// The client at the event's version.
    pub client: Client,
}

/// The body of a site event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEvent {
    /// Unique per event; the same on every attempt, resend and webhook — deduplicate on it.
    pub event_uuid: Uuid,
    /// Who made the change, when and from where.
    pub context: Context,
    /// The site at the event's version.
    pub site: Site,
}

/// The body of a `webhook_test` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookTestEvent {
    /// Unique per event.
    pub event_uuid: Uuid,
    /// Who asked for the test, and when.
    pub context: Context,
    /// The webhook being tested.
    pub webhook: WebhookSnapshot,
}

/// An event of a type this SDK does not know yet.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownEvent {
    /// Unique per event — still good for deduplication.
    pub event_uuid: Uuid,
    /// The name on the wire.
    pub event_type: String,
    /// The whole body, as JSON.
    pub body: serde_json::Value,
}

/// Why a body is not an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is not JSON at all.
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but without a string `event_type` and a UUID `event_uuid`.
    #[error("the body is not a webhook event: {0}")]
    NotAnEvent(#[source] serde_json::Error),
    /// A known event type whose payload does not match its type.
    #[error("invalid {event_type} event: {source}")]
    InvalidPayload {
        /// The event type the body claimed.
        event_type: EventType,
        /// What did not match.
        #[source]
        source: serde_json::Error,
    },
}

/// The part of the body every event has, whatever its type.
#[derive(Deserialize)]
struct Envelope {
    event_uuid: Uuid,
    event_type: String,
}

impl Event {
    /// Parses a webhook body.
    ///
    /// # Errors
    ///
    /// [`ParseError::NotJson`] when the body is not JSON,
    /// [`ParseError::NotAnEvent`] when it lacks `event_type` or `event_uuid`,
    /// [`ParseError::InvalidPayload`] when a known event type does not carry
    /// what it should. An *unknown* event type is not an error.
    pub fn from_slice(body: &[u8]) -> Result<Event, ParseError> {
        // The envelope first, so that the type decides how the rest is read
        // and a syntax error is told apart from a body of the wrong shape.
        let envelope: Envelope = serde_json::from_slice(body)
            .map_err(|e| if e.is_data() { ParseError::NotAnEvent(e) } else { ParseError::NotJson(e) })?;
        match EventType::from_name(&envelope.event_type) {
            Some(event_type) => {
                Event::typed(event_type, body).map_err(|source| ParseError::InvalidPayload { event_type, source })
            }
            None => Ok(Event::Unknown(UnknownEvent {
                event_uuid: envelope.event_uuid,
                event_type: envelope.event_type,
                body: serde_json::from_slice(body).map_err(ParseError::NotJson)?,
            })),
        }
    }

    /// The name on the wire, known or not.
    pub fn event_type(&self) -> &str {
        match self {
            Event::Unknown(e) => &e.event_type,
            known => known.known_type().map(EventType::name).unwrap_or_default(),
        }
    }

    /// The event's id: deduplicate on it.
    pub fn event_uuid(&self) -> Uuid {
        match self.parts() {
            Parts::Job(e) => e.event_uuid,
            Parts::Client(e) => e.event_uuid,
            Parts::Site(e) => e.event_uuid,
            Parts::Webhook(e) => e.event_uuid,
            Parts::Unknown(e) => e.event_uuid,
        }
    }

    /// Who made the change, when and from where (`None` for an unknown type,
    /// whose shape this SDK cannot vouch for).
    pub fn context(&self) -> Option<&Context> {
        match self.parts() {
            Parts::Job(e) => Some(&e.context),
            Parts::Client(e) => Some(&e.context),
            Parts::Site(e) => Some(&e.context),
            Parts::Webhook(e) => Some(&e.context),
            Parts::Unknown(_) => None,
        }
    }

    /// The job snapshot, for a job event.
    pub fn job(&self) -> Option<&Job> {
        match self.parts() {
            Parts::Job(e) => Some(&e.job),
            _ => None,
        }
    }

    /// The client snapshot, for a client event.
    pub fn client(&self) -> Option<&Client> {
        match self.parts() {
            Parts::Client(e) => Some(&e.client),
            _ => None,
        }
    }

    /// The site snapshot, for a site event.
    pub fn site(&self) -> Option<&Site> {
        match self.parts() {
            Parts::Site(e) => Some(&e.site),
            _ => None,
        }
    }

    /// Which versioned resource the event is about and at which version —
    /// what the ordering strategies work on. `None` for `webhook_test`
    /// (webhooks are not replicated) and for unknown event types.
    pub fn entity(&self) -> Option<EntityVersion> {
        let (entity_type, entity_uuid, version) = match self.parts() {
            Parts::Job(e) => ("job", e.job.uuid, e.job.version),
            Parts::Client(e) => ("client", e.client.uuid, e.client.version),
            Parts::Site(e) => ("site", e.site.uuid, e.site.version),
            Parts::Webhook(_) | Parts::Unknown(_) => return None,
        };
        Some(EntityVersion { key: EntityKey::new(entity_type, entity_uuid), version })
    }

    /// The payload by shape rather than by type: the accessors above need
    /// only to know where the snapshot is.
    fn parts(&self) -> Parts<'_> {
        use Event::*;
        match self {
            JobCreated(e) | JobUpdated(e) | JobRemoved(e) | JobAssigned(e) | JobPublished(e) | JobEnRoute(e)
            | JobStarted(e) | JobSuspended(e) | JobResumed(e) | JobFinished(e) | JobCanceled(e) | JobReportReady(e) => {
                Parts::Job(e)
            }
            ClientCreated(e) | ClientUpdated(e) | ClientRemoved(e) => Parts::Client(e),
            SiteCreated(e) | SiteUpdated(e) | SiteRemoved(e) => Parts::Site(e),
            WebhookTest(e) => Parts::Webhook(e),
            Unknown(e) => Parts::Unknown(e),
        }
    }
}

enum Parts<'a> {
    Job(&'a JobEvent),
    Client(&'a ClientEvent),
    Site(&'a SiteEvent),
    Webhook(&'a WebhookTestEvent),
    Unknown(&'a UnknownEvent),
}

impl std::str::FromStr for Event {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Event::from_slice(s.as_bytes())
    }
}

impl<'de> Deserialize<'de> for Event {
    /// Lets an `Event` sit inside other types (`Json<Event>`, a queue
    /// message); it goes through [`Event::from_slice`] so the rules are the same.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let bytes = serde_json::to_vec(&value).map_err(serde::de::Error::custom)?;
        Event::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Assignee, ContactType, JobStatus};
    use serde_json::json;

    /// A body as the server writes it (field order and `+00:00` offsets included).
    fn job_body(event_type: &str, version: i64) -> String {
        json!({
            "event_uuid": "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e0f",
            "event_type": event_type,
            "context": {
                "source": "mobile",
                "happened_at": "2026-11-22T09:58:03+00:00",
                "created_at": "2026-11-22T10:02:41.123+00:00",
                "user_uuid": "5c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5",
                "user_email": "tech@acme.example",
                "device_uuid": "a77e0000-0000-4000-8000-000000000001"
            },
            "job": {
                "uuid": "0190f3a4-0000-7000-8000-000000000007",
                "serial_no": 42,
                "external_id": "CRM-1",
                "external_order_id": null,
                "status": "started",
                "type": {"uuid": "0190f3a4-0000-7000-8000-0000000000aa", "code": "install"},
                "description": "Fit the boiler",
                "scheduled_at": "2026-11-22T09:00:00+00:00",
                "scheduled_duration": {"minutes": 90},
                "assignee": {"worker": {"uuid": "0190f3a4-0000-7000-8000-0000000000bb", "email": "tech@acme.example"}},
                "client": {"uuid": "0190f3a4-0000-7000-8000-0000000000cc", "external_id": null},
                "site": null,
                "address": {"formatted": "1 Main St", "entrance_no": null, "apartment": "4B", "floor": null,
                            "description": null, "geolocation": {"latitude": 51.5, "longitude": -0.12}},
                "contacts": [{"name": "Ann", "value": "+441234", "type": "phone"}],
                "timestamps": {"en_route_at": null, "started_at": "2026-11-22T09:58:03+00:00",
                               "suspended_at": null, "finished_at": null, "canceled_at": null},
                "resolution": null,
                "report_fields": [],
                "version": version,
                "created_at": "2026-11-20T08:00:00+00:00",
                "updated_at": "2026-11-22T10:02:41+00:00",
                "a_field_added_later": {"receivers": "must survive it"}
            }
        })
        .to_string()
    }

    #[test]
    fn a_job_started_body_parses_into_a_typed_job() {
        let event = Event::from_slice(job_body("job_started", 7).as_bytes()).unwrap();

        let Event::JobStarted(e) = &event else { panic!("not job_started: {event:?}") };
        assert_eq!(e.context.source, Source::Mobile);
        assert_eq!(e.context.user_email.as_deref(), Some("tech@acme.example"));
        assert_eq!(e.job.status, JobStatus::Started);
        assert_eq!(e.job.serial_no, 42);
        assert_eq!(e.job.job_type.as_ref().unwrap().code, "install");
        assert!(matches!(e.job.assignee, Some(Assignee::Worker(_))));
        assert_eq!(e.job.contacts[0].kind, ContactType::Phone);
        assert_eq!(e.job.address.as_ref().unwrap().geolocation.as_ref().unwrap().latitude, 51.5);
        assert!(e.job.timestamps.started_at.is_some());
        assert_eq!(event.event_type(), "job_started");
        assert_eq!(event.known_type(), Some(EventType::JobStarted));
        let entity = event.entity().unwrap();
        assert_eq!((entity.key.entity_type.as_str(), entity.version), ("job", 7));
        assert_eq!(entity.key.entity_uuid, e.job.uuid);
    }

    #[test]
    fn every_job_event_type_parses_into_its_own_variant() {
        for t in EventType::ALL.iter().filter(|t| t.resource() == "job") {
            let event = Event::from_slice(job_body(t.name(), 3).as_bytes()).unwrap();
            assert_eq!(event.known_type(), Some(*t), "{t}");
            assert_eq!(event.job().map(|j| j.version), Some(3), "{t}");
        }
    }

    #[test]
    fn client_and_site_events_parse() {
        let client = json!({
            "event_uuid": "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e01",
            "event_type": "client_updated",
            "context": {"source": "api", "happened_at": "2026-11-22T10:00:00+00:00",
                        "created_at": "2026-11-22T10:00:00+00:00", "user_uuid": null, "user_email": null,
                        "device_uuid": null},
            "client": {"uuid": "0190f3a4-0000-7000-8000-0000000000cc", "external_id": "ERP-9",
                       "organization": true, "organization_name": "Acme", "first_name": null,
                       "middle_name": null, "last_name": null, "name": "Acme", "site_address": null,
                       "contacts": [{"name": null, "value": "ops@acme.example", "type": "email"}],
                       "version": 2, "created_at": "2026-11-20T08:00:00+00:00",
                       "updated_at": "2026-11-22T10:00:00+00:00"}
        });
        let event: Event = serde_json::from_value(client).unwrap();
        let Event::ClientUpdated(e) = &event else { panic!("{event:?}") };
        assert_eq!(e.client.name, "Acme");
        assert!(e.client.organization);
        assert_eq!(e.context.source, Source::Api);
        assert_eq!(event.entity().unwrap().version, 2);

        let site = json!({
            "event_uuid": "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e02",
            "event_type": "site_removed",
            "context": {"source": "api", "happened_at": "2026-11-22T10:00:00+00:00",
                        "created_at": "2026-11-22T10:00:00+00:00", "user_uuid": null, "user_email": null,
                        "device_uuid": null},
            "site": {"uuid": "0190f3a4-0000-7000-8000-0000000000dd", "external_id": null, "name": "Depot",
                     "description": null, "address": null, "contacts": [],
                     "client": {"uuid": "0190f3a4-0000-7000-8000-0000000000cc", "external_id": "ERP-9"},
                     "version": 5, "created_at": "2026-11-20T08:00:00+00:00",
                     "updated_at": "2026-11-22T10:00:00+00:00"}
        })
        .to_string();
        let event: Event = site.parse().unwrap();
        let Event::SiteRemoved(e) = &event else { panic!("{event:?}") };
        assert_eq!(e.site.client.as_ref().unwrap().external_id.as_deref(), Some("ERP-9"));
        assert_eq!(event.entity().unwrap().key.entity_type, "site");
    }

    #[test]
    fn a_webhook_test_event_parses_and_has_no_entity_to_order() {
        let body = json!({
            "event_uuid": "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e03",
            "event_type": "webhook_test",
            "context": {"source": "api", "happened_at": "2026-11-22T10:00:00+00:00",
                        "created_at": "2026-11-22T10:00:00+00:00", "user_uuid": null, "user_email": null,
                        "device_uuid": null},
            "webhook": {"uuid": "0190f3a4-0000-7000-8000-0000000000ee", "url": "https://hooks.example.com/x",
                        "event_types": ["job_created"], "secret": null, "signing_secret": "",
                        "ordering": "entity", "status": "active", "suspended_at": null,
                        "suspension_reason": null, "created_at": "2026-11-20T08:00:00+00:00",
                        "updated_at": "2026-11-20T08:00:00+00:00", "version": 0}
        });
        let event: Event = serde_json::from_value(body).unwrap();
        let Event::WebhookTest(e) = &event else { panic!("{event:?}") };
        assert_eq!(e.webhook.ordering.as_deref(), Some("entity"));
        assert_eq!(event.entity(), None);
    }

    #[test]
    fn an_unknown_event_type_is_kept_whole_not_rejected() {
        let body = r#"{"event_uuid": "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e04", "event_type": "invoice_paid",
                       "context": {"source": "api"}, "invoice": {"total": 12}}"#;
        let event = Event::from_slice(body.as_bytes()).unwrap();
        let Event::Unknown(e) = &event else { panic!("{event:?}") };
        assert_eq!(e.event_type, "invoice_paid");
        assert_eq!(e.body["invoice"]["total"], 12);
        assert_eq!(event.event_type(), "invoice_paid");
        assert_eq!(event.known_type(), None);
        assert_eq!(event.context(), None);
        assert_eq!(event.entity(), None);
        assert_eq!(event.event_uuid().to_string(), "0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e04");
    }

    #[test]
    fn bad_bodies_are_told_apart() {
        let cases: &[(&str, &str)] = &[
            ("not json", "syntax error"),
            ("{\"event_type\": \"job_created\"", "truncated JSON"),
            ("[1, 2]", "JSON that is not an object"),
            ("{\"event_type\": \"job_created\"}", "no event_uuid"),
            ("{\"event_uuid\": \"0190f3a4-1c2b-7d3e-8f40-5a6b7c8d9e04\", \"event_type\": \"job_created\"}", "no job"),
        ];
        let kinds: Vec<_> = cases
            .iter()
            .map(|(body, why)| match Event::from_slice(body.as_bytes()) {
                Err(ParseError::NotJson(_)) => "not json",
                Err(ParseError::NotAnEvent(_)) => "not an event",
                Err(ParseError::InvalidPayload { .. }) => "invalid payload",
                Ok(e) => panic!("{why}: parsed as {e:?}"),
            })
            .collect();
        assert_eq!(kinds, ["not json", "not json", "not an event", "not an event", "invalid payload"]);
    }

    #[test]
    fn event_type_names_round_trip_and_crud_is_recognised() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_name(t.name()), Some(*t));
        }
        let crud: Vec<_> = EventType::ALL.iter().filter(|t| t.is_crud()).map(|t| t.name()).collect();
        assert_eq!(
            crud,
            [
                "job_created",
                "job_updated",
                "job_removed",
                "client_created",
                "client_updated",
                "client_removed",
                "site_created",
                "site_updated",
                "site_removed"
            ]
        );
    }
}
