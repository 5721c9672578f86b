//! Jobs (api.md, "Jobs" and "Lifecycle"): a visit of a technician to do work.
//! The lifecycle table below is the one place that says which action moves a
//! job from which status to which, with which event and timestamp.

use super::common::{Address, Contact, RefInput, RefOutput, max_len, normalize, nullable, ts, validate_contacts};
use super::event::EventType;
use super::{EntityKind, Resource};
use crate::error::{Error, Result, Violations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created; lacks a scheduled time or an assignee.
    Posted,
    /// Has both `scheduled_at` and an assignee.
    Scheduled,
    Published,
    EnRoute,
    Started,
    Suspended,
    Finished,
    Canceled,
}

impl Status {
    pub const ALL: &'static [Status] = &[
        Status::Posted,
        Status::Scheduled,
        Status::Published,
        Status::EnRoute,
        Status::Started,
        Status::Suspended,
        Status::Finished,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Posted => "posted",
            Status::Scheduled => "scheduled",
            Status::Published => "published",
            Status::EnRoute => "en_route",
            Status::Started => "started",
            Status::Suspended => "suspended",
            Status::Finished => "finished",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.iter().copied().find(|st| st.as_str() == s)
    }

    /// Whether a user assigned to a job in this status is still busy with it.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Finished | Status::Canceled)
    }
}

/// The actions of `POST /v2/jobs/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Publish,
    EnRoute,
    Start,
    Suspend,
    Resume,
    Finish,
    Cancel,
}

/// Which timestamp of `timestamps` an action sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    EnRouteAt,
    StartedAt,
    SuspendedAt,
    FinishedAt,
    CanceledAt,
}

/// One row of the lifecycle table.
#[derive(Debug)]
pub struct Transition {
    pub action: Action,
    pub from: &'static [Status],
    pub to: Status,
    pub event: EventType,
    pub stamp: Option<Stamp>,
}

use Status::*;

/// api.md "Lifecycle", row for row.
pub const LIFECYCLE: &[Transition] = &[
    Transition {
        action: Action::Publish,
        from: &[Scheduled],
        to: Published,
        event: EventType::JobPublished,
        stamp: None,
    },
    Transition {
        action: Action::EnRoute,
        from: &[Published],
        to: EnRoute,
        event: EventType::JobEnRoute,
        stamp: Some(Stamp::EnRouteAt),
    },
    Transition {
        action: Action::Start,
        from: &[Published, EnRoute],
        to: Started,
        event: EventType::JobStarted,
        stamp: Some(Stamp::StartedAt),
    },
    Transition {
        action: Action::Suspend,
        from: &[Started],
        to: Suspended,
        event: EventType::JobSuspended,
        stamp: Some(Stamp::SuspendedAt),
    },
    Transition { action: Action::Resume, from: &[Suspended], to: Started, event: EventType::JobResumed, stamp: None },
    Transition {
        action: Action::Finish,
        from: &[Started, Suspended],
        to: Finished,
        event: EventType::JobFinished,
        stamp: Some(Stamp::FinishedAt),
    },
    Transition {
        action: Action::Cancel,
        from: &[Posted, Scheduled, Published, EnRoute, Started, Suspended],
        to: Canceled,
        event: EventType::JobCanceled,
        stamp: Some(Stamp::CanceledAt),
    },
];

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    pub fn transition(self) -> &'static Transition {
        LIFECYCLE.iter().find(|t| t.action == self).expect("every action has a row")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobTypeRef {
    pub uuid: Uuid,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerRef {
    pub uuid: Uuid,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TeamRef {
    pub uuid: Uuid,
    pub name: String,
}

/// Who does the job: `{"worker": {...}}` or `{"team": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Assignee {
    Worker(WorkerRef),
    Team(TeamRef),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduledDuration {
    pub minutes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Timestamps {
    #[serde(with = "ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub en_route_at: Option<DateTime<Utc>>,
    #[serde(with = "ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub suspended_at: Option<DateTime<Utc>>,
    #[serde(with = "ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(with = "ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub canceled_at: Option<DateTime<Utc>>,
}

impl Timestamps {
    pub fn set(&mut self, stamp: Stamp, at: DateTime<Utc>) {
        let slot = match stamp {
            Stamp::EnRouteAt => &mut self.en_route_at,
            Stamp::StartedAt => &mut self.started_at,
            Stamp::SuspendedAt => &mut self.suspended_at,
            Stamp::FinishedAt => &mut self.finished_at,
            Stamp::CanceledAt => &mut self.canceled_at,
        };
        *slot = Some(at);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    pub successful: bool,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportField {
    #[schema(max_length = 200, pattern = r"\S")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub value: Option<String>,
}

/// A job as `GET /v2/jobs/{id}` returns it and as webhooks carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub uuid: Uuid,
    pub serial_no: i64,
    pub external_id: Option<String>,
    pub external_order_id: Option<String>,
    pub status: Status,
    #[serde(rename = "type")]
    pub job_type: Option<JobTypeRef>,
    pub description: Option<String>,
    #[serde(with = "ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<DateTime<Utc>>,
    pub scheduled_duration: Option<ScheduledDuration>,
    pub assignee: Option<Assignee>,
    pub client: Option<RefOutput>,
    pub site: Option<RefOutput>,
    pub address: Option<Address>,
    pub contacts: Vec<Contact>,
    pub timestamps: Timestamps,
    pub resolution: Option<Resolution>,
    pub report_fields: Vec<ReportField>,
    pub version: i64,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// `job_type` in a request: `{"code"}` or `{"uuid"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTypeInputRef {
    #[serde(default)]
    pub uuid: Option<Uuid>,
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UuidRef {
    pub uuid: Uuid,
}

/// `assignee` in a request: `{"worker": {"uuid"}}` or `{"team": {"uuid"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AssigneeInput {
    Worker(UuidRef),
    Team(UuidRef),
}

/// The body of `POST /v2/jobs` and `PATCH /v2/jobs/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub external_order_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<JobTypeInputRef>)]
    pub job_type: Option<Option<JobTypeInputRef>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "ts::nullable")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<Option<DateTime<Utc>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ScheduledDuration>)]
    pub scheduled_duration: Option<Option<ScheduledDuration>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<AssigneeInput>)]
    pub assignee: Option<Option<AssigneeInput>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RefInput>)]
    pub client: Option<Option<RefInput>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RefInput>)]
    pub site: Option<Option<RefInput>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Address>)]
    pub address: Option<Option<Address>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<Contact>>)]
    pub contacts: Option<Option<Vec<Contact>>>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// References of a [`JobInput`], resolved against the database by the
