//! The narrow SQL interface every storage module writes against: `query`,
//! `bind`, `fetch_*`, `execute`, over a [`Conn`] that is either SQLite or
//! PostgreSQL. The SQL is the same portable text for both (`$N` parameters,
//! BIGINT and TEXT columns).
//!
//! Why not sqlx for SQLite as well: sqlx runs each SQLite connection on a
//! worker thread of its own and hands every statement over a channel, two
//! context switches per statement. A job create is half a dozen statements
//! on the single writer, so the hand-offs, not SQLite, capped durable writes
//! near 2,300/s (docs/benchmarks.md has the profile). Here SQLite runs through
//! rusqlite synchronously on the calling thread: the group committer owns a
//! thread of its own (see `committer`), and reads — single-row look-ups and
//! bounded pages, microseconds each — run inline on the runtime's threads.
//! PostgreSQL keeps sqlx's native driver: its statements are network round
//! trips, which async does well.

use super::Backend;
use super::handoff::{HandOff, Mark};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgPool, PgRow, Postgres};
use sqlx::{Arguments, Column, Executor, Row as _, TypeInfo};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

/// Prepared statements kept per SQLite connection. The server has a few
/// dozen distinct statements; a miss only costs a re-prepare.
const STATEMENT_CACHE: usize = 256;

/// Idle SQLite read connections kept for reuse.
const IDLE_READERS: usize = 16;

/// A failed statement.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The database refused the statement (constraint, syntax, busy …).
    #[error("database: {message}")]
    Database { message: String, unique_violation: bool, constraint: Option<String> },
    /// `fetch_one` found nothing.
    #[error("the query returned no row")]
    RowNotFound,
    /// A column is missing or does not hold the type asked for.
    #[error("column {column}: {problem}")]
    Decode { column: String, problem: String },
    /// Connection, pool or protocol trouble (PostgreSQL).
    #[error(transparent)]
    Driver(sqlx::Error),
    /// The thread running a long read failed.
    #[error("a background read failed: {0}")]
    Task(String),
    /// What was asked is not done on this backend (a caller's mistake).
    #[error("not on this backend: {0}")]
    Unsupported(&'static str),
}

impl SqlError {
    /// Whether this is a unique-constraint violation on an index or column
    /// whose name contains `needle`. PostgreSQL names the constraint; SQLite
    /// names the columns in its message — the index names contain the column
    /// names, so one needle matches both.
    pub fn is_unique_violation_on(&self, needle: &str) -> bool {
        match self {
            SqlError::Database { unique_violation: true, message, constraint } => {
                constraint.as_deref().is_some_and(|c| c.contains(needle)) || message.contains(needle)
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for SqlError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => SqlError::Database {
                message: db.message().to_string(),
                unique_violation: db.is_unique_violation(),
                constraint: db.constraint().map(str::to_string),
            },
            sqlx::Error::RowNotFound => SqlError::RowNotFound,
            other => SqlError::Driver(other),
        }
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        let unique_violation = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        );
        SqlError::Database { message: e.to_string(), unique_violation, constraint: None }
    }
}

pub type SqlResult<T> = std::result::Result<T, SqlError>;

/// The type of a NULL: PostgreSQL wants one for every parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
}

/// A parameter or column value. The schema has only BIGINT and TEXT columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Text(String),
    Real(f64),
    Null(Kind),
}

/// What `bind` accepts.
pub trait Bind {
    const KIND: Kind;
    fn into_value(self) -> Value;
}

macro_rules! bind_int {
    ($($t:ty),*) => {$(
        impl Bind for $t {
            const KIND: Kind = Kind::Int;
            fn into_value(self) -> Value {
                Value::Int(i64::from(self))
            }
        }
    )*};
}
bind_int!(i64, i32, u32, u16, bool);

impl Bind for String {
    const KIND: Kind = Kind::Text;
    fn into_value(self) -> Value {
        Value::Text(self)
    }
}

impl Bind for &str {
    const KIND: Kind = Kind::Text;
    fn into_value(self) -> Value {
        Value::Text(self.to_string())
    }
}

impl Bind for &String {
    const KIND: Kind = Kind::Text;
    fn into_value(self) -> Value {
        Value::Text(self.clone())
    }
}

