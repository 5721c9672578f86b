//! Storage: one narrow interface ([`sql`]) over SQLite (the embedded
//! default) and PostgreSQL (scale-out). Both run the same portable SQL; the
//! few statements that differ ask [`Backend`]. Writes go through the group
//! [`Committer`]; reads use a pool of their own.

pub mod accounts;
pub mod committer;
pub mod deliveries;
pub mod events;
pub mod handoff;
pub mod notifications;
pub mod people;
pub mod resources;
pub mod sql;
pub mod webhooks;

pub use committer::Committer;

use anyhow::{Context, bail};
use sql::{Conn, ReadPool, SqliteReaders};
use sqlx::Connection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::fs::File;
use std::time::Duration;

/// The embedded migrations. The SQL is portable: the same files build the
/// schema on SQLite and on PostgreSQL.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The PostgreSQL channel on which every commit wakes the workers of all
/// nodes (operations.md, "Scale-out").
pub const WAKE_CHANNEL: &str = "fieldhook_wake";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database: a read pool, the group committer, and (for SQLite) the lock
/// that keeps a second server off the same file.
#[derive(Clone)]
pub struct Db {
    pub backend: Backend,
    /// The URL it was opened with (workers open a listener connection).
    pub url: String,
    pub read: ReadPool,
    pub committer: Committer,
    _lock: Option<std::sync::Arc<File>>,
}

/// How to open the database.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Take the SQLite file for this process alone (what `serve` does).
    pub exclusive: bool,
}

impl Db {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`).
    ///
    /// # Errors
    /// When the URL is not understood, the database cannot be reached, or
    /// (with `exclusive`) another server already owns the SQLite file.
    pub async fn open(url: &str, options: OpenOptions) -> anyhow::Result<Db> {
        let lock = match sqlite_path(url) {
            Some("") => bail!("FIELDHOOK_DATABASE_URL: sqlite:// needs a file path, e.g. sqlite://fieldhook.db"),
            Some(path) if options.exclusive => Some(lock_sqlite(path)?),
            _ => None,
        };
        if let Some(path) = sqlite_path(url) {
            let writer = sql::open_sqlite(path, sql::Role::Writer).with_context(|| format!("opening {path}"))?;
            // WAL lets readers run beside the writer; it is a property of the
            // file, so setting it once on the writer is enough.
            writer.execute_batch("PRAGMA journal_mode = WAL").with_context(|| format!("opening {path}"))?;
            // Checkpoints copy the WAL back into the database; run inside a
            // commit they hold up the writer (and every caller waiting for
            // it) for as long as the copy and its fsync take. A thread of
            // their own does them instead.
            writer.execute_batch("PRAGMA wal_autocheckpoint = 0").with_context(|| format!("opening {path}"))?;
            let wal_long = sql::start_checkpointer(path).with_context(|| format!("opening {path}"))?;
            let read = ReadPool::Sqlite(SqliteReaders::new(path).with_context(|| format!("opening {path}"))?);
            return Ok(Db {
                backend: Backend::Sqlite,
                url: format!("sqlite://{path}"),
                read,
                committer: Committer::start_sqlite(Conn::Sqlite(sql::SqliteConn::new(writer)), path, wal_long),
                _lock: lock.map(std::sync::Arc::new),
            });
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("FIELDHOOK_DATABASE_URL must start with sqlite:// or postgres://, got {url:?}");
        }
        let write = pg_pool(url, 1).await?;
        let read = pg_pool(url, 16).await?;
        Ok(Db {
            backend: Backend::Postgres,
            url: url.to_string(),
            read: ReadPool::Postgres(read),
            committer: Committer::start_postgres(write, WAKE_CHANNEL),
            _lock: None,
        })
    }

    /// Applies pending migrations; refuses a database of a newer schema.
    ///
    /// # Errors
    /// When the schema is newer than this binary or a migration fails.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sql::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&self.read).await.ok().flatten();
        if let Some(applied) = applied
            && applied > known
        {
            bail!(
                "the database has schema version {applied}, newer than this fieldhook binary knows ({known}); \
                 run a newer fieldhook or point it at another database"
            );
        }
        match &self.read {
            ReadPool::Postgres(pool) => MIGRATOR.run(pool).await.context("applying migrations")?,
            ReadPool::Sqlite(_) => {
                // The migrator speaks sqlx; it gets a connection of its own.
                let path = sqlite_path(&self.url).unwrap_or_default();
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}?mode=rwc"))
                    .await
                    .with_context(|| format!("opening {path} for migrations"))?;
                MIGRATOR.run(&mut conn).await.context("applying migrations")?;
                conn.close().await?;
            }
        }
        Ok(())
    }

    /// `FOR UPDATE` where the backend has row locks; SQLite has one writer,
    /// so its reads inside a write transaction are already exclusive.
    pub fn for_update(&self) -> &'static str {
        for_update(self.backend)
    }
}

pub fn for_update(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    }
}

/// The backend of a connection handed to a write job.
pub fn backend_of(conn: &Conn) -> Backend {
    conn.backend()
}

fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
}

async fn pg_pool(url: &str, size: u32) -> anyhow::Result<PgPool> {
    // No ping before each acquire: a broken connection fails its query and
    // is replaced; the ping would double the round trips of every read.
    PgPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| format!("connecting to the database ({})", redact(url)))
}

/// Holds an exclusive lock on `<path>.lock` for the life of the process.
fn lock_sqlite(path: &str) -> anyhow::Result<File> {
    let lock_path = format!("{path}.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {lock_path}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another fieldhook server is already using {path}; one SQLite file is served by one process \
             (use PostgreSQL to run several)"
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {lock_path}")),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Whether `e` is a unique-constraint violation on an index or column whose
/// name contains `needle`.
pub fn unique_violation_on(e: &sql::SqlError, needle: &str) -> bool {
    e.is_unique_violation_on(needle)
}
