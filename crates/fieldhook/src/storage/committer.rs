//! Group commit. Every write of the server — an API change with its outbox
//! event, a delivery claim, a delivery result — is a job sent to the
//! committer, which runs the jobs that arrived together in ONE transaction on
//! one connection and commits (one fsync) for all of them. Each job runs in a
//! savepoint, so one failing job rolls back only itself. A job's caller gets
//! its answer only after the commit succeeded: acknowledged means durable.
//!
//! On SQLite the committer is an OS thread owning the one write connection:
//! its statements run synchronously (see `sql` for why), and while it waits
//! for an fsync the next batch gathers in the channel. On PostgreSQL it is a
//! task on the runtime, as its statements are network round trips.

use super::Backend;
use super::sql::{Conn, SqlError};
use crate::error::{Error, Result};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::postgres::PgPool;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use tokio::sync::{Notify, mpsc, oneshot};

/// How many jobs at most share one transaction. Large enough to amortise the
/// fsync, small enough that one batch does not hold the writer for long.
const MAX_BATCH: usize = 512;

/// What the committer commits to: an API change, a delivery result, a claim.
trait Job: Send {
    /// Runs the job, keeping its outcome; says whether to keep its writes.
    fn run<'c>(&'c mut self, conn: &'c mut Conn) -> BoxFuture<'c, bool>;
    /// Answers the caller once the transaction's fate is known.
    fn answer(self: Box<Self>, commit: std::result::Result<(), Arc<SqlError>>);
    /// Whether it only writes to the database, so that the committer may
    /// undo it and run it once more ([`Committer::write_rerunnable`]).
    fn rerunnable(&self) -> bool;
}

/// A job's outcome until its caller is answered.
struct Reply<T> {
    outcome: Option<Result<T>>,
    tx: oneshot::Sender<Result<T>>,
}

impl<T> Reply<T> {
    fn new(tx: oneshot::Sender<Result<T>>) -> Self {
        Self { outcome: None, tx }
    }

    /// Keeps `outcome`; says whether the job's writes are to be kept.
    fn keep(&mut self, outcome: Result<T>) -> bool {
        let keep = outcome.is_ok();
        self.outcome = Some(outcome);
        keep
    }

    fn send(mut self, commit: std::result::Result<(), Arc<SqlError>>) {
        let outcome = self.outcome.take().unwrap_or_else(|| Err(Error::Internal(anyhow::anyhow!("a job never ran"))));
        let _ = self.tx.send(settle(outcome, commit));
    }
}

/// A job that runs once ([`Committer::write`]).
struct Once<T, F> {
    f: Option<F>,
    reply: Reply<T>,
}

impl<T, F> Job for Once<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut Conn) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = match self.f.take() {
                Some(f) => caught(f(conn)).await,
                None => Err(Error::Internal(anyhow::anyhow!("a write job ran twice"))),
            };
            self.reply.keep(outcome)
        })
    }

    fn answer(self: Box<Self>, commit: std::result::Result<(), Arc<SqlError>>) {
        self.reply.send(commit);
    }

    fn rerunnable(&self) -> bool {
        false
    }
}

/// A job that may run again ([`Committer::write_rerunnable`]).
struct Again<T, F> {
    f: F,
    reply: Reply<T>,
}

impl<T, F> Job for Again<T, F>
where
    T: Send + 'static,
    F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut Conn) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let outcome = caught((self.f)(conn)).await;
            self.reply.keep(outcome)
        })
    }

    fn answer(self: Box<Self>, commit: std::result::Result<(), Arc<SqlError>>) {
        self.reply.send(commit);
    }

    fn rerunnable(&self) -> bool {
        true
    }
}

/// A job's outcome, with a panic turned into an error.
async fn caught<T>(job: BoxFuture<'_, Result<T>>) -> Result<T> {
    AssertUnwindSafe(job)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(Error::Internal(anyhow::anyhow!("a write job panicked"))))
}

