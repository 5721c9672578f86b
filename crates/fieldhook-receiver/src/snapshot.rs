//! The resource snapshots that events carry (api.md, "Clients", "Sites",
//! "Jobs", "Shared value objects"): a job, client or site exactly as
//! `GET /v2/<resource>s/{id}` returns it at the event's `version`.
//!
//! These types mirror the server's JSON field for field, but they are written
//! for a *receiver*, which must survive a newer server:
//!
//! * unknown fields are ignored (no `deny_unknown_fields` anywhere), so an
//!   additive change to a snapshot never breaks parsing;
//! * enumerations that may grow (job status, contact type, event source,
//!   assignee kind) have an `Other` variant that keeps the unknown value
//!   instead of failing;
//! * lists default to empty when absent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Declares a string enumeration that keeps values it does not know in
/// `Other(String)`: a receiver must not reject an event because the server
/// learnt a new status.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version of the SDK does not know (sent by a newer server).
            Other(String),
        }

        impl $name {
            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $text => $name::$variant, )*
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                Ok($name::from(s.as_ref()))
            }
        }
    };
}

pub(crate) use open_enum;

open_enum! {
    /// A job's place in its lifecycle (api.md, "Lifecycle").
    pub enum JobStatus {
        /// Created; lacks a scheduled time or an assignee.
        Posted = "posted",
        /// Has both `scheduled_at` and an assignee.
        Scheduled = "scheduled",
        /// Sent to the technician's app.
        Published = "published",
        /// The technician is on the way.
        EnRoute = "en_route",
        /// Work in progress.
        Started = "started",
        /// Work paused.
        Suspended = "suspended",
        /// Done, with a resolution.
        Finished = "finished",
        /// Called off.
        Canceled = "canceled",
    }
}

open_enum! {
    /// What the `value` of a [`Contact`] is.
    pub enum ContactType {
        /// A phone number.
        Phone = "phone",
        /// An e-mail address.
        Email = "email",
    }
}

/// A point on the map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geolocation {
    /// Degrees, in [-90, 90].
    pub latitude: f64,
    /// Degrees, in [-180, 180].
    pub longitude: f64,
}

/// A postal address; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    /// The address in one line, as a human writes it.
    pub formatted: Option<String>,
    /// Entrance number.
    pub entrance_no: Option<String>,
    /// Apartment or suite.
    pub apartment: Option<String>,
    /// Floor.
    pub floor: Option<String>,
    /// Free-text directions.
    pub description: Option<String>,
    /// Coordinates, when known.
    pub geolocation: Option<Geolocation>,
}

/// A phone number or e-mail address of a person to contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Whom the contact reaches.
    pub name: Option<String>,
    /// The phone number or e-mail address.
    pub value: Option<String>,
    /// Whether `value` is a phone number or an e-mail address.
    #[serde(rename = "type")]
    pub kind: ContactType,
}

/// A reference to a client or site inside another snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// The referenced resource.
    pub uuid: Uuid,
    /// Its id in the integrating system, when it has one.
    pub external_id: Option<String>,
}

/// The type of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTypeRef {
    /// The job type.
    pub uuid: Uuid,
    /// Its code, unique per account.
    pub code: String,
}

/// A technician assigned to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRef {
    /// The user.
    pub uuid: Uuid,
    /// The user's e-mail address.
    pub email: String,
}

/// A team assigned to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRef {
    /// The team.
    pub uuid: Uuid,
    /// Its name, unique per account.
    pub name: String,
}

/// Who does a job: `{"worker": {...}}` or `{"team": {...}}`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Assignee {
    /// One technician.
    Worker(WorkerRef),
    /// A team (each of its workers).
    Team(TeamRef),
    /// A kind of assignee this version of the SDK does not know, kept as sent.
    Other(serde_json::Value),
}

impl Serialize for Assignee {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Assignee::Worker(w) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("worker", w)?;
                m.end()
            }
            Assignee::Team(t) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("team", t)?;
                m.end()
            }
            Assignee::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Assignee {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // Through a map rather than an externally tagged derive, so that a
        // future kind of assignee lands in `Other` instead of failing.
        let mut map = serde_json::Map::deserialize(d)?;
        if let Some(w) = map.remove("worker") {
            return serde_json::from_value(w).map(Assignee::Worker).map_err(D::Error::custom);
        }
        if let Some(t) = map.remove("team") {
            return serde_json::from_value(t).map(Assignee::Team).map_err(D::Error::custom);
        }
        Ok(Assignee::Other(serde_json::Value::Object(map)))
    }
}

/// How long a job is planned to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledDuration {
    /// Minutes, 1 to 100000.
    pub minutes: i64,
}

/// When the lifecycle steps of a job happened; each is null until it does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamps {
    /// Set by `en_route`.
    pub en_route_at: Option<DateTime<Utc>>,
    /// Set by `start`.
    pub started_at: Option<DateTime<Utc>>,
    /// Set by `suspend`.
    pub suspended_at: Option<DateTime<Utc>>,
    /// Set by `finish`.
    pub finished_at: Option<DateTime<Utc>>,
    /// Set by `cancel`.
    pub canceled_at: Option<DateTime<Utc>>,
}