/// storage layer. `None` = not in the request; `Some(None)` = cleared.
#[derive(Debug, Clone, Default)]
pub struct ResolvedRefs {
    pub job_type: Option<Option<JobTypeRef>>,
    pub assignee: Option<Option<Assignee>>,
    pub client: Option<Option<RefOutput>>,
    /// The site with its address, copied to the job when it has none.
    pub site: Option<Option<(RefOutput, Option<Address>)>>,
}

impl JobInput {
    pub fn create(self, uuid: Uuid, serial_no: i64, now: DateTime<Utc>, refs: ResolvedRefs) -> Result<Job> {
        let blank = Job {
            uuid,
            serial_no,
            external_id: None,
            external_order_id: None,
            status: Status::Posted,
            job_type: None,
            description: None,
            scheduled_at: None,
            scheduled_duration: None,
            assignee: None,
            client: None,
            site: None,
            address: None,
            contacts: Vec::new(),
            timestamps: Timestamps::default(),
            resolution: None,
            report_fields: Vec::new(),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        self.apply(&blank, refs)
    }

    /// Applies the request to `current` and recomputes `posted`/`scheduled`.
    pub fn apply(self, current: &Job, refs: ResolvedRefs) -> Result<Job> {
        let mut v = Violations::new();
        let mut j = current.clone();
        let address_given = matches!(self.address, Some(Some(_)));
        if let Some(x) = self.external_id {
            j.external_id = normalize(x);
        }
        if let Some(x) = self.external_order_id {
            j.external_order_id = normalize(x);
        }
        if let Some(x) = self.description {
            j.description = normalize(x);
        }
        if let Some(x) = self.scheduled_at {
            j.scheduled_at = x;
        }
        if let Some(x) = self.scheduled_duration {
            j.scheduled_duration = x;
        }
        if let Some(x) = self.address {
            j.address = x;
        }
        if let Some(x) = self.contacts {
            j.contacts = x.unwrap_or_default();
        }
        if let Some(x) = refs.job_type {
            j.job_type = x;
        }
        if let Some(x) = refs.client {
            j.client = x;
        }
        if let Some(x) = refs.site {
            match x {
                Some((site, site_address)) => {
                    if !address_given && j.address.is_none() {
                        j.address = site_address;
                    }
                    j.site = Some(site);
                }
                None => j.site = None,
            }
        }
        if let Some(x) = refs.assignee
            && x != j.assignee
        {
            if j.timestamps.started_at.is_some() {
                v.add("assignee", "cannot change after the job has started");
            }
            j.assignee = x;
        }

        max_len(&mut v, "external_id", j.external_id.as_deref(), 500);
        max_len(&mut v, "external_order_id", j.external_order_id.as_deref(), 500);
        max_len(&mut v, "description", j.description.as_deref(), 15000);
        if let Some(d) = j.scheduled_duration
            && !(1..=100_000).contains(&d.minutes)
        {
            v.add("scheduled_duration.minutes", "must be between 1 and 100000");
        }
        if let Some(a) = &j.address {
            a.validate("address", &mut v);
        }
        validate_contacts(&j.contacts, &mut v);
        v.into_result()?;

        if matches!(j.status, Status::Posted | Status::Scheduled) {
            j.status =
                if j.scheduled_at.is_some() && j.assignee.is_some() { Status::Scheduled } else { Status::Posted };
        }
        Ok(j)
    }
}

/// The optional body of `POST /v2/jobs/{id}/{action}`: when and where it
/// happened on the technician's device, and for `finish` the outcome.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionInput {
    /// When it happened on the device (a phone that syncs late says so).
    #[serde(default, deserialize_with = "ts::option::deserialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub happened_at: Option<DateTime<Utc>>,
    /// The technician's device; makes the event's `source` `mobile`.
    #[serde(default)]
    pub device_uuid: Option<Uuid>,
    /// The user on whose behalf the action was done.
    #[serde(default)]
    pub user_uuid: Option<Uuid>,
    /// `finish` only, and required there.
    #[serde(default)]
    pub resolution: Option<Resolution>,
    /// `finish` only: the technician's report.
    #[serde(default)]
    pub report_fields: Option<Vec<ReportField>>,
}

