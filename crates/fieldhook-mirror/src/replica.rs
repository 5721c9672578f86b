//! The replica: one SQLite table per resource kind (`jobs`, `clients`,
//! `sites`) holding each live resource's latest snapshot exactly as
//! fieldhook sent it, beside the receiver SDK's version table, and a change
//! log with one row per applied version (`UNIQUE` per resource and version:
//! the database itself refuses to apply a version twice).
//!
//! Every write goes through [`Replica::apply`], which is the one place where
//! the full-replication rule is enforced: the SDK's
//! [`SqliteVersionStore::begin`] decides inside a `BEGIN IMMEDIATE`
//! transaction, the snapshot is written in that same transaction, and the
//! version is recorded on commit. Webhook deliveries and catch-up from the
//! history API both come through here, so they can run at the same time
//! without either overwriting the other's newer write.

use fieldhook_receiver::sqlite::SqliteVersionStore;
use fieldhook_receiver::{Decision, EntityKey, EntityVersion, Event, Strategy, VersionStore};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// The kinds of resource the mirror replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `job`
    Job,
    /// `client`
    Client,
    /// `site`
    Site,
}

impl Kind {
    /// Every replicated kind.
    pub const ALL: [Kind; 3] = [Kind::Client, Kind::Site, Kind::Job];

    /// `job`, `client` or `site`: the `entity_type` of fieldhook's request
    /// log and of the SDK's version table, and the key of the snapshot in an
    /// event body.
    pub fn entity_type(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Client => "client",
            Kind::Site => "site",
        }
    }

    /// `jobs`, `clients` or `sites`: the API's path segment, the list's key
    /// and the replica's table.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Client => "clients",
            Kind::Site => "sites",
        }
    }

    /// The kind of an `entity_type`, if the mirror replicates it.
    pub fn from_entity_type(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.entity_type() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.entity_type())
    }
}

/// One version of one resource, ready to be applied: what a CRUD event
/// says, whether it came in a delivery or from the history API.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Which kind of resource.
    pub kind: Kind,
    /// Which resource.
    pub uuid: Uuid,
    /// The version the event brings it to.
    pub version: i64,
    /// The event that carried it, kept beside the snapshot for tracing a
    /// row back to its delivery or history entry.
    pub event_uuid: Uuid,
    /// A `*_removed` event: the resource is gone at this version.
    pub removed: bool,
    /// The full snapshot as fieldhook sent it (unknown fields included:
    /// the mirror stores what the server said, not what this SDK knows).
    pub snapshot: Value,
}

/// Why an event could not become a [`Change`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The raw body has no snapshot under the resource's key, although its
    /// typed form had one.
    #[error("the {0} event has no {0} snapshot")]
    MissingSnapshot(Kind),
}

impl Change {
    /// The change a parsed `event` (whose raw JSON is `body`) makes, or
    /// `None` when it changes nothing the mirror keeps: `webhook_test`,
    /// unknown event types, and status events (`job_started` …), which
    /// share the version of their `job_updated` and would otherwise look
    /// like duplicates or gaps.
    ///
    /// # Errors
    ///
    /// [`ChangeError::MissingSnapshot`] when `body` is not the JSON `event`
    /// was parsed from.
    pub fn from_event(event: &Event, body: &Value) -> Result<Option<Change>, ChangeError> {
        let Some(event_type) = event.known_type().filter(|t| t.is_crud()) else { return Ok(None) };
        let Some(entity) = event.entity() else { return Ok(None) };
        let Some(kind) = Kind::from_entity_type(&entity.key.entity_type) else { return Ok(None) };
        let snapshot =
            body.get(kind.entity_type()).filter(|s| s.is_object()).ok_or(ChangeError::MissingSnapshot(kind))?;
        Ok(Some(Change {
            kind,
            uuid: entity.key.entity_uuid,
            version: entity.version,
            event_uuid: event.event_uuid(),
            removed: event_type.name().ends_with("_removed"),
            snapshot: snapshot.clone(),
        }))
    }

    fn entity(&self) -> EntityVersion {
        EntityVersion { key: EntityKey::new(self.kind.entity_type(), self.uuid), version: self.version }
    }
}

/// Where an applied version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A webhook delivery.
    Delivery,
    /// The history API, during catch-up.
    History,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Delivery => "delivery",
            Source::History => "history",
        }
    }

    fn parse(s: &str) -> Option<Source> {
        [Source::Delivery, Source::History].into_iter().find(|x| x.as_str() == s)
    }
}

/// One row of the change log: a version applied to a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// The version applied.
    pub version: i64,
    /// The event that carried it.
    pub event_uuid: Uuid,
    /// Whether it was the removal.
    pub removed: bool,
    /// How it reached the mirror.
    pub source: Source,
}

/// A resource as the replica holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Its version (also the snapshot's `version`).
    pub version: i64,
    /// The snapshot at that version.
    pub snapshot: Value,
    /// The event the snapshot came from.
    pub event_uuid: Uuid,
}

/// The local replica (see the [module documentation](self)). Clones share
/// one connection pool.
#[derive(Debug, Clone)]
pub struct Replica {
    store: SqliteVersionStore,
}

