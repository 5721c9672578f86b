//! Catch-up: bringing the replica to the server's state through the history
//! API, for what deliveries alone cannot fix — a mirror that was down or
//! new (at start), and a missing version whose delivery is not coming soon
//! or not at all (a gap that outlasts the gap timeout).
//!
//! Why the result is exactly the server's state: every resource the server
//! has now is in its lists; every resource the replica has is in the
//! replica. For each of them catch-up reads the history after the stored
//! version and applies the CRUD events in version order through
//! [`Replica::apply`] — the same full-replication rule deliveries follow, so
//! a delivery applying the same version meanwhile simply makes catch-up's
//! copy a duplicate. A resource removed on the server ends in its
//! `*_removed` event, which deletes it from the replica. A resource created
//! and removed while the mirror was away is in neither set, and rightly
//! stays absent.

use crate::replica::{Change, ChangeError, Kind, Replica, Source};
use crate::server_api::{ApiError, PAGE_SIZE, ServerApi};
use crate::stats::Stats;
use fieldhook_receiver::{Decision, Event};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Why catch-up stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatchUpError {
    /// fieldhook's API could not be read.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The replica could not be written.
    #[error("the replica failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The history of a resource is not what api.md promises.
    #[error("the history of {kind} {uuid} is unusable: {reason}")]
    History {
        /// The resource's kind.
        kind: Kind,
        /// The resource.
        uuid: Uuid,
        /// What was wrong.
        reason: String,
    },
}

/// What a catch-up of the whole account did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUpReport {
    /// Resources whose history was read.
    pub resources_read: usize,
    /// Versions applied from history.
    pub applied: usize,
}

/// Reads the history API into the replica (see the [module documentation](self)).
#[derive(Debug, Clone)]
pub struct CatchUp {
    replica: Replica,
    api: Arc<ServerApi>,
    stats: Arc<Stats>,
}

impl CatchUp {
    /// Catch-up of `replica` from `api`, counting into `stats`.
    pub fn new(replica: Replica, api: Arc<ServerApi>, stats: Arc<Stats>) -> CatchUp {
        CatchUp { replica, api, stats }
    }

    /// Brings every resource of every kind to the server's current state.
    ///
    /// # Errors
    ///
    /// The first failure; what was applied before it stays applied (each
    /// version is its own transaction), so running it again continues.
    pub async fn all(&self) -> Result<CatchUpReport, CatchUpError> {
        let mut report = CatchUpReport::default();
        for kind in Kind::ALL {
            // The version each resource has on the server, for those it
            // still has; `None` for those only the replica knows (removed
            // since, or never live when the lists were read).
            let mut targets: BTreeMap<Uuid, Option<i64>> =
                self.replica.live_uuids(kind).await?.into_iter().map(|u| (u, None)).collect();
            let mut after = None;
            loop {
                let page = self.api.list_page(kind, after).await?;
                let Some(last) = page.last() else { break };
                after = Some(item_uuid(kind, last)?);
                for item in &page {
                    targets.insert(item_uuid(kind, item)?, item.get("version").and_then(Value::as_i64));
                }
            }
            for (uuid, server_version) in targets {
                let stored = self.replica.version(kind, uuid).await?;
                if server_version.is_some() && stored >= server_version {
                    // Up to date already: spare the history call.
                    continue;
                }
                report.resources_read += 1;
                report.applied += self.entity(kind, uuid).await?;
            }
        }
        self.stats.full_catch_up();
        Ok(report)
    }

    /// Applies the history of one resource after the version the replica
    /// has. Returns how many versions it applied.
    ///
    /// # Errors
    ///
    /// As [`all`](Self::all).
    pub async fn entity(&self, kind: Kind, uuid: Uuid) -> Result<usize, CatchUpError> {
        let history_error = |reason: String| CatchUpError::History { kind, uuid, reason };
        let mut after = self.replica.version(kind, uuid).await?.unwrap_or(0);
        let mut applied = 0;
        loop {
            // 404: the server never had it for this account (a stray uuid);
            // there is nothing to replicate.
            let Some(page) = self.api.history_page(kind, uuid, after).await? else { return Ok(applied) };
            let full_page = page.len() >= PAGE_SIZE;
            for entry in page {
                let version = entry
                    .get("version")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| history_error("an entry without a version".into()))?;
                after = after.max(version);
                let event: Event = serde_json::from_value(entry.clone())
                    .map_err(|e| history_error(format!("an entry that is not an event: {e}")))?;
                // Status events share the version of their CRUD event; the
                // CRUD one carries the change.
                let Some(change) =
                    Change::from_event(&event, &entry).map_err(|e: ChangeError| history_error(e.to_string()))?
                else {
                    continue;
                };
                if change.uuid != uuid || change.kind != kind {
                    return Err(history_error(format!("an entry about {} {}", change.kind, change.uuid)));
                }
                match self.replica.apply(&change, Source::History).await? {
                    Decision::Apply => applied += 1,
                    // A delivery applied it first.
                    Decision::Ignore => {}
                    Decision::Gap => {
                        return Err(history_error(format!("version {version} came before its predecessor")));
                    }
                }
            }
            // A short page is the end: there was nothing after it when it
            // was read, and anything newer comes as a delivery.
            if !full_page {
                break;
            }
        }
        self.stats.caught_up(applied as u64);
        if applied > 0 {
            tracing::info!(%kind, %uuid, applied, "caught up from history");
        }
        Ok(applied)
    }
}

fn item_uuid(kind: Kind, item: &Value) -> Result<Uuid, CatchUpError> {
    item.get("uuid").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok()).ok_or_else(|| {
        CatchUpError::Api(ApiError::Shape { path: format!("/v2/{}", kind.plural()), key: "uuid".into() })
    })
}

/// Resources waiting for a missing version, and since when: the mirror
/// answers 422 and lets fieldhook retry, but a gap older than the gap
/// timeout is filled from history instead.
#[derive(Debug, Default)]
pub struct Gaps {
    open: Mutex<HashMap<(Kind, Uuid), Instant>>,
}

impl Gaps {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(Kind, Uuid), Instant>> {
        // Single inserts and removes: a panic elsewhere leaves it consistent.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A delivery found a version missing (keeps the first time it did).
    pub fn opened(&self, kind: Kind, uuid: Uuid) {
        self.map().entry((kind, uuid)).or_insert_with(Instant::now);
    }

    /// A delivery applied a version: the resource moves again, so its
    /// clock restarts should it stall once more.
    pub fn progressed(&self, kind: Kind, uuid: Uuid) {
        self.map().remove(&(kind, uuid));
    }

    /// Takes out the gaps open for at least `timeout`.
    pub fn take_overdue(&self, timeout: Duration) -> Vec<(Kind, Uuid)> {
        let mut map = self.map();
        let overdue: Vec<_> = map.iter().filter(|(_, since)| since.elapsed() >= timeout).map(|(k, _)| *k).collect();
        for key in &overdue {
            map.remove(key);
        }
        overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gaps_older_than_the_timeout_are_taken_and_progress_resets_them() {
        let gaps = Gaps::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        gaps.opened(Kind::Job, a);
        gaps.opened(Kind::Site, b);
        gaps.progressed(Kind::Site, b);
        assert!(gaps.take_overdue(Duration::from_secs(3600)).is_empty(), "too young");
        assert_eq!(gaps.take_overdue(Duration::ZERO), vec![(Kind::Job, a)]);
        assert!(gaps.take_overdue(Duration::ZERO).is_empty(), "taken once");
    }
}