/// What a job's caller hears: its outcome if the transaction committed.
fn settle<T>(outcome: Result<T>, commit: std::result::Result<(), Arc<SqlError>>) -> Result<T> {
    match commit {
        Ok(()) => outcome,
        Err(e) => Err(Error::Internal(anyhow::anyhow!("commit failed: {e}"))),
    }
}

/// Handle to the committer task; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Box<dyn Job>>,
    /// Signalled after a commit that may have given the delivery engine
    /// work, so that it picks up new requests at once instead of polling:
    /// on SQLite one that added requests or changed webhooks or keys, on
    /// PostgreSQL every one.
    pub committed: Arc<Notify>,
    /// SQLite: bumped after each commit that changed a webhook or an API
    /// key, so the delivery engine can keep its list of webhooks until then.
    /// `None` on PostgreSQL, where other nodes change them too.
    webhooks_generation: Option<Arc<AtomicU64>>,
}

impl Committer {
    /// Starts the committer on a thread of its own that owns the SQLite
    /// write connection `conn`. `wal_long` is raised by the checkpointer when
    /// the WAL should start over (`sql::start_checkpointer`).
    pub fn start_sqlite(conn: Conn, wal_long: Arc<AtomicBool>) -> Self {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(MAX_BATCH * 8);
        let committed = Arc::new(Notify::new());
        let signal = committed.clone();
        // Jobs are async code whose SQLite statements never wait; the thread
        // polls each batch to completion. Entering the runtime keeps any
        // tokio type a job might touch working.
        let runtime = tokio::runtime::Handle::current();
        let generation = Arc::new(AtomicU64::new(0));
        let bump = generation.clone();
        std::thread::Builder::new()
            .name("fieldhook-writer".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                run_sqlite(conn, rx, &signal, &bump, &wal_long);
            })
            .expect("spawning the SQLite writer thread");
        Self { tx, committed, webhooks_generation: Some(generation) }
    }

    /// Starts the committer on a dedicated connection of `pool`. Every
    /// commit also sends `NOTIFY <channel>`, so that the workers of other
    /// nodes wake at once.
    pub fn start_postgres(pool: PgPool, channel: &'static str) -> Self {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(MAX_BATCH * 8);
        let committed = Arc::new(Notify::new());
        tokio::spawn(run_postgres(pool, rx, committed.clone(), channel));
        Self { tx, committed, webhooks_generation: None }
    }

    /// How many commits so far changed webhooks or API keys (SQLite); `None`
    /// when this process cannot know (PostgreSQL).
    pub fn webhooks_generation(&self) -> Option<u64> {
        self.webhooks_generation.as_ref().map(|g| g.load(Ordering::Acquire))
    }

    /// Runs `f` inside the next group transaction and returns its result once
    /// that transaction has committed. If `f` fails, its writes are rolled
    /// back (and only its writes).
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        self.submit(Box::new(Once { f: Some(f), reply: Reply::new(reply) }), answer).await
    }

    /// Like [`write`](Self::write), for a job that only writes to the
    /// database and can therefore run again. Such jobs share a savepoint
    /// instead of taking one each: SQLite copies every page a savepoint
    /// first touches, and consecutive creates touch the same pages, so a
    /// savepoint per job was an eighth of the writer's time. When one of
    /// them fails, the jobs of its shared savepoint are undone and run
    /// again, each in a savepoint of its own — so a failure still rolls
    /// back only itself.
    pub async fn write_rerunnable<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        self.submit(Box::new(Again { f, reply: Reply::new(reply) }), answer).await
    }

    async fn submit<T>(&self, job: Box<dyn Job>, answer: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.tx.send(job).await.map_err(|_| Error::Internal(anyhow::anyhow!("the committer has stopped")))?;
        answer.await.map_err(|_| Error::Internal(anyhow::anyhow!("the committer dropped a job")))?
    }
}

/// What a SQLite batch changed, as the update hook saw it.
const WEBHOOKS_CHANGED: u8 = 1;
const REQUESTS_ADDED: u8 = 2;

