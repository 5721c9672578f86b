//! Value objects shared by several resources (Address, Contact, Reference) and
//! the helpers every input type uses: tri-state PATCH fields and timestamps.

use crate::error::Violations;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;
use uuid::Uuid;

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or
/// a value (`Some(Some(v))`): PATCH needs all three. Use with
/// `#[serde(default, deserialize_with = "nullable")]`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Applies a tri-state PATCH field to a nullable value.
pub fn apply<T>(target: &mut Option<T>, patch: Option<Option<T>>) {
    if let Some(v) = patch {
        *target = v;
    }
}

/// RFC 3339 in UTC with `+00:00`, as api.md "Conventions" fixes.
pub mod ts {
    use super::*;

    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("must be an RFC 3339 timestamp, got {s:?}"))
    }

    /// For `Option<DateTime<Utc>>` fields.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?.map(|s| parse(&s).map_err(serde::de::Error::custom)).transpose()
        }
    }

    /// For tri-state PATCH timestamps (`Option<Option<DateTime<Utc>>>`).
    pub fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<DateTime<Utc>>>, D::Error> {
        option::deserialize(d).map(Some)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Geolocation {
    pub latitude: f64,
    pub longitude: f64,
}

/// A postal address; every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[serde(default)]
    pub formatted: Option<String>,
    #[serde(default)]
    pub entrance_no: Option<String>,
    #[serde(default)]
    pub apartment: Option<String>,
    #[serde(default)]
    pub floor: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub geolocation: Option<Geolocation>,
}

impl Address {
    pub fn validate(&self, field: &str, v: &mut Violations) {
        max_len(v, &format!("{field}.formatted"), self.formatted.as_deref(), 1000);
        for (name, value) in [
            ("entrance_no", &self.entrance_no),
            ("apartment", &self.apartment),
            ("floor", &self.floor),
            ("description", &self.description),
        ] {
            max_len(v, &format!("{field}.{name}"), value.as_deref(), 1000);
        }
        if let Some(g) = &self.geolocation {
            if !(-90.0..=90.0).contains(&g.latitude) {
                v.add(format!("{field}.geolocation.latitude"), "must be between -90 and 90");
            }
            if !(-180.0..=180.0).contains(&g.longitude) {
                v.add(format!("{field}.geolocation.longitude"), "must be between -180 and 180");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContactType {
    Phone,
    Email,
}

/// A phone number or e-mail address of a person to contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(rename = "type")]
    pub kind: ContactType,
}

/// At most this many contacts per resource (api.md, "Shared value objects").
pub const MAX_CONTACTS: usize = 20;

pub fn validate_contacts(contacts: &[Contact], v: &mut Violations) {
    if contacts.len() > MAX_CONTACTS {
        v.add("contacts", format!("must have at most {MAX_CONTACTS} entries"));
    }
    for (i, c) in contacts.iter().enumerate() {
        let field = format!("contacts[{i}].value");
        match c.value.as_deref().map(str::trim) {
            None | Some("") => v.add(field, "is required"),
            Some(value) => {
                if value.chars().count() > 200 {
                    v.add(field, "must be at most 200 characters");
                } else if c.kind == ContactType::Email && !looks_like_email(value) {
                    v.add(field, "must be an e-mail address");
                }
            }
        }
        max_len(v, &format!("contacts[{i}].name"), c.name.as_deref(), 200);
    }
}

/// A pragmatic check: one `@`, something before it, a dotted domain after it,
/// no whitespace. Deliverability is the receiver's business.
pub fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

/// A reference to a client or site in a request: exactly one of the two ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefInput {
    #[serde(default)]
    pub uuid: Option<Uuid>,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// A reference to a client or site in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefOutput {
    pub uuid: Uuid,
    pub external_id: Option<String>,
}

/// Adds a violation when `value` is longer than `max` characters.
pub fn max_len(v: &mut Violations, field: &str, value: Option<&str>, max: usize) {
    if let Some(s) = value
        && s.chars().count() > max
    {
        v.add(field, format!("must be at most {max} characters"));
    }
}

/// Adds a violation when `value` is missing or blank.
pub fn required(v: &mut Violations, field: &str, value: Option<&str>) -> bool {
    match value {
        Some(s) if !s.trim().is_empty() => true,
        _ => {
            v.add(field, "is required");
            false
        }
    }
}

/// Blank strings are stored as absent, so `""` and `null` mean the same.
pub fn normalize(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}