impl<T: Bind> Bind for Option<T> {
    const KIND: Kind = T::KIND;
    fn into_value(self) -> Value {
        self.map_or(Value::Null(T::KIND), Bind::into_value)
    }
}

/// What a column decodes into.
pub trait Decode: Sized {
    fn decode(value: &Value) -> std::result::Result<Self, String>;
}

impl Decode for i64 {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Int(i) => Ok(*i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

impl Decode for i32 {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        i32::try_from(i64::decode(value)?).map_err(|e| e.to_string())
    }
}

impl Decode for bool {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        Ok(i64::decode(value)? != 0)
    }
}

impl Decode for f64 {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl Decode for String {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

/// A uuid stored as text, parsed in place (a claim reads several per row).
impl Decode for uuid::Uuid {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Text(s) => uuid::Uuid::parse_str(s).map_err(|e| format!("bad uuid: {e}")),
            other => Err(format!("expected a uuid as text, found {other:?}")),
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(value: &Value) -> std::result::Result<Self, String> {
        match value {
            Value::Null(_) => Ok(None),
            v => T::decode(v).map(Some),
        }
    }
}

/// One result row, owned.
#[derive(Debug, Clone)]
pub struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

/// A column by name or by position.
pub trait ColumnIndex {
    fn position(&self, row: &Row) -> Option<usize>;
    fn describe(&self) -> String;
}

impl ColumnIndex for &str {
    fn position(&self, row: &Row) -> Option<usize> {
        row.names.iter().position(|n| n == self)
    }
    fn describe(&self) -> String {
        (*self).to_string()
    }
}

impl ColumnIndex for usize {
    fn position(&self, row: &Row) -> Option<usize> {
        (*self < row.values.len()).then_some(*self)
    }
    fn describe(&self) -> String {
        format!("#{self}")
    }
}

impl Row {
    /// The column `index` as a `T`.
    ///
    /// # Errors
    /// When there is no such column or it does not hold a `T`.
    pub fn try_get<T: Decode, I: ColumnIndex>(&self, index: I) -> SqlResult<T> {
        let at = index
            .position(self)
            .ok_or_else(|| SqlError::Decode { column: index.describe(), problem: "no such column".into() })?;
        T::decode(&self.values[at]).map_err(|problem| SqlError::Decode { column: index.describe(), problem })
    }

    /// Moves the text of column `index` out of the row, instead of copying
    /// it as `try_get` does (a webhook body is a kilobyte or more).
    ///
    /// # Errors
    /// When there is no such column or it does not hold text.
    pub fn take_text<I: ColumnIndex>(&mut self, index: I) -> SqlResult<String> {
        let at = index
            .position(self)
            .ok_or_else(|| SqlError::Decode { column: index.describe(), problem: "no such column".into() })?;
        match &mut self.values[at] {
            Value::Text(s) => Ok(std::mem::take(s)),
            other => {
                Err(SqlError::Decode { column: index.describe(), problem: format!("expected text, found {other:?}") })
            }
        }
    }
}

/// A SQLite result row read in place, by column position: what
/// [`Query::map_sqlite`] hands its decoder. Nothing is copied until the
/// decoder asks for it.
pub struct SqliteRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
}

impl SqliteRow<'_, '_> {
    fn value(&self, at: usize) -> SqlResult<rusqlite::types::ValueRef<'_>> {
        self.row.get_ref(at).map_err(|e| Self::error(at, e.to_string()))
    }

    /// Column `at` (named as [`Row::try_get`] names a position) could not be read.
    fn error(at: usize, problem: String) -> SqlError {
        SqlError::Decode { column: at.describe(), problem }
    }

    fn mismatch(at: usize, expected: &str, found: rusqlite::types::ValueRef<'_>) -> SqlError {
        Self::error(at, format!("expected {expected}, found {:?}", found.data_type()))
    }

    /// # Errors
    /// When column `at` is missing or does not hold an integer.
    pub fn int(&self, at: usize) -> SqlResult<i64> {
        match self.value(at)? {
            rusqlite::types::ValueRef::Integer(n) => Ok(n),
            other => Err(Self::mismatch(at, "an integer", other)),
        }
    }

