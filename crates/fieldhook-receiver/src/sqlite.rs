//! A [`VersionStore`] on SQLite (feature `sqlite`), and a transactional way
//! to apply an event: the version check, the receiver's own writes and the
//! recording of the version commit together or not at all.
//!
//! The versions live in one table, `fieldhook_receiver_versions`, created on
//! [`SqliteVersionStore::new`]. Put it in the database that holds your
//! replicated data to use [`SqliteVersionStore::begin`].

use crate::ordering::{Decision, EntityKey, EntityVersion, Strategy};
use crate::store::VersionStore;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS fieldhook_receiver_versions (
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_uuid)
) WITHOUT ROWID";

const SELECT_VERSION: &str =
    "SELECT version FROM fieldhook_receiver_versions WHERE entity_type = ? AND entity_uuid = ?";

// `max`, so that recording never lowers the version (the VersionStore contract).
const UPSERT_VERSION: &str = "INSERT INTO fieldhook_receiver_versions (entity_type, entity_uuid, version)
    VALUES (?, ?, ?)
    ON CONFLICT (entity_type, entity_uuid) DO UPDATE SET version = max(version, excluded.version)";

/// Stored versions in a SQLite table.
///
/// An in-memory database (`sqlite::memory:`) is private to one connection:
/// give it a pool of exactly one connection.
#[derive(Debug, Clone)]
pub struct SqliteVersionStore {
    pool: SqlitePool,
}

impl SqliteVersionStore {
    /// Uses `pool`, creating the versions table if it does not exist yet.
    ///
    /// # Errors
    ///
    /// The database error, if the table cannot be created.
    pub async fn new(pool: SqlitePool) -> Result<Self, sqlx::Error> {
        sqlx::query(CREATE_TABLE).execute(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for the receiver's own queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Opens a write transaction and decides about `entity` inside it.
    ///
    /// The transaction starts with `BEGIN IMMEDIATE`: it holds SQLite's write
    /// lock from the first statement, so no other connection or process can
    /// record a version between this check and the commit (a deferred
    /// transaction would instead fail with "database is locked" when it
    /// tried to write). Make your own writes through
    /// [`SqliteVersionTx::connection`], then [`commit`](SqliteVersionTx::commit);
    /// dropping the transaction rolls everything back.
    ///
    /// ```no_run
    /// # async fn example(store: fieldhook_receiver::sqlite::SqliteVersionStore, event: fieldhook_receiver::Event)
    /// # -> Result<u16, sqlx::Error> {
    /// use fieldhook_receiver::{Decision, Strategy};
    ///
    /// let (Some(entity), Some(job)) = (event.entity(), event.job()) else { return Ok(200) };
    /// let mut tx = store.begin(Strategy::FullReplication, &entity).await?;
    /// if tx.decision() == Decision::Apply {
    ///     sqlx::query("INSERT OR REPLACE INTO jobs (uuid, body) VALUES (?, ?)")
    ///         .bind(job.uuid.to_string())
    ///         .bind(serde_json::to_string(job).unwrap())
    ///         .execute(tx.connection())
    ///         .await?;
    /// }
    /// Ok(tx.commit().await?.status_code())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error; nothing was changed.
    pub async fn begin(&self, strategy: Strategy, entity: &EntityVersion) -> Result<SqliteVersionTx, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let stored = select_version(&mut tx, &entity.key).await?;
        Ok(SqliteVersionTx { tx, decision: strategy.decide(stored, entity.version), entity: entity.clone() })
    }
}

async fn select_version(conn: &mut SqliteConnection, key: &EntityKey) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(SELECT_VERSION)
        .bind(&key.entity_type)
        .bind(key.entity_uuid.to_string())
        .fetch_optional(conn)
        .await
}

impl VersionStore for SqliteVersionStore {
    type Error = sqlx::Error;