impl Replica {
    /// Opens (creating if needed) the SQLite file at `path`.
    ///
    /// # Errors
    ///
    /// The database error when the file cannot be opened or the tables
    /// created.
    pub async fn open(path: &Path) -> Result<Replica, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL lets the readers (catch-up's version look-ups, tests) run
            // beside the one writer.
            .journal_mode(SqliteJournalMode::Wal)
            // Every apply is a short write transaction; under a burst of
            // deliveries they queue for SQLite's lock rather than fail.
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        for kind in Kind::ALL {
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    uuid TEXT PRIMARY KEY,
                    version INTEGER NOT NULL,
                    snapshot TEXT NOT NULL,
                    event_uuid TEXT NOT NULL
                ) WITHOUT ROWID",
                kind.plural()
            ))
            .execute(&pool)
            .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS change_log (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                entity_type TEXT NOT NULL,
                uuid TEXT NOT NULL,
                version INTEGER NOT NULL,
                event_uuid TEXT NOT NULL,
                removed INTEGER NOT NULL,
                source TEXT NOT NULL,
                UNIQUE (entity_type, uuid, version)
            )",
        )
        .execute(&pool)
        .await?;
        Ok(Replica { store: SqliteVersionStore::new(pool).await? })
    }

    /// Applies `change` if it is the next version of its resource (version 1
    /// when nothing is stored), in one transaction with the recording of its
    /// version. A removal deletes the row; its version stays recorded (a
    /// tombstone), so a late retry of an older update is seen as old.
    ///
    /// Returns the decision: [`Decision::Apply`] (written, and logged with
    /// its `source`), [`Decision::Ignore`] (a duplicate or older version) or
    /// [`Decision::Gap`] (a version is missing in between; nothing written).
    ///
    /// # Errors
    ///
    /// The database error; nothing was written.
    pub async fn apply(&self, change: &Change, source: Source) -> Result<Decision, sqlx::Error> {
        let mut tx = self.store.begin(Strategy::FullReplication, &change.entity()).await?;
        if tx.decision() == Decision::Apply {
            sqlx::query(
                "INSERT INTO change_log (entity_type, uuid, version, event_uuid, removed, source)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(change.kind.entity_type())
            .bind(change.uuid.to_string())
            .bind(change.version)
            .bind(change.event_uuid.to_string())
            .bind(change.removed)
            .bind(source.as_str())
            .execute(tx.connection())
            .await?;
            let table = change.kind.plural();
            if change.removed {
                sqlx::query(&format!("DELETE FROM {table} WHERE uuid = ?"))
                    .bind(change.uuid.to_string())
                    .execute(tx.connection())
                    .await?;
            } else {
                sqlx::query(&format!(
                    "INSERT INTO {table} (uuid, version, snapshot, event_uuid) VALUES (?, ?, ?, ?)
                     ON CONFLICT (uuid) DO UPDATE SET
                        version = excluded.version, snapshot = excluded.snapshot, event_uuid = excluded.event_uuid"
                ))
                .bind(change.uuid.to_string())
                .bind(change.version)
                .bind(change.snapshot.to_string())
                .bind(change.event_uuid.to_string())
                .execute(tx.connection())
                .await?;
            }
        }
        tx.commit().await
    }

    /// The last version applied to a resource, removal included; `None`
    /// when the mirror never had it.
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn version(&self, kind: Kind, uuid: Uuid) -> Result<Option<i64>, sqlx::Error> {
        self.store.get(&EntityKey::new(kind.entity_type(), uuid)).await
    }

    /// One live resource.
    ///
    /// # Errors
    ///
    /// The database error, or a stored row that is not what
    /// [`apply`](Self::apply) writes.
    pub async fn get(&self, kind: Kind, uuid: Uuid) -> Result<Option<Stored>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT version, snapshot, event_uuid FROM {} WHERE uuid = ?", kind.plural()))
            .bind(uuid.to_string())
            .fetch_optional(self.store.pool())
            .await?;
        row.map(|r| stored(&r)).transpose()
    }

    /// Every live resource of a kind.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn all(&self, kind: Kind) -> Result<BTreeMap<Uuid, Stored>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT uuid, version, snapshot, event_uuid FROM {}", kind.plural()))
            .fetch_all(self.store.pool())
            .await?;
        rows.iter().map(|r| Ok((uuid_col(r, "uuid")?, stored(r)?))).collect()
    }

    /// The uuids of every live resource of a kind.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn live_uuids(&self, kind: Kind) -> Result<Vec<Uuid>, sqlx::Error> {
        let rows = sqlx::query(&format!("SELECT uuid FROM {}", kind.plural())).fetch_all(self.store.pool()).await?;
        rows.iter().map(|r| uuid_col(r, "uuid")).collect()
    }
}