    /// The bytes of a text (or blob) column, as SQLite holds them: not
    /// checked for UTF-8, since they go out as they are.
    ///
    /// # Errors
    /// When column `at` is missing or holds neither text nor a blob.
    pub fn bytes(&self, at: usize) -> SqlResult<&[u8]> {
        match self.value(at)? {
            rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => Ok(b),
            other => Err(Self::mismatch(at, "text", other)),
        }
    }

    /// A uuid written as text.
    ///
    /// # Errors
    /// When column `at` is missing or does not hold a uuid.
    pub fn uuid(&self, at: usize) -> SqlResult<uuid::Uuid> {
        uuid::Uuid::try_parse_ascii(self.bytes(at)?).map_err(|e| Self::error(at, e.to_string()))
    }
}

/// A connection: SQLite through rusqlite, PostgreSQL through sqlx.
pub enum Conn {
    Sqlite(SqliteConn),
    Postgres(PoolConnection<Postgres>),
}

/// A SQLite connection; the writer's also carries what its transaction
/// hands to the delivery engine.
pub struct SqliteConn {
    conn: rusqlite::Connection,
    handoff: Option<HandOff>,
}

impl SqliteConn {
    pub(crate) fn new(conn: rusqlite::Connection) -> Self {
        Self { conn, handoff: None }
    }

    /// Starts or stops collecting hand-offs (the committer: while a
    /// delivery engine takes them).
    pub(crate) fn collect_handoffs(&mut self, on: bool) {
        match (on, self.handoff.is_some()) {
            (true, false) => self.handoff = Some(HandOff::default()),
            (false, true) => self.handoff = None,
            _ => {}
        }
    }
}

impl Deref for SqliteConn {
    type Target = rusqlite::Connection;
    fn deref(&self) -> &rusqlite::Connection {
        &self.conn
    }
}

impl Conn {
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// Where this connection's transaction hands new requests to the
    /// delivery engine: the SQLite writer's, while an engine takes them.
    pub fn handoff(&mut self) -> Option<&mut HandOff> {
        match self {
            Conn::Sqlite(c) => c.handoff.as_mut(),
            Conn::Postgres(_) => None,
        }
    }

    /// SQLite: the rowid of the row this connection inserted last.
    pub fn last_rowid(&self) -> Option<i64> {
        match self {
            Conn::Sqlite(c) => Some(c.last_insert_rowid()),
            Conn::Postgres(_) => None,
        }
    }

    /// Where a savepoint begins, for [`undo_handoffs`](Self::undo_handoffs).
    pub(crate) fn handoff_mark(&mut self) -> Mark {
        self.handoff().map(|h| h.mark()).unwrap_or_default()
    }

    /// Forgets the hand-offs since `mark`: their writes were rolled back.
    pub(crate) fn undo_handoffs(&mut self, mark: Mark) {
        if let Some(h) = self.handoff() {
            h.undo(mark);
        }
    }

    /// Runs a statement without parameters or results (`BEGIN`, `SAVEPOINT`…)
    /// outside the statement cache.
    ///
    /// # Errors
    /// When the database refuses it.
    pub async fn execute_raw(&mut self, sql: &str) -> SqlResult<()> {
        match self {
            Conn::Sqlite(c) => {
                c.prepare_cached(sql).and_then(|mut s| s.raw_execute()).map(drop).map_err(SqlError::from)
            }
            Conn::Postgres(c) => c.execute(sql).await.map(drop).map_err(SqlError::from),
        }
    }

    /// PostgreSQL: runs `sql`, statements without parameters separated by
    /// semicolons, as one simple query — one round trip for all of them —
    /// and returns the rows of each statement, in order (an empty list for
    /// one that returns none). After an error the statements left are not
    /// run, and a transaction the text began is left open, failed: the
    /// caller rolls it back.
    ///
    /// # Errors
    /// When a statement fails, a row cannot be read, or on SQLite.
    pub async fn fetch_each_raw(&mut self, sql: &str) -> SqlResult<Vec<Vec<Row>>> {
        use futures::TryStreamExt;
        let Conn::Postgres(c) = self else {
            return Err(SqlError::Unsupported("statements run as one simple query on PostgreSQL only"));
        };
        let (mut sets, mut rows) = (Vec::new(), Vec::new());
        let mut results = sqlx::raw_sql(sql).fetch_many(&mut **c);
        while let Some(item) = results.try_next().await? {
            match item {
                // A statement's end.
                sqlx::Either::Left(_) => sets.push(pg_rows(std::mem::take(&mut rows))?),
                sqlx::Either::Right(row) => rows.push(row),
            }
        }
        Ok(sets)
    }
}