/// Takes the jobs waiting now, up to [`MAX_BATCH`], after `first`.
fn gather(first: Box<dyn Job>, rx: &mut mpsc::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>) {
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

fn run_sqlite(
    mut conn: Conn,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    committed: &Notify,
    generation: &AtomicU64,
    wal_long: &AtomicBool,
) {
    // SQLite reports every row this connection changes. A change to the
    // tables the engine's webhook list is read from marks the batch, and so
    // does a new request: only such commits can give the engine new work
    // (results free slots, and the engine hears of those itself).
    let changes = Arc::new(AtomicU8::new(0));
    if let Conn::Sqlite(c) = &conn {
        let mark = changes.clone();
        c.update_hook(Some(move |action: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
            match (table, action) {
                ("webhooks" | "api_keys", _) => mark.fetch_or(WEBHOOKS_CHANGED, Ordering::Relaxed),
                ("requests", rusqlite::hooks::Action::SQLITE_INSERT) => {
                    mark.fetch_or(REQUESTS_ADDED, Ordering::Relaxed)
                }
                _ => 0,
            };
        }));
    }
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        gather(first, &mut rx, &mut batch);
        // Bumped before any caller hears back (so a paused webhook is never
        // served from the old list after the pause was acknowledged), and
        // whatever the outcome: a rolled-back change costs one extra read.
        let mut wake = false;
        let mut settled = || {
            let changed = changes.swap(0, Ordering::Relaxed);
            if changed & WEBHOOKS_CHANGED != 0 {
                generation.fetch_add(1, Ordering::Release);
            }
            wake = changed != 0;
        };
        match futures::executor::block_on(run_batch(&mut conn, &mut batch, None, &mut settled)) {
            Ok(()) if wake => committed.notify_waiters(),
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "group commit failed");
                if let Conn::Sqlite(c) = &conn
                    && !c.is_autocommit()
                {
                    let _ = c.execute_batch("ROLLBACK");
                }
            }
        }
        // Between batches, after the callers have their answers.
        if wal_long.load(Ordering::Relaxed)
            && let Conn::Sqlite(c) = &conn
            && super::sql::finish_checkpoint(c)
        {
            wal_long.store(false, Ordering::Relaxed);
        }
    }
}

