//! Clients (api.md, "Clients"): a company or a person that orders work.

use super::common::{Address, Contact, max_len, normalize, nullable, ts, validate_contacts};
use super::{EntityKind, Resource};
use crate::error::{Result, Violations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A client as `GET /v2/clients/{id}` returns it and as webhooks carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Client {
    pub uuid: Uuid,
    pub external_id: Option<String>,
    /// Whether this is a company; fixed at creation.
    pub organization: bool,
    pub organization_name: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    /// Read-only: the organization name, or the person's names joined.
    pub name: String,
    pub site_address: Option<Address>,
    pub contacts: Vec<Contact>,
    pub version: i64,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// The body of `POST /v2/clients` and `PATCH /v2/clients/{id}`. Absent fields
/// keep their value on PATCH; `null` clears a nullable one.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub external_id: Option<Option<String>>,
    #[serde(default)]
    pub organization: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 5000)]
    pub organization_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 50)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 50)]
    pub middle_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 50)]
    pub last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Address>)]
    pub site_address: Option<Option<Address>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<Contact>>)]
    pub contacts: Option<Option<Vec<Contact>>>,
    /// PATCH only: the version the caller last saw (optimistic concurrency).
    #[serde(default)]
    pub version: Option<i64>,
}

impl ClientInput {
    /// Builds a new client from a create request.
    pub fn create(self, uuid: Uuid, now: DateTime<Utc>) -> Result<Client> {
        let blank = Client {
            uuid,
            external_id: None,
            organization: self.organization.unwrap_or(false),
            organization_name: None,
            first_name: None,
            middle_name: None,
            last_name: None,
            name: String::new(),
            site_address: None,
            contacts: Vec::new(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        self.apply(&blank)
    }

    /// Applies a PATCH to `current`, returning the new state (version and
    /// `updated_at` are the caller's business).
    pub fn apply(self, current: &Client) -> Result<Client> {
        let mut v = Violations::new();
        let mut c = current.clone();
        if let Some(org) = self.organization
            && org != current.organization
        {
            v.add("organization", "cannot change after creation");
        }
        if let Some(x) = self.external_id {
            c.external_id = normalize(x);
        }
        if let Some(x) = self.organization_name {
            c.organization_name = normalize(x);
        }
        if let Some(x) = self.first_name {
            c.first_name = normalize(x);
        }
        if let Some(x) = self.middle_name {
            c.middle_name = normalize(x);
        }
        if let Some(x) = self.last_name {
            c.last_name = normalize(x);
        }
        if let Some(x) = self.site_address {
            c.site_address = x;
        }
        if let Some(x) = self.contacts {
            c.contacts = x.unwrap_or_default();
        }

        max_len(&mut v, "external_id", c.external_id.as_deref(), 500);
        if c.organization {
            match &c.organization_name {
                None => v.add("organization_name", "is required for an organization"),
                Some(n) => max_len(&mut v, "organization_name", Some(n), 5000),
            }
        } else if c.first_name.is_none() && c.middle_name.is_none() && c.last_name.is_none() {
            v.add("first_name", "(or middle_name, or last_name) is required for a person");
        }
        for (field, value) in
            [("first_name", &c.first_name), ("middle_name", &c.middle_name), ("last_name", &c.last_name)]
        {
            max_len(&mut v, field, value.as_deref(), 50);
        }
        if let Some(a) = &c.site_address {
            a.validate("site_address", &mut v);
        }
        validate_contacts(&c.contacts, &mut v);
        v.into_result()?;

        c.name = if c.organization {
            c.organization_name.clone().unwrap_or_default()
        } else {
            [&c.first_name, &c.middle_name, &c.last_name]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        };
        Ok(c)
    }
}

impl Resource for Client {
    const KIND: EntityKind = EntityKind::Client;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> ClientInput {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_person_needs_a_name_and_gets_it_joined() {
        let now = Utc::now();
        let err = input(serde_json::json!({})).create(Uuid::nil(), now).unwrap_err();
        assert!(err.to_string().contains("first_name"));
        let c =
            input(serde_json::json!({"first_name": "Ada", "last_name": "Lovelace"})).create(Uuid::nil(), now).unwrap();
        assert_eq!(c.name, "Ada Lovelace");
    }

    #[test]
    fn organization_is_fixed_at_creation() {
        let now = Utc::now();
        let c = input(serde_json::json!({"organization": true, "organization_name": "Acme"}))
            .create(Uuid::nil(), now)
            .unwrap();
        assert_eq!(c.name, "Acme");
        let err = input(serde_json::json!({"organization": false})).apply(&c).unwrap_err();
        assert!(err.to_string().contains("organization"));
    }
}
