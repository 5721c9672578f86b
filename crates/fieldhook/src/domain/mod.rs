//! The domain: resources, their validation rules, the job state machine, event
//! types and scopes. Pure data and rules — no I/O happens in this module; the
//! storage layer loads and saves what these types describe.

pub mod client;
pub mod common;
pub mod event;
pub mod job;
pub mod notification;
pub mod people;
pub mod scope;
pub mod site;
pub mod webhook;

/// The three resources that carry versions, history and webhook events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Job,
    Client,
    Site,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Job => "job",
            EntityKind::Client => "client",
            EntityKind::Site => "site",
        }
    }

    /// The table that stores this kind.
    pub fn table(self) -> &'static str {
        match self {
            EntityKind::Job => "jobs",
            EntityKind::Client => "clients",
            EntityKind::Site => "sites",
        }
    }
}

/// What the storage layer needs to know of a versioned resource (job, client
/// or site) to store it, version it and emit its events.
pub trait Resource: serde::Serialize + serde::de::DeserializeOwned + Clone + PartialEq + Send + Sync + 'static {
    const KIND: EntityKind;
    fn uuid(&self) -> uuid::Uuid;
    fn external_id(&self) -> Option<&str>;
    fn version(&self) -> i64;
    fn updated_at(&self) -> chrono::DateTime<chrono::Utc>;
    /// Sets the version and `updated_at` of a change.
    fn stamp(&mut self, version: i64, now: chrono::DateTime<chrono::Utc>);

    /// Whether `self` differs from `other` in anything but version and
    /// `updated_at`: a PATCH that changes nothing bumps no version.
    fn differs_from(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.stamp(other.version(), other.updated_at());
        &a != other
    }
}
