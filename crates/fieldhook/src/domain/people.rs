//! Users (technicians, dispatchers), teams and job types (api.md, "Users and
//! teams"): the assignees and categories of jobs. They carry no versions and
//! emit no events.

use super::common::{looks_like_email, max_len, normalize, nullable, required, ts};
use crate::error::{Result, Violations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Worker,
    Dispatcher,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub uuid: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /v2/users` and `PATCH /v2/users/{uuid}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// An e-mail address (`looks_like_email`), unique in the account.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^@\s\u0085]+@[^@\s\u0085.][^@\s\u0085]*\.[^@\s\u0085]*[^@\s\u0085.]$")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 50)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 50)]
    pub last_name: Option<Option<String>>,
    #[serde(default)]
    pub role: Option<Role>,
}

impl UserInput {
    pub fn create(self, uuid: Uuid, now: DateTime<Utc>) -> Result<User> {
        let blank =
            User { uuid, email: String::new(), first_name: None, last_name: None, role: Role::Worker, created_at: now };
        self.apply(&blank)
    }

    pub fn apply(self, current: &User) -> Result<User> {
        let mut v = Violations::new();
        let mut u = current.clone();
        if let Some(e) = self.email {
            u.email = e.trim().to_lowercase();
        }
        if let Some(x) = self.first_name {
            u.first_name = normalize(x);
        }
        if let Some(x) = self.last_name {
            u.last_name = normalize(x);
        }
        if let Some(r) = self.role {
            u.role = r;
        }
        if required(&mut v, "email", Some(&u.email)) {
            if u.email.chars().count() > 200 {
                v.add("email", "must be at most 200 characters");
            } else if !looks_like_email(&u.email) {
                v.add("email", "must be an e-mail address");
            }
        }
        max_len(&mut v, "first_name", u.first_name.as_deref(), 50);
        max_len(&mut v, "last_name", u.last_name.as_deref(), 50);
        v.into_result()?;
        Ok(u)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub uuid: Uuid,
    pub name: String,
    pub worker_uuids: Vec<Uuid>,
}

/// The body of `POST /v2/teams` and `PATCH /v2/teams/{uuid}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamInput {
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// Users of this account; the storage layer checks that they exist.
    #[serde(default)]
    pub worker_uuids: Option<Vec<Uuid>>,
}

impl TeamInput {
    pub fn create(self, uuid: Uuid) -> Result<Team> {
        self.apply(&Team { uuid, name: String::new(), worker_uuids: Vec::new() })
    }

    pub fn apply(self, current: &Team) -> Result<Team> {
        let mut v = Violations::new();
        let mut t = current.clone();
        if let Some(n) = self.name {
            t.name = n.trim().to_string();
        }
        if let Some(w) = self.worker_uuids {
            let mut seen = std::collections::HashSet::new();
            t.worker_uuids = w.into_iter().filter(|u| seen.insert(*u)).collect();
        }
        if required(&mut v, "name", Some(&t.name)) {
            max_len(&mut v, "name", Some(&t.name), 200);
        }
        if t.worker_uuids.len() > 1000 {
            v.add("worker_uuids", "must have at most 1000 entries");
        }
        v.into_result()?;
        Ok(t)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobType {
    pub uuid: Uuid,
    pub code: String,
    pub name: Option<String>,
}

/// The body of `POST /v2/job_types`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTypeInput {
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"\S")]
    pub code: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub name: Option<String>,
}

impl JobTypeInput {
    pub fn create(self, uuid: Uuid) -> Result<JobType> {
        let mut v = Violations::new();
        let code = self.code.map(|c| c.trim().to_string()).unwrap_or_default();
        if required(&mut v, "code", Some(&code)) {
            max_len(&mut v, "code", Some(&code), 100);
        }
        let name = normalize(self.name);
        max_len(&mut v, "name", name.as_deref(), 200);
        v.into_result()?;
        Ok(JobType { uuid, code, name })
    }
}