/// How a finished job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Whether the work was done.
    pub successful: bool,
    /// The technician's words.
    pub comment: Option<String>,
}

/// One field of the technician's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportField {
    /// The field's label.
    pub name: String,
    /// What the technician entered.
    pub value: Option<String>,
}

/// A job (a visit of a technician to do work) at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job.
    pub uuid: Uuid,
    /// Per-account sequence number: 1, 2, 3 …
    pub serial_no: i64,
    /// Its id in the integrating system.
    pub external_id: Option<String>,
    /// Groups the visits of one order (not unique).
    pub external_order_id: Option<String>,
    /// Where the job is in its lifecycle.
    pub status: JobStatus,
    /// The job type (`type` on the wire).
    #[serde(rename = "type")]
    pub job_type: Option<JobTypeRef>,
    /// What is to be done.
    pub description: Option<String>,
    /// When the visit is planned.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// How long it is planned to take.
    pub scheduled_duration: Option<ScheduledDuration>,
    /// Who does it.
    pub assignee: Option<Assignee>,
    /// The client the work is for.
    pub client: Option<Reference>,
    /// The site where the work is done.
    pub site: Option<Reference>,
    /// Where the work is done.
    pub address: Option<Address>,
    /// Whom to call.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// When the lifecycle steps happened.
    #[serde(default)]
    pub timestamps: Timestamps,
    /// How it ended (set when finished).
    pub resolution: Option<Resolution>,
    /// The technician's report.
    #[serde(default)]
    pub report_fields: Vec<ReportField>,
    /// 1 on creation, +1 on every change (removal included).
    pub version: i64,
    /// When the job was created.
    pub created_at: DateTime<Utc>,
    /// When this version was made.
    pub updated_at: DateTime<Utc>,
}

/// A client (a company or a person that orders work) at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// The client.
    pub uuid: Uuid,
    /// Its id in the integrating system.
    pub external_id: Option<String>,
    /// Whether this is a company (fixed at creation).
    #[serde(default)]
    pub organization: bool,
    /// The company's name, for an organization.
    pub organization_name: Option<String>,
    /// A person's first name.
    pub first_name: Option<String>,
    /// A person's middle name.
    pub middle_name: Option<String>,
    /// A person's last name.
    pub last_name: Option<String>,
    /// The organization name, or the person's names joined.
    #[serde(default)]
    pub name: String,
    /// The client's own address.
    pub site_address: Option<Address>,
    /// Whom to call.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// 1 on creation, +1 on every change (removal included).
    pub version: i64,
    /// When the client was created.
    pub created_at: DateTime<Utc>,
    /// When this version was made.
    pub updated_at: DateTime<Utc>,
}

/// A site (a place where work is done, optionally a client's) at one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// The site.
    pub uuid: Uuid,
    /// Its id in the integrating system.
    pub external_id: Option<String>,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Where it is.
    pub address: Option<Address>,
    /// Whom to call.
    #[serde(default)]
    pub contacts: Vec<Contact>,
    /// The client it belongs to.
    pub client: Option<Reference>,
    /// 1 on creation, +1 on every change (removal included).
    pub version: i64,
    /// When the site was created.
    pub created_at: DateTime<Utc>,
    /// When this version was made.
    pub updated_at: DateTime<Utc>,
}

/// The webhook a `webhook_test` event is about. Its secrets are never
/// echoed (the receiver already holds them), and its version is always 0:
/// webhooks are not replicated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSnapshot {
    /// The webhook.
    pub uuid: Uuid,
    /// Where it delivers (this receiver).
    pub url: String,
    /// What it subscribes to.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// `none` or `entity` (strictly ordered per resource).
    pub ordering: Option<String>,
    /// `active`, `paused` or `suspended`.
    pub status: Option<String>,
    /// Always 0.
    #[serde(default)]
    pub version: i64,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_status_is_kept_rather_than_rejected() {
        let s: JobStatus = serde_json::from_value(json!("awaiting_parts")).unwrap();
        assert_eq!(s, JobStatus::Other("awaiting_parts".into()));
        assert_eq!(serde_json::to_value(&s).unwrap(), json!("awaiting_parts"));
        let s: JobStatus = serde_json::from_value(json!("en_route")).unwrap();
        assert_eq!(s, JobStatus::EnRoute);
    }

    #[test]
    fn assignees_of_every_kind_round_trip() {
        let uuid = Uuid::nil();
        for (body, expected) in [
            (
                json!({"worker": {"uuid": uuid, "email": "w@x.io"}}),
                Assignee::Worker(WorkerRef { uuid, email: "w@x.io".into() }),
            ),
            (json!({"team": {"uuid": uuid, "name": "Night"}}), Assignee::Team(TeamRef { uuid, name: "Night".into() })),
            (json!({"contractor": {"uuid": uuid}}), Assignee::Other(json!({"contractor": {"uuid": uuid}}))),
        ] {
            let a: Assignee = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(a, expected, "{body}");
            assert_eq!(serde_json::to_value(&a).unwrap(), body);
        }
    }
}