    async fn get(&self, key: &EntityKey) -> Result<Option<i64>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        select_version(&mut conn, key).await
    }

    async fn set(&self, key: &EntityKey, version: i64) -> Result<(), sqlx::Error> {
        sqlx::query(UPSERT_VERSION)
            .bind(&key.entity_type)
            .bind(key.entity_uuid.to_string())
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// An open write transaction that has decided about one event (see
/// [`SqliteVersionStore::begin`]).
#[derive(Debug)]
#[must_use = "dropping the transaction rolls it back"]
pub struct SqliteVersionTx {
    tx: Transaction<'static, Sqlite>,
    decision: Decision,
    entity: EntityVersion,
}

impl SqliteVersionTx {
    /// What to do with the event. Write only on [`Decision::Apply`].
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// The transaction's connection, for the receiver's own writes.
    pub fn connection(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Records the version (on [`Decision::Apply`]) and commits, your writes
    /// included. Returns the decision, whose
    /// [`status_code`](Decision::status_code) is the answer to give.
    ///
    /// # Errors
    ///
    /// The database error; nothing was committed.
    pub async fn commit(mut self) -> Result<Decision, sqlx::Error> {
        if self.decision == Decision::Apply {
            sqlx::query(UPSERT_VERSION)
                .bind(&self.entity.key.entity_type)
                .bind(self.entity.key.entity_uuid.to_string())
                .bind(self.entity.version)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(self.decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ordering::{Outcome, VersionGate};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::convert::Infallible;
    use uuid::Uuid;

    async fn file_store(dir: &tempfile::TempDir) -> SqliteVersionStore {
        let options = SqliteConnectOptions::new().filename(dir.path().join("receiver.db")).create_if_missing(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.unwrap();
        SqliteVersionStore::new(pool).await.unwrap()
    }

    fn site(version: i64) -> EntityVersion {
        EntityVersion { key: EntityKey::new("site", Uuid::from_u128(42)), version }
    }

    #[tokio::test]
    async fn versions_are_stored_per_entity_never_lowered_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        let key = site(0).key;
        let other = EntityKey::new("client", key.entity_uuid);

        assert_eq!(store.get(&key).await.unwrap(), None);
        store.set(&key, 2).await.unwrap();
        store.set(&key, 1).await.unwrap();
        store.set(&other, 9).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(2));
        store.pool().close().await;

        let reopened = file_store(&dir).await;
        assert_eq!(reopened.get(&key).await.unwrap(), Some(2));
        assert_eq!(reopened.get(&other).await.unwrap(), Some(9));
    }

    #[tokio::test]
    async fn an_in_memory_database_works_with_a_single_connection_pool() {
        let pool = SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        let gate = VersionGate::new(Strategy::FullReplication, SqliteVersionStore::new(pool).await.unwrap());

        let apply = || async { Ok::<_, Infallible>(()) };
        assert_eq!(gate.process(&site(2), apply).await.unwrap(), Outcome::Gap);
        assert_eq!(gate.process(&site(1), apply).await.unwrap(), Outcome::Applied(()));
        assert_eq!(gate.process(&site(2), apply).await.unwrap(), Outcome::Applied(()));
        assert_eq!(gate.process(&site(2), apply).await.unwrap(), Outcome::Ignored);
    }

    async fn write_site(tx: &mut SqliteVersionTx, version: i64) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT OR REPLACE INTO sites (uuid, version) VALUES ('s', ?)")
            .bind(version)
            .execute(tx.connection())
            .await
            .map(drop)
    }

    async fn stored_site(store: &SqliteVersionStore) -> Option<i64> {
        sqlx::query_scalar("SELECT version FROM sites").fetch_optional(store.pool()).await.unwrap()
    }

    #[tokio::test]
    async fn the_receivers_write_and_the_version_commit_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        sqlx::query("CREATE TABLE sites (uuid TEXT PRIMARY KEY, version INTEGER)").execute(store.pool()).await.unwrap();
        // Applied, then dropped before commit (the handler failed): nothing stays.
        let mut tx = store.begin(Strategy::FullReplication, &site(1)).await.unwrap();
        assert_eq!(tx.decision(), Decision::Apply);
        write_site(&mut tx, 1).await.unwrap();
        drop(tx);
        assert_eq!(store.get(&site(1).key).await.unwrap(), None);
        assert_eq!(stored_site(&store).await, None);

        // The retry commits both.
        let mut tx = store.begin(Strategy::FullReplication, &site(1)).await.unwrap();
        write_site(&mut tx, 1).await.unwrap();
        assert_eq!(tx.commit().await.unwrap(), Decision::Apply);
        assert_eq!(store.get(&site(1).key).await.unwrap(), Some(1));
        assert_eq!(stored_site(&store).await, Some(1));

        // A gap and a duplicate record nothing.
        let tx = store.begin(Strategy::FullReplication, &site(3)).await.unwrap();
        assert_eq!(tx.commit().await.unwrap(), Decision::Gap);
        let tx = store.begin(Strategy::FullReplication, &site(1)).await.unwrap();
        assert_eq!(tx.commit().await.unwrap(), Decision::Ignore);
        assert_eq!(store.get(&site(1).key).await.unwrap(), Some(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_transactions_on_one_entity_are_serialised() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        // Everyone delivers version 1 at once: exactly one may apply it.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let tx = store.begin(Strategy::FullReplication, &site(1)).await.unwrap();
                    tokio::task::yield_now().await;
                    tx.commit().await.unwrap()
                })
            })
            .collect();
        let mut applied = 0;
        for task in tasks {
            if task.await.unwrap() == Decision::Apply {
                applied += 1;
            }
        }
        assert_eq!(applied, 1);
    }
}
