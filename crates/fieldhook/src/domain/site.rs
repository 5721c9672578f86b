//! Sites (api.md, "Sites"): a place where work is done, optionally a client's.

use super::common::{
    Address, Contact, RefInput, RefOutput, max_len, normalize, nullable, required, ts, validate_contacts,
};
use super::{EntityKind, Resource};
use crate::error::{Result, Violations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A site as `GET /v2/sites/{id}` returns it and as webhooks carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Site {
    pub uuid: Uuid,
    pub external_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub address: Option<Address>,
    pub contacts: Vec<Contact>,
    pub client: Option<RefOutput>,
    pub version: i64,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// The body of `POST /v2/sites` and `PATCH /v2/sites/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    /// Every site has one: `null` is refused, on PATCH too.
    #[schema(value_type = String, required = false, max_length = 300, pattern = r"\S")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 1000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Address>)]
    pub address: Option<Option<Address>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<Contact>>)]
    pub contacts: Option<Option<Vec<Contact>>>,
    /// `{"uuid"}` or `{"external_id"}` of an existing client, or null.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RefInput>)]
    pub client: Option<Option<RefInput>>,
    #[serde(default)]
    pub version: Option<i64>,
}

impl SiteInput {
    pub fn create(self, uuid: Uuid, now: DateTime<Utc>, client: Option<Option<RefOutput>>) -> Result<Site> {
        let blank = Site {
            uuid,
            external_id: None,
            name: String::new(),
            description: None,
            address: None,
            contacts: Vec::new(),
            client: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        self.apply(&blank, client)
    }

    /// Applies the request to `current`; `client` is the already resolved
    /// reference (the storage layer looks it up).
    pub fn apply(self, current: &Site, client: Option<Option<RefOutput>>) -> Result<Site> {
        let mut v = Violations::new();
        let mut s = current.clone();
        if let Some(x) = self.external_id {
            s.external_id = normalize(x);
        }
        if let Some(x) = self.name {
            s.name = normalize(x).unwrap_or_default();
        }
        if let Some(x) = self.description {
            s.description = normalize(x);
        }
        if let Some(x) = self.address {
            s.address = x;
        }
        if let Some(x) = self.contacts {
            s.contacts = x.unwrap_or_default();
        }
        if let Some(x) = client {
            s.client = x;
        }
        max_len(&mut v, "external_id", s.external_id.as_deref(), 500);
        if required(&mut v, "name", Some(&s.name)) {
            max_len(&mut v, "name", Some(&s.name), 300);
        }
        max_len(&mut v, "description", s.description.as_deref(), 1000);
        if let Some(a) = &s.address {
            a.validate("address", &mut v);
        }
        validate_contacts(&s.contacts, &mut v);
        v.into_result()?;
        Ok(s)
    }
}

impl Resource for Site {
    const KIND: EntityKind = EntityKind::Site;

    fn uuid(&self) -> Uuid {
        self.uuid
    }
    fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn stamp(&mut self, version: i64, now: DateTime<Utc>) {
        self.version = version;
        self.updated_at = now;
    }
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}