/// The page size of a new SQLite database, in bytes (SQLite's default is
/// 4096). A drain reads each request with its event's body and then
/// rewrites the request, longer, with its answer: with twice the rows per
/// page, the claims read half as many pages back from the file after each
/// commit, and the writer splits pages half as often. Measured alternately
/// (docs/benchmarks.md, nineteenth round): drains about 5 % faster, creates
/// unchanged. Larger pages cost the creates: each job of a group commit
/// copies every page it first touches into its savepoint's journal, and
/// with 16 KiB pages creates fell by a fifth.
pub(crate) const SQLITE_PAGE_SIZE: u32 = 8192;

/// Opens a SQLite connection with the settings every connection needs.
pub(crate) fn open_sqlite(path: &str, role: Role) -> SqlResult<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // FULL makes every commit durable (an fsync per group commit); the busy
    // timeout covers CLI commands writing beside `serve`.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON")?;
    if role == Role::Writer {
        // Before anything creates the file's first table: a new database
        // takes this page size, an existing one keeps its own (in WAL mode
        // SQLite cannot change it). See [`SQLITE_PAGE_SIZE`].
        conn.execute_batch(&format!("PRAGMA page_size = {SQLITE_PAGE_SIZE}"))?;
        // 4 MiB of page cache (the default is 2) keeps the indexes the
        // writer updates in memory. Not more: whenever a transaction splits
        // a page, SQLite walks the writer's whole cache at commit
        // (`pcache1TruncateUnsafe`: 5 % of a drain's profile with 16 MiB).
        // Readers keep the default: a reader drops its whole cache whenever
        // another connection has committed, so a larger one only costs more
        // to drop. (Mapping the file for them, `mmap_size`, made no
        // measurable difference to the drain.)
        conn.execute_batch("PRAGMA cache_size = -4096")?;
        // Once the WAL starts over (see `start_checkpointer`), a file that a
        // burst made long is cut back to 64 MiB.
        conn.execute_batch("PRAGMA journal_size_limit = 67108864")?;
        // Each job of a group commit runs in a savepoint, and SQLite saves
        // every page a savepoint first touches to a statement journal. By
        // default that journal moves to a temporary file past 64 KiB: a
        // pwrite per page, nearly half of what a job create cost the writer
        // under load. In memory it stays a copy; a batch's journal is a few
        // hundred pages at most.
        conn.execute_batch("PRAGMA temp_store = MEMORY")?;
    }
    // Query-planner stability: without it SQLite re-prepares a statement
    // whenever a new value is bound to a parameter its plan may depend on —
    // the fan-out's `event_types LIKE $2` was re-prepared at every event,
    // a tenth of the writer's time under a create load.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The WAL's length beyond which the writer is asked to let the WAL start
/// over from its beginning.
const RESTART_WAL_AT_BYTES: i64 = 16 << 20;

/// Starts the thread that checkpoints the WAL of `path` in the background
/// (PASSIVE: it never waits for, or blocks, the writer or a reader). It ends
/// with the process.
///
/// Copying frames back is not enough to keep the WAL small: SQLite rewinds
/// it to its start only when a write transaction begins while every frame
/// has been copied, which under a steady stream of commits never happens by
/// chance. The WAL then grows without end (gigabytes in the benchmark), and
/// every commit appends to fresh blocks of the file, which costs the kernel
/// zeroing and the fsync a metadata update. So once the WAL is long, the
/// returned flag is raised: the writer, between two batches, copies the
/// last few frames itself ([`finish_checkpoint`]), and its next transaction
/// rewinds the WAL.
pub(crate) fn start_checkpointer(path: &str) -> SqlResult<Arc<AtomicBool>> {
    let conn = open_sqlite(path, Role::Reader)?;
    // A WAL frame holds a page; the file's own page size, as a database
    // created before [`SQLITE_PAGE_SIZE`] keeps 4 KiB pages.
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let restart_at_frames = RESTART_WAL_AT_BYTES / page_size.max(512);
    let long = Arc::new(AtomicBool::new(false));
    let raise = long.clone();
    std::thread::Builder::new()
        .name("fieldhook-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                // (busy, frames in the WAL, frames copied back)
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
                    Ok(frames) if frames >= restart_at_frames => raise.store(true, AtomicOrdering::Relaxed),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
        })
        .map_err(|e| SqlError::Task(e.to_string()))?;
    Ok(long)
}