impl Replica {
    /// The versions applied to a resource, in the order they were applied.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn change_log(&self, kind: Kind, uuid: Uuid) -> Result<Vec<LoggedChange>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT version, event_uuid, removed, source FROM change_log
             WHERE entity_type = ? AND uuid = ? ORDER BY seq",
        )
        .bind(kind.entity_type())
        .bind(uuid.to_string())
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let source: String = r.try_get("source")?;
                Ok(LoggedChange {
                    version: r.try_get("version")?,
                    event_uuid: uuid_col(r, "event_uuid")?,
                    removed: r.try_get("removed")?,
                    source: Source::parse(&source)
                        .ok_or_else(|| sqlx::Error::Decode(format!("unknown source {source:?}").into()))?,
                })
            })
            .collect()
    }

    /// Every resource of a kind the mirror ever applied a version of,
    /// removed ones included.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn known_uuids(&self, kind: Kind) -> Result<Vec<Uuid>, sqlx::Error> {
        let rows = sqlx::query("SELECT DISTINCT uuid FROM change_log WHERE entity_type = ?")
            .bind(kind.entity_type())
            .fetch_all(self.store.pool())
            .await?;
        rows.iter().map(|r| uuid_col(r, "uuid")).collect()
    }
}

fn stored(row: &sqlx::sqlite::SqliteRow) -> Result<Stored, sqlx::Error> {
    let text: String = row.try_get("snapshot")?;
    Ok(Stored {
        version: row.try_get("version")?,
        snapshot: serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        event_uuid: uuid_col(row, "event_uuid")?,
    })
}

fn uuid_col(row: &sqlx::sqlite::SqliteRow, name: &str) -> Result<Uuid, sqlx::Error> {
    let text: String = row.try_get(name)?;
    Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn site_event(event_type: &str, version: i64, name: &str) -> (Event, Value) {
        let body = json!({
            "event_uuid": Uuid::from_u128(version as u128),
            "event_type": event_type,
            "context": {"source": "api", "happened_at": "2026-11-22T10:00:00+00:00",
                        "created_at": "2026-11-22T10:00:00+00:00", "user_uuid": null, "user_email": null,
                        "device_uuid": null},
            "site": {"uuid": Uuid::from_u128(7), "external_id": null, "name": name, "description": null,
                     "address": null, "contacts": [], "client": null, "version": version,
                     "created_at": "2026-11-22T10:00:00+00:00", "updated_at": "2026-11-22T10:00:00+00:00",
                     "a_field_this_sdk_does_not_know": [1, 2]}
        });
        (serde_json::from_value(body.clone()).unwrap(), body)
    }

    fn change(event_type: &str, version: i64, name: &str) -> Change {
        let (event, body) = site_event(event_type, version, name);
        Change::from_event(&event, &body).unwrap().expect("a CRUD event")
    }

    #[tokio::test]
    async fn only_the_next_version_is_applied_and_removal_leaves_a_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(&dir.path().join("mirror.db")).await.unwrap();
        let uuid = Uuid::from_u128(7);

        let mut answers = Vec::new();
        for c in [
            change("site_updated", 2, "B"),
            change("site_created", 1, "A"),
            change("site_updated", 2, "B"),
            change("site_created", 1, "A"),
        ] {
            answers.push(replica.apply(&c, Source::Delivery).await.unwrap());
        }
        assert_eq!(answers, [Decision::Gap, Decision::Apply, Decision::Apply, Decision::Ignore]);
        let stored = replica.get(Kind::Site, uuid).await.unwrap().unwrap();
        assert_eq!((stored.version, stored.snapshot["name"].as_str()), (2, Some("B")));
        assert_eq!(stored.snapshot["a_field_this_sdk_does_not_know"], json!([1, 2]), "kept as sent");

        assert_eq!(replica.apply(&change("site_removed", 3, "B"), Source::History).await.unwrap(), Decision::Apply);
        assert_eq!(replica.get(Kind::Site, uuid).await.unwrap(), None);
        assert_eq!(replica.version(Kind::Site, uuid).await.unwrap(), Some(3));
        assert_eq!(replica.apply(&change("site_updated", 2, "B"), Source::Delivery).await.unwrap(), Decision::Ignore);
        assert!(replica.all(Kind::Site).await.unwrap().is_empty());

        let log: Vec<_> =
            replica.change_log(Kind::Site, uuid).await.unwrap().into_iter().map(|c| (c.version, c.source)).collect();
        assert_eq!(log, [(1, Source::Delivery), (2, Source::Delivery), (3, Source::History)]);
        assert_eq!(replica.known_uuids(Kind::Site).await.unwrap(), [uuid]);
    }

    #[test]
    fn status_and_test_events_are_no_change() {
        let (event, body) = site_event("site_updated", 2, "B");
        assert!(Change::from_event(&event, &body).unwrap().is_some());
        let started = json!({"event_uuid": Uuid::nil(), "event_type": "job_started", "context": body["context"],
                             "job": {"uuid": Uuid::nil(), "serial_no": 1, "status": "started", "version": 3,
                                     "created_at": "2026-11-22T10:00:00+00:00",
                                     "updated_at": "2026-11-22T10:00:00+00:00"}});
        let event: Event = serde_json::from_value(started.clone()).unwrap();
        assert_eq!(Change::from_event(&event, &started).unwrap(), None);
    }
}