async fn run_postgres(
    pool: PgPool,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    committed: Arc<Notify>,
    channel: &'static str,
) {
    let mut conn: Option<Conn> = None;
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        gather(first, &mut rx, &mut batch);
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match pool.acquire().await {
                Ok(c) => conn.insert(Conn::Postgres(c)),
                Err(e) => {
                    // Dropping the jobs drops their reply channels: each caller
                    // gets an internal error, nothing was written.
                    tracing::error!(error = %e, "committer cannot get a database connection");
                    batch.clear();
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        match run_batch(c, &mut batch, Some(channel), &mut || {}).await {
            Ok(()) => committed.notify_waiters(),
            Err(e) => {
                // The connection may be broken: start the next batch on a new one.
                tracing::error!(error = %e, "group commit failed");
                if let Some(Conn::Postgres(c)) = conn.take() {
                    let _ = sqlx::Connection::close(c.detach()).await;
                }
            }
        }
    }
}

/// Runs one batch in one transaction. `settled` runs once the transaction
/// is over (committed or rolled back) and before any job's caller is answered.
///
/// Each job runs in a savepoint, so that a failing one rolls back only
/// itself; consecutive rerunnable jobs share one ("a run"), and when one of
/// them fails, the run is undone and its jobs run again, one savepoint each.
async fn run_batch(
    conn: &mut Conn,
    batch: &mut Vec<Box<dyn Job>>,
    notify: Option<&'static str>,
    settled: &mut (dyn FnMut() + Send),
) -> std::result::Result<(), Arc<SqlError>> {
    let single = batch.len() == 1;
    metrics::histogram!(crate::metrics::COMMIT_BATCH).record(batch.len() as f64);
    let mut answers: Vec<Box<dyn Job>> = Vec::with_capacity(batch.len());
    // IMMEDIATE takes SQLite's write lock up front, so a CLI command writing
    // beside the server makes this wait (busy timeout) instead of failing.
    let begin = if conn.backend() == Backend::Sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
    if let Err(e) = conn.execute_raw(begin).await {
        batch.clear();
        settled();
        return Err(Arc::new(e));
    }
    let mut failure: Option<SqlError> = None;
    // The rerunnable jobs run since the shared savepoint was taken.
    let mut run: Vec<Box<dyn Job>> = Vec::new();
    for mut job in batch.drain(..) {
        if failure.is_some() {
            continue;
        }
        if single {
            // A lone job needs no savepoint: if it fails, the whole
            // transaction is rolled back, which is the same.
            if !job.run(conn).await {
                // Nothing to commit; roll back and answer with the job's error.
                let rolled = conn.execute_raw("ROLLBACK").await.map_err(Arc::new);
                settled();
                job.answer(Ok(()));
                return rolled;
            }
            answers.push(job);
        } else if job.rerunnable() {
            if run.is_empty()
                && let Err(e) = conn.execute_raw("SAVEPOINT run").await
            {
                failure = Some(e);
                continue;
            }
            let keep = job.run(conn).await;
            run.push(job);
            if !keep {
                // Undo the run and do it again, a savepoint per job.
                let undone = match conn.execute_raw("ROLLBACK TO SAVEPOINT run").await {
                    Ok(()) => conn.execute_raw("RELEASE SAVEPOINT run").await,
                    Err(e) => Err(e),
                };
                if let Err(e) = undone {
                    failure = Some(e);
                    continue;
                }
                for mut job in run.drain(..) {
                    if failure.is_none()
                        && let Err(e) = in_savepoint(conn, &mut job).await
                    {
                        failure = Some(e);
                    }
                    answers.push(job);
                }
            }
        } else {
            if let Err(e) = end_run(conn, &mut run, &mut answers).await {
                failure = Some(e);
                continue;
            }
            if let Err(e) = in_savepoint(conn, &mut job).await {
                failure = Some(e);
            }
            answers.push(job);
        }
    }
    if failure.is_none()
        && let Err(e) = end_run(conn, &mut run, &mut answers).await
    {
        failure = Some(e);
    }
    answers.append(&mut run);
    if failure.is_none()
        && let Some(channel) = notify
        && let Err(e) = conn.execute_raw(&format!("NOTIFY {channel}")).await
    {
        failure = Some(e);
    }
    let result = match failure {
        Some(e) => {
            let _ = conn.execute_raw("ROLLBACK").await;
            Err(Arc::new(e))
        }
        None => conn.execute_raw("COMMIT").await.map_err(Arc::new),
    };
    settled();
    for job in answers {
        job.answer(result.clone());
    }
    result
}

/// Releases the shared savepoint of a run of rerunnable jobs, if one is
/// open, and moves them to the answers.
async fn end_run(
    conn: &mut Conn,
    run: &mut Vec<Box<dyn Job>>,
    answers: &mut Vec<Box<dyn Job>>,
) -> std::result::Result<(), SqlError> {
    if run.is_empty() {
        return Ok(());
    }
    answers.append(run);
    conn.execute_raw("RELEASE SAVEPOINT run").await
}

/// Runs `job` in a savepoint of its own, released if it says to keep its
/// writes and rolled back otherwise. Fails only if the savepoint does.
async fn in_savepoint(conn: &mut Conn, job: &mut Box<dyn Job>) -> std::result::Result<(), SqlError> {
    conn.execute_raw("SAVEPOINT job").await?;
    if job.run(conn).await {
        conn.execute_raw("RELEASE SAVEPOINT job").await
    } else {
        conn.execute_raw("ROLLBACK TO SAVEPOINT job").await?;
        conn.execute_raw("RELEASE SAVEPOINT job").await
    }
}