/// The writer's part of rewinding a long WAL (see [`start_checkpointer`]):
/// with no commit under way, a PASSIVE checkpoint copies whatever the
/// background one has not yet, so that the next write transaction starts
/// the WAL over. Cheap, as the background checkpointer has just copied
/// nearly everything. Returns whether every frame is copied back; if a
/// reader still needed old frames, or the background checkpointer was busy,
/// the writer tries again after its next batch.
pub(crate) fn finish_checkpoint(conn: &rusqlite::Connection) -> bool {
    // (busy, frames in the WAL, frames copied back)
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
        Ok((frames, copied)) => frames == copied,
        Err(e) => {
            tracing::debug!(error = %e, "the writer's WAL checkpoint did not run");
            false
        }
    }
}

/// What a SQLite connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Writer,
    Reader,
}

/// The pool reads run on.
#[derive(Clone)]
pub enum ReadPool {
    Sqlite(Arc<SqliteReaders>),
    Postgres(PgPool),
}

/// Idle SQLite connections; a reader that finds none opens one.
pub struct SqliteReaders {
    path: String,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl SqliteReaders {
    pub(crate) fn new(path: &str) -> SqlResult<Arc<Self>> {
        let first = open_sqlite(path, Role::Reader)?;
        Ok(Arc::new(SqliteReaders { path: path.to_string(), idle: Mutex::new(vec![first]) }))
    }
}

impl ReadPool {
    /// A connection of the pool, returned to it when dropped.
    ///
    /// # Errors
    /// When no connection can be had.
    pub async fn acquire(&self) -> SqlResult<Pooled> {
        match self {
            ReadPool::Sqlite(readers) => {
                let idle = readers.idle.lock().expect("reader pool lock").pop();
                let conn = match idle {
                    Some(c) => c,
                    None => open_sqlite(&readers.path, Role::Reader)?,
                };
                Ok(Pooled { conn: Some(Conn::Sqlite(SqliteConn::new(conn))), home: Some(readers.clone()) })
            }
            ReadPool::Postgres(pool) => Ok(Pooled { conn: Some(Conn::Postgres(pool.acquire().await?)), home: None }),
        }
    }
}

impl ReadPool {
    /// Runs `read` on a connection of the pool where a long read (a scan for
    /// the gauges, say) cannot stall the runtime: SQLite statements run on
    /// the calling thread, so there it goes to tokio's blocking pool.
    ///
    /// # Errors
    /// When no connection can be had or the blocking task fails.
    pub async fn run_long<T, F>(&self, read: F) -> SqlResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> futures::future::BoxFuture<'c, T> + Send + 'static,
    {
        match self {
            ReadPool::Sqlite(_) => {
                let pool = self.clone();
                tokio::task::spawn_blocking(move || {
                    futures::executor::block_on(async move {
                        let mut conn = pool.acquire().await?;
                        Ok(read(&mut conn).await)
                    })
                })
                .await
                .map_err(|e| SqlError::Task(e.to_string()))?
            }
            ReadPool::Postgres(_) => {
                let mut conn = self.acquire().await?;
                Ok(read(&mut conn).await)
            }
        }
    }
}

/// A pooled [`Conn`].
pub struct Pooled {
    conn: Option<Conn>,
    home: Option<Arc<SqliteReaders>>,
}

impl Deref for Pooled {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("pooled connection")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("pooled connection")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let (Some(Conn::Sqlite(c)), Some(home)) = (self.conn.take(), &self.home) {
            let mut idle = home.idle.lock().expect("reader pool lock");
            // A connection left inside a transaction (a reader that failed
            // half-way) is not handed on.
            if idle.len() < IDLE_READERS && c.is_autocommit() {
                idle.push(c.conn);
            }
        }
    }
}