/// The body of `PUT /v2/jobs/{id}/report`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportInput {
    /// At most [`MAX_REPORT_FIELDS`] (the attribute needs the literal).
    #[schema(max_items = 200)]
    pub report_fields: Vec<ReportField>,
}

/// At most this many report fields per job.
pub const MAX_REPORT_FIELDS: usize = 200;

fn validate_report(fields: &[ReportField], v: &mut Violations) {
    if fields.len() > MAX_REPORT_FIELDS {
        v.add("report_fields", format!("must have at most {MAX_REPORT_FIELDS} entries"));
    }
    for (i, f) in fields.iter().enumerate() {
        if f.name.trim().is_empty() {
            v.add(format!("report_fields[{i}].name"), "is required");
        }
        max_len(v, &format!("report_fields[{i}].name"), Some(&f.name), 200);
        max_len(v, &format!("report_fields[{i}].value"), f.value.as_deref(), 10_000);
    }
}

impl Job {
    /// Performs a lifecycle action at `at`: checks the transition, the
    /// finish details, sets status and timestamp. Returns the events that
    /// accompany `job_updated`.
    pub fn perform(&mut self, action: Action, input: &ActionInput, at: DateTime<Utc>) -> Result<Vec<EventType>> {
        let mut v = Violations::new();
        if action == Action::Finish {
            match &input.resolution {
                None => v.add("resolution", "is required to finish a job"),
                Some(r) => max_len(&mut v, "resolution.comment", r.comment.as_deref(), 10_000),
            }
            if let Some(fields) = &input.report_fields {
                validate_report(fields, &mut v);
            }
        } else {
            if input.resolution.is_some() {
                v.add("resolution", "is only accepted by finish");
            }
            if input.report_fields.is_some() {
                v.add("report_fields", "is only accepted by finish");
            }
        }
        v.into_result()?;
        let transition = self.act(action, at)?;
        let mut events = vec![transition.event];
        if action == Action::Finish {
            self.resolution = input.resolution.clone();
            if let Some(fields) = &input.report_fields {
                self.report_fields = fields.clone();
                events.push(EventType::JobReportReady);
            }
        }
        Ok(events)
    }

