//! Assignee notifications (api.md, "Assignee notification"): which change
//! of a job tells its assignee, and what the notification says.

use super::common::ts;
use super::job::Job;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The job was given to this user (or their team).
    Assigned,
    /// The assigned job's time changed.
    Rescheduled,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Assigned => "assigned",
            NotificationKind::Rescheduled => "rescheduled",
        }
    }
}

/// One notification of one user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Notification {
    pub uuid: Uuid,
    pub job_uuid: Uuid,
    pub kind: NotificationKind,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

/// What, if anything, a write from `before` to `after` tells the assignee:
/// creating with an assignee or assigning it to someone new is `Assigned`;
/// moving the time of a job that stays with its assignee is `Rescheduled`.
pub fn notice(before: Option<&Job>, after: &Job) -> Option<NotificationKind> {
    after.assignee.as_ref()?;
    match before {
        None => Some(NotificationKind::Assigned),
        Some(b) if b.assignee != after.assignee => Some(NotificationKind::Assigned),
        Some(b) if b.scheduled_at != after.scheduled_at => Some(NotificationKind::Rescheduled),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::{Assignee, JobInput, ResolvedRefs, WorkerRef};

    #[test]
    fn assigning_and_rescheduling_notify_other_changes_do_not() {
        let now = Utc::now();
        let mut job = JobInput::default().create(Uuid::nil(), 1, now, ResolvedRefs::default()).unwrap();
        assert_eq!(notice(None, &job), None, "no assignee, nobody to tell");
        let before = job.clone();
        job.assignee = Some(Assignee::Worker(WorkerRef { uuid: Uuid::nil(), email: "w@x.io".into() }));
        assert_eq!(notice(Some(&before), &job), Some(NotificationKind::Assigned));
        let before = job.clone();
        job.scheduled_at = Some(now);
        assert_eq!(notice(Some(&before), &job), Some(NotificationKind::Rescheduled));
        let before = job.clone();
        job.description = Some("d".into());
        assert_eq!(notice(Some(&before), &job), None);
    }
}