/// Where a query runs: a connection, or any connection of the read pool.
pub enum Exec<'e> {
    Conn(&'e mut Conn),
    Pool(&'e ReadPool),
}

impl<'e> From<&'e mut Conn> for Exec<'e> {
    fn from(c: &'e mut Conn) -> Self {
        Exec::Conn(c)
    }
}

impl<'e> From<&'e mut Pooled> for Exec<'e> {
    fn from(c: &'e mut Pooled) -> Self {
        Exec::Conn(c)
    }
}

impl<'e> From<&'e ReadPool> for Exec<'e> {
    fn from(p: &'e ReadPool) -> Self {
        Exec::Pool(p)
    }
}

/// What `execute` reports.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    rows_affected: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

/// A statement with its parameters.
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query<'q> {
    sql: &'q str,
    args: Vec<Value>,
}

/// A statement in portable SQL with `$1`, `$2`… parameters.
pub fn query(sql: &str) -> Query<'_> {
    Query { sql, args: Vec::new() }
}

impl<'q> Query<'q> {
    pub fn bind(mut self, value: impl Bind) -> Self {
        self.args.push(value.into_value());
        self
    }

    /// Makes room for `more` parameters at once, for a statement whose
    /// parameter count is known before it is bound.
    pub fn reserve(mut self, more: usize) -> Self {
        self.args.reserve(more);
        self
    }

    /// # Errors
    /// When the database refuses the statement.
    pub async fn execute<'e>(self, on: impl Into<Exec<'e>>) -> SqlResult<Done> {
        let rows_affected = match on.into() {
            Exec::Conn(conn) => self.run(conn, false).await?.1,
            Exec::Pool(pool) => self.run(&mut *pool.acquire().await?, false).await?.1,
        };
        Ok(Done { rows_affected })
    }

    /// # Errors
    /// When the database refuses the statement or a row cannot be read.
    pub async fn fetch_all<'e>(self, on: impl Into<Exec<'e>>) -> SqlResult<Vec<Row>> {
        Ok(match on.into() {
            Exec::Conn(conn) => self.run(conn, true).await?.0,
            Exec::Pool(pool) => self.run(&mut *pool.acquire().await?, true).await?.0,
        })
    }

    /// Runs the statement on `conn`: its rows (when `rows` is asked) and the
    /// number of rows it changed.
    async fn run(self, conn: &mut Conn, rows: bool) -> SqlResult<(Vec<Row>, u64)> {
        match conn {
            Conn::Sqlite(c) => sqlite_run(c, self.sql, &self.args, rows),
            Conn::Postgres(c) => {
                let query = sqlx::query_with(self.sql, pg_args(self.args)?);
                if rows {
                    Ok((pg_rows(query.fetch_all(&mut **c).await?)?, 0))
                } else {
                    Ok((Vec::new(), query.execute(&mut **c).await?.rows_affected()))
                }
            }
        }
    }

    /// SQLite only: runs the query on `conn` and decodes each row where
    /// SQLite holds it, by position. [`Query::fetch_all`] first copies every
    /// value into an owned row (a string apiece for texts, each checked for
    /// UTF-8) and then looks its columns up by name. For the drain's claims,
    /// hundreds of requests each with a kilobyte of body, reading in place
    /// took a sixth off the claims' instructions (docs/benchmarks.md,
    /// twentieth round).
    ///
    /// # Errors
    /// When SQLite refuses the statement, or `decode` fails.
    pub fn map_sqlite<T>(
        self,
        conn: &rusqlite::Connection,
        mut decode: impl FnMut(SqliteRow<'_, '_>) -> SqlResult<T>,
    ) -> SqlResult<Vec<T>> {
        let mut stmt = sqlite_prepare(conn, self.sql, &self.args)?;
        let mut out = Vec::new();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            out.push(decode(SqliteRow { row })?);
        }
        Ok(out)
    }

    /// # Errors
    /// As [`Query::fetch_all`].
    pub async fn fetch_optional<'e>(self, on: impl Into<Exec<'e>>) -> SqlResult<Option<Row>> {
        Ok(self.fetch_all(on).await?.into_iter().next())
    }

    /// # Errors
    /// As [`Query::fetch_all`], and [`SqlError::RowNotFound`] without a row.
    pub async fn fetch_one<'e>(self, on: impl Into<Exec<'e>>) -> SqlResult<Row> {
        self.fetch_optional(on).await?.ok_or(SqlError::RowNotFound)
    }
}