    /// Replaces the report of a finished job.
    pub fn set_report(&mut self, fields: Vec<ReportField>) -> Result<Vec<EventType>> {
        if self.status != Status::Finished {
            return Err(Error::InvalidTransition(format!(
                "a report can only be set on a finished job; this one is {}",
                self.status.as_str()
            )));
        }
        let mut v = Violations::new();
        validate_report(&fields, &mut v);
        v.into_result()?;
        self.report_fields = fields;
        Ok(vec![EventType::JobReportReady])
    }

    /// Applies a lifecycle action, or says why it is not allowed.
    pub fn act(&mut self, action: Action, at: DateTime<Utc>) -> Result<&'static Transition> {
        let t = action.transition();
        if !t.from.contains(&self.status) {
            return Err(Error::InvalidTransition(format!(
                "cannot {} a job that is {}",
                serde_json::to_value(action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                self.status.as_str()
            )));
        }
        self.status = t.to;
        if let Some(stamp) = t.stamp {
            self.timestamps.set(stamp, at);
        }
        Ok(t)
    }

    /// The worker uuid and team uuid of the assignee, for indexing.
    pub fn assignee_ids(&self) -> (Option<Uuid>, Option<Uuid>) {
        match &self.assignee {
            Some(Assignee::Worker(w)) => (Some(w.uuid), None),
            Some(Assignee::Team(t)) => (None, Some(t.uuid)),
            None => (None, None),
        }
    }
}

impl Resource for Job {
    const KIND: EntityKind = EntityKind::Job;

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

    fn worker() -> Assignee {
        Assignee::Worker(WorkerRef { uuid: Uuid::nil(), email: "w@x.io".into() })
    }

    #[test]
    fn a_job_with_time_and_assignee_is_scheduled() {
        let now = Utc::now();
        let input = JobInput { scheduled_at: Some(Some(now)), ..Default::default() };
        let refs = ResolvedRefs { assignee: Some(Some(worker())), ..Default::default() };
        let j = input.create(Uuid::nil(), 1, now, refs).unwrap();
        assert_eq!(j.status, Status::Scheduled);
        let j2 =
            JobInput { scheduled_at: Some(None), ..Default::default() }.apply(&j, ResolvedRefs::default()).unwrap();
        assert_eq!(j2.status, Status::Posted);
    }

    #[test]
    fn duration_out_of_range_names_the_field() {
        let now = Utc::now();
        let input = JobInput { scheduled_duration: Some(Some(ScheduledDuration { minutes: 0 })), ..Default::default() };
        let err = input.create(Uuid::nil(), 1, now, ResolvedRefs::default()).unwrap_err();
        assert_eq!(err.to_string(), "scheduled_duration.minutes must be between 1 and 100000");
    }

    #[test]
    fn finish_needs_a_resolution_and_other_actions_refuse_one() {
        let now = Utc::now();
        let mut j = JobInput::default().create(Uuid::nil(), 1, now, ResolvedRefs::default()).unwrap();
        j.status = Status::Started;
        let err = j.perform(Action::Finish, &ActionInput::default(), now).unwrap_err();
        assert!(err.to_string().contains("resolution"));
        assert_eq!(j.status, Status::Started, "a refused action changes nothing");
        let with = ActionInput {
            resolution: Some(Resolution { successful: true, comment: None }),
            report_fields: Some(vec![ReportField { name: "meter".into(), value: Some("42".into()) }]),
            ..Default::default()
        };
        let events = j.perform(Action::Finish, &with, now).unwrap();
        assert_eq!(events, vec![EventType::JobFinished, EventType::JobReportReady]);
        assert_eq!(j.timestamps.finished_at, Some(now));
        let mut k = JobInput::default().create(Uuid::nil(), 2, now, ResolvedRefs::default()).unwrap();
        assert!(k.perform(Action::Cancel, &with, now).is_err());
    }

    #[test]
    fn every_action_has_exactly_one_row() {
        for a in [
            Action::Publish,
            Action::EnRoute,
            Action::Start,
            Action::Suspend,
            Action::Resume,
            Action::Finish,
            Action::Cancel,
        ] {
            assert_eq!(LIFECYCLE.iter().filter(|t| t.action == a).count(), 1);
        }
        assert_eq!(Action::parse("en_route"), Some(Action::EnRoute));
    }
}
