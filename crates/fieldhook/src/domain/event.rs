//! Event types and the event envelope of webhooks.md ("Event types", "The
//! body"). An event is written to the outbox in the same transaction as the
//! change it describes; its body is serialised once, here, and sent verbatim.

use super::EntityKind;
use super::common::ts;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

macro_rules! event_types {
    ($( $variant:ident = $name:literal, $resource:literal, $desc:literal; )*) => {
        /// Every event type a webhook can subscribe to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $( $variant, )* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[ $( EventType::$variant, )* ];

            pub fn name(self) -> &'static str {
                match self { $( EventType::$variant => $name, )* }
            }

            /// `job`, `client` or `site`.
            pub fn resource(self) -> &'static str {
                match self { $( EventType::$variant => $resource, )* }
            }

            pub fn description(self) -> &'static str {
                match self { $( EventType::$variant => $desc, )* }
            }

            pub fn from_name(name: &str) -> Option<EventType> {
                match name { $( $name => Some(EventType::$variant), )* _ => None }
            }
        }
    };
}

event_types! {
    JobCreated = "job_created", "job", "A job was created.";
    JobUpdated = "job_updated", "job", "A job changed (every change, status changes included).";
    JobRemoved = "job_removed", "job", "A job was removed.";
    JobAssigned = "job_assigned", "job", "A job was assigned to a worker or a team.";
    JobPublished = "job_published", "job", "A job was published to the technician's app.";
    JobEnRoute = "job_en_route", "job", "The technician is on the way.";
    JobStarted = "job_started", "job", "Work on the job started.";
    JobSuspended = "job_suspended", "job", "Work on the job was paused.";
    JobResumed = "job_resumed", "job", "Work on the job resumed.";
    JobFinished = "job_finished", "job", "The job was finished, with a resolution.";
    JobCanceled = "job_canceled", "job", "The job was canceled.";
    JobReportReady = "job_report_ready", "job", "The technician's report is ready.";
    ClientCreated = "client_created", "client", "A client was created.";
    ClientUpdated = "client_updated", "client", "A client changed.";
    ClientRemoved = "client_removed", "client", "A client was removed.";
    SiteCreated = "site_created", "site", "A site was created.";
    SiteUpdated = "site_updated", "site", "A site changed.";
    SiteRemoved = "site_removed", "site", "A site was removed.";
    WebhookTest = "webhook_test", "webhook", "A test event sent on request (POST /v2/webhooks/{uuid}/test).";
    AssigneeNotification = "assignee_notification", "notification", "A job was assigned or rescheduled (push gateway only).";
}

impl EventType {
    /// Whether a webhook can subscribe to it (not the test event, not the
    /// notifications meant for the push gateway).
    pub fn subscribable(self) -> bool {
        !matches!(self, EventType::WebhookTest | EventType::AssigneeNotification)
    }

    /// The CRUD event of a change to a resource of `kind`.
    pub fn crud(kind: EntityKind, change: Change) -> EventType {
        use Change::*;
        use EventType::*;
        match (kind, change) {
            (EntityKind::Job, Created) => JobCreated,
            (EntityKind::Job, Updated) => JobUpdated,
            (EntityKind::Job, Removed) => JobRemoved,
            (EntityKind::Client, Created) => ClientCreated,
            (EntityKind::Client, Updated) => ClientUpdated,
            (EntityKind::Client, Removed) => ClientRemoved,
            (EntityKind::Site, Created) => SiteCreated,
            (EntityKind::Site, Updated) => SiteUpdated,
            (EntityKind::Site, Removed) => SiteRemoved,
        }
    }
}

/// What a write did to a versioned resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Removed,
}

/// `source` of an event's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Api,
    Mobile,
}

/// Who did a change, when and from where (webhooks.md, "The body").
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Context {
    pub source: Source,
    /// When it happened (on the device, if it says so).
    #[serde(with = "ts")]
    pub happened_at: DateTime<Utc>,
    /// When it reached the server.
    #[serde(with = "ts")]
    pub created_at: DateTime<Utc>,
    pub user_uuid: Option<Uuid>,
    pub user_email: Option<String>,
    pub device_uuid: Option<Uuid>,
}

impl Context {
    /// A change made through the API by a plain integration key.
    pub fn api(now: DateTime<Utc>) -> Self {
        Self {
            source: Source::Api,
            happened_at: now,
            created_at: now,
            user_uuid: None,
            user_email: None,
            device_uuid: None,
        }
    }
}

/// One event as written to the outbox.
#[derive(Debug, Clone)]
pub struct Event {
    pub uuid: Uuid,
    pub event_type: EventType,
    /// `job`, `client`, `site` (or `webhook` for a test event).
    pub entity_type: &'static str,
    pub entity_uuid: Uuid,
    pub entity_version: i64,
    pub created_at: DateTime<Utc>,
    /// The exact JSON body that webhooks receive.
    pub body: String,
}

impl Event {
    /// Builds the event and serialises its body once:
    /// `{"event_uuid", "event_type", "context", "<resource>": snapshot}`.
    pub fn new<S: Serialize>(
        event_type: EventType,
        entity_type: &'static str,
        entity_uuid: Uuid,
        entity_version: i64,
        context: &Context,
        snapshot: &S,
    ) -> serde_json::Result<Self> {
        #[derive(Serialize)]
        struct Body<'a, S> {
            event_uuid: Uuid,
            event_type: &'static str,
            context: &'a Context,
            #[serde(flatten)]
            resource: Keyed<'a, S>,
        }
        struct Keyed<'a, S>(&'static str, &'a S);
        impl<S: Serialize> Serialize for Keyed<'_, S> {
            fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(self.0, self.1)?;
                m.end()
            }
        }
        let uuid = Uuid::now_v7();
        let body = serde_json::to_string(&Body {
            event_uuid: uuid,
            event_type: event_type.name(),
            context,
            resource: Keyed(entity_type, snapshot),
        })?;
        Ok(Self { uuid, event_type, entity_type, entity_uuid, entity_version, created_at: context.created_at, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_name(t.name()), Some(*t));
        }
        assert_eq!(EventType::from_name("job_exploded"), None);
    }

    #[test]
    fn body_has_the_resource_under_its_own_key() {
        let ctx = Context::api(Utc::now());
        let e =
            Event::new(EventType::ClientCreated, "client", Uuid::now_v7(), 1, &ctx, &serde_json::json!({"version": 1}))
                .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(v["event_type"], "client_created");
        assert_eq!(v["event_uuid"], e.uuid.to_string());
        assert_eq!(v["client"]["version"], 1);
        assert_eq!(v["context"]["source"], "api");
    }
}