/// A statement whose rows are one value each.
#[must_use = "a query does nothing until it is fetched"]
pub struct Scalar<'q, O> {
    query: Query<'q>,
    out: PhantomData<fn() -> O>,
}

/// A statement returning one column, decoded as `O`.
pub fn query_scalar<O: Decode>(sql: &str) -> Scalar<'_, O> {
    Scalar { query: query(sql), out: PhantomData }
}

impl<'q, O: Decode> Scalar<'q, O> {
    pub fn bind(mut self, value: impl Bind) -> Self {
        self.query = self.query.bind(value);
        self
    }

    /// # Errors
    /// As [`Query::fetch_all`].
    pub async fn fetch_all<'e>(self, on: impl Into<Exec<'e>>) -> SqlResult<Vec<O>> {
        self.query.fetch_all(on).await?.iter().map(|r| r.try_get(0usize)).collect()
    }

    /// # Errors
    /// As [`Query::fetch_all`].
    pub async fn fetch_optional<'e>(self, on: impl Into<Exec<'e>>) -> SqlResult<Option<O>> {
        self.query.fetch_optional(on).await?.map(|r| r.try_get(0usize)).transpose()
    }

    /// # Errors
    /// As [`Query::fetch_one`].
    pub async fn fetch_one<'e>(self, on: impl Into<Exec<'e>>) -> SqlResult<O> {
        self.query.fetch_one(on).await?.try_get(0usize)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Null(_) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Runs one statement on SQLite; returns its rows (when `rows` is asked)
/// and the number of rows it changed.
fn sqlite_run(conn: &rusqlite::Connection, sql: &str, args: &[Value], rows: bool) -> SqlResult<(Vec<Row>, u64)> {
    use rusqlite::types::ValueRef;
    let mut stmt = sqlite_prepare(conn, sql, args)?;
    let width = stmt.column_count();
    if width == 0 {
        let changed = stmt.raw_execute()?;
        return Ok((Vec::new(), changed as u64));
    }
    let names: Arc<[String]> = stmt.column_names().into_iter().map(str::to_string).collect();
    let mut out = Vec::new();
    let mut cursor = stmt.raw_query();
    while let Some(row) = cursor.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match row.get_ref(i)? {
                ValueRef::Integer(n) => Value::Int(n),
                ValueRef::Real(f) => Value::Real(f),
                ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(match std::str::from_utf8(t) {
                    Ok(text) => text.to_owned(),
                    Err(_) => String::from_utf8_lossy(t).into_owned(),
                }),
                ValueRef::Null => Value::Null(Kind::Text),
            });
        }
        if rows {
            out.push(Row { names: names.clone(), values });
        }
    }
    drop(cursor);
    Ok((out, conn.changes()))
}

/// `sql`, prepared (or taken from the connection's cache) with `args` bound.
fn sqlite_prepare<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    args: &[Value],
) -> SqlResult<rusqlite::CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql)?;
    for index in 1..=stmt.parameter_count() {
        let position = parameter_position(&stmt, index);
        bind_argument(&mut stmt, index, position, args, sql)?;
    }
    Ok(stmt)
}

/// The argument parameter `index` of `stmt` takes. `$N` is a named
/// parameter to SQLite, numbered by first appearance; it takes the N-th
/// argument, as on PostgreSQL.
fn parameter_position(stmt: &rusqlite::Statement<'_>, index: usize) -> usize {
    stmt.parameter_name(index)
        .and_then(|name| name.strip_prefix('$').or_else(|| name.strip_prefix('?')))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(index)
}

fn bind_argument(
    stmt: &mut rusqlite::Statement<'_>,
    index: usize,
    position: usize,
    args: &[Value],
    sql: &str,
) -> SqlResult<()> {
    let value = args.get(position - 1).ok_or_else(|| SqlError::Database {
        message: format!("parameter ${position} is not bound in {sql:?}"),
        unique_violation: false,
        constraint: None,
    })?;
    stmt.raw_bind_parameter(index, value)?;
    Ok(())
}

