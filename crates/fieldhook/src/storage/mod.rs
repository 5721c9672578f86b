//! Storage: one narrow interface over SQLite (the embedded default) and
//! PostgreSQL (scale-out). Both run the same portable SQL through sqlx's `Any`
//! driver; the few statements that differ ask [`Backend`]. Writes go through
//! the group [`Committer`]; reads use a pool of their own.

pub mod accounts;
pub mod committer;
pub mod deliveries;
pub mod events;
pub mod notifications;
pub mod people;
pub mod resources;
pub mod webhooks;

pub use committer::Committer;

use anyhow::{Context, bail};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Executor};
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
    pub read: AnyPool,
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
        sqlx::any::install_default_drivers();
        let (backend, url, lock) = if let Some(path) = sqlite_path(url) {
            if path.is_empty() {
                bail!("FIELDHOOK_DATABASE_URL: sqlite:// needs a file path, e.g. sqlite://fieldhook.db");
            }
            let lock = if options.exclusive { Some(lock_sqlite(path)?) } else { None };
            (Backend::Sqlite, format!("sqlite://{path}?mode=rwc"), lock)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string(), None)
        } else {
            bail!("FIELDHOOK_DATABASE_URL must start with sqlite:// or postgres://, got {url:?}");
        };

        let (readers, writers) = match backend {
            Backend::Sqlite => (4, 1),
            Backend::Postgres => (16, 1),
        };
        let write = pool(backend, &url, writers).await?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; it is a property of the
            // file, so setting it once on the writer is enough.
            sqlx::raw_sql("PRAGMA journal_mode = WAL").execute(&write).await?;
        }
        let read = pool(backend, &url, readers).await?;
        let notify = (backend == Backend::Postgres).then_some(WAKE_CHANNEL);
        Ok(Db {
            backend,
            url: url.clone(),
            read,
            committer: Committer::start(write, notify),
            _lock: lock.map(std::sync::Arc::new),
        })
    }

    /// Applies pending migrations; refuses a database of a newer schema.
    ///
    /// # Errors
    /// When the schema is newer than this binary or a migration fails.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&self.read).await.ok().flatten();
        if let Some(applied) = applied
            && applied > known
        {
            bail!(
                "the database has schema version {applied}, newer than this fieldhook binary knows ({known}); \
                 run a newer fieldhook or point it at another database"
            );
        }
        MIGRATOR.run(&self.read).await.context("applying migrations")?;
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
pub fn backend_of(conn: &AnyConnection) -> Backend {
    if conn.backend_name().eq_ignore_ascii_case("postgres") { Backend::Postgres } else { Backend::Sqlite }
}

fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
}

async fn pool(backend: Backend, url: &str, size: u32) -> anyhow::Result<AnyPool> {
    // No ping before each acquire: a broken connection fails its query and
    // is replaced; the ping would double the round trips of every read.
    let mut options = AnyPoolOptions::new()
        .test_before_acquire(false)
        .max_connections(size)
        .min_connections(if backend == Backend::Sqlite { size } else { 1 })
        .acquire_timeout(Duration::from_secs(10));
    if backend == Backend::Sqlite {
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                // FULL makes every commit durable (an fsync per group commit);
                // the busy timeout covers CLI commands writing beside `serve`.
                conn.execute("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON")
                    .await?;
                Ok(())
            })
        });
    }
    options.connect(url).await.with_context(|| format!("connecting to the database ({})", redact(url)))
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
/// name contains `needle`. PostgreSQL names the constraint; SQLite names the
/// columns in its message — the index names contain the column names, so
/// one needle matches both.
pub fn unique_violation_on(e: &sqlx::Error, needle: &str) -> bool {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            db.constraint().is_some_and(|c| c.contains(needle)) || db.message().contains(needle)
        }
        _ => false,
    }
}