/// Executes `queries` in order; returns the number of rows each changed.
///
/// On SQLite, consecutive queries with the same text share one prepared
/// statement and one reading of its parameters. The writer records a
/// batch of attempts with one `UPDATE` each, and taking the statement from
/// the cache and giving it back, then naming its parameters, for every one
/// of them was 3 % of a drain's CPU.
///
/// # Errors
/// When the database refuses a statement; those before it have run.
pub async fn execute_each(conn: &mut Conn, queries: Vec<Query<'_>>) -> SqlResult<Vec<u64>> {
    let mut changed = Vec::with_capacity(queries.len());
    match conn {
        Conn::Sqlite(c) => {
            let mut prepared: Option<(&str, rusqlite::CachedStatement<'_>, Vec<usize>)> = None;
            for q in &queries {
                if prepared.as_ref().is_none_or(|(sql, ..)| *sql != q.sql) {
                    // The last one goes back to the cache first.
                    drop(prepared.take());
                    let stmt = c.prepare_cached(q.sql)?;
                    let positions = (1..=stmt.parameter_count()).map(|i| parameter_position(&stmt, i)).collect();
                    prepared = Some((q.sql, stmt, positions));
                }
                let (_, stmt, positions) = prepared.as_mut().expect("prepared above");
                for (i, &position) in positions.iter().enumerate() {
                    bind_argument(stmt, i + 1, position, &q.args, q.sql)?;
                }
                changed.push(stmt.raw_execute()? as u64);
            }
        }
        Conn::Postgres(_) => {
            for q in queries {
                changed.push(q.execute(&mut *conn).await?.rows_affected());
            }
        }
    }
    Ok(changed)
}

fn pg_args(values: Vec<Value>) -> SqlResult<PgArguments> {
    let mut args = PgArguments::default();
    for v in values {
        let added = match v {
            Value::Int(i) => args.add(i),
            Value::Text(s) => args.add(s),
            Value::Real(f) => args.add(f),
            Value::Null(Kind::Int) => args.add(None::<i64>),
            Value::Null(Kind::Text) => args.add(None::<String>),
        };
        added.map_err(|e| SqlError::Driver(sqlx::Error::Encode(e)))?;
    }
    Ok(args)
}

fn pg_rows(rows: Vec<PgRow>) -> SqlResult<Vec<Row>> {
    let Some(first) = rows.first() else { return Ok(Vec::new()) };
    let names: Arc<[String]> = first.columns().iter().map(|c| c.name().to_string()).collect();
    rows.iter()
        .map(|row| {
            let mut values = Vec::with_capacity(names.len());
            for (i, column) in row.columns().iter().enumerate() {
                let kind = column.type_info().name();
                let decoded = match kind {
                    "INT8" => row.try_get::<Option<i64>, _>(i).map(|v| v.map_or(Value::Null(Kind::Int), Value::Int)),
                    "INT4" => row
                        .try_get::<Option<i32>, _>(i)
                        .map(|v| v.map_or(Value::Null(Kind::Int), |n| Value::Int(n.into()))),
                    "INT2" => row
                        .try_get::<Option<i16>, _>(i)
                        .map(|v| v.map_or(Value::Null(Kind::Int), |n| Value::Int(n.into()))),
                    "BOOL" => row
                        .try_get::<Option<bool>, _>(i)
                        .map(|v| v.map_or(Value::Null(Kind::Int), |b| Value::Int(b.into()))),
                    "FLOAT8" => row.try_get::<Option<f64>, _>(i).map(|v| v.map_or(Value::Null(Kind::Int), Value::Real)),
                    "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => {
                        row.try_get::<Option<String>, _>(i).map(|v| v.map_or(Value::Null(Kind::Text), Value::Text))
                    }
                    "VOID" => Ok(Value::Null(Kind::Text)),
                    other => {
                        return Err(SqlError::Decode {
                            column: column.name().to_string(),
                            problem: format!("PostgreSQL type {other} is not one the storage layer reads"),
                        });
                    }
                };
                values.push(decoded?);
            }
            Ok(Row { names: names.clone(), values })
        })
        .collect()
}
