//! Group commit. Every write of the server — an API change with its outbox
//! event, a delivery claim, a delivery result — is a job sent to the
//! committer, which runs the jobs that arrived together in ONE transaction on
//! one connection and commits (one fsync) for all of them. Each job runs in a
//! savepoint, so one failing job rolls back only itself. A job's caller gets
//! its answer only after the commit succeeded: acknowledged means durable.
//!
//! On SQLite the committer is an OS thread owning the one write connection:
//! its statements run synchronously (see `sql` for why). It does not wait
//! for the disk: a second thread, the syncer, makes each commit durable
//! (one `fdatasync` of the WAL for every commit that has arrived since the
//! last one) and only then answers its callers, hands its fresh requests to
//! the delivery engine and wakes it — while the writer already runs the
//! next batch ([`Syncer`]). On PostgreSQL it is a task on the runtime, as
//! its statements are network round trips.

use super::Backend;
use super::deliveries::Due;
use super::handoff::{Committed, Mark};
use super::sql::{Conn, SqlError};
use crate::error::{Error, Result};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::postgres::PgPool;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc, oneshot, watch};

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
    /// SQLite: bumped after each commit that wrote requests the delivery
    /// engine has not been handed (retries, resends, test events, or fresh
    /// ones it did not take), which only a claim finds.
    requests_generation: Option<Arc<AtomicU64>>,
    /// SQLite: where committed requests are handed over, if anywhere.
    sink: Option<Arc<Mutex<Option<Sink>>>>,
    /// SQLite: the batches begun so far, and the last one known durable
    /// (committed and synced, or rolled back): see [`Committer::reads_settled`].
    begun: Option<Arc<AtomicU64>>,
    durable: Option<watch::Receiver<u64>>,
    /// PostgreSQL: the payload of this committer's wake-up notifications,
    /// unique to it, so that this node's listener can skip its own (the
    /// engine hears of this node's commits through `committed`).
    wake_payload: Option<Arc<str>>,
}

/// Takes the fresh requests of a committed transaction (SQLite); says
/// whether it took them all. Called on the syncer thread once the commit is
/// durable, before its callers hear back: it must be quick and never block.
pub type Sink = Arc<dyn Fn(Vec<Due>) -> bool + Send + Sync>;

impl Committer {
    /// Starts the committer on a thread of its own that owns the SQLite
    /// write connection `conn` to the file at `path`, and the syncer beside
    /// it. `wal_long` is raised by the checkpointer when the WAL should
    /// start over (`sql::start_checkpointer`).
    pub fn start_sqlite(conn: Conn, path: &str, wal_long: Arc<AtomicBool>) -> Self {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(MAX_BATCH * 8);
        let committed = Arc::new(Notify::new());
        // Jobs are async code whose SQLite statements never wait; the thread
        // polls each batch to completion. Entering the runtime keeps any
        // tokio type a job might touch working.
        let runtime = tokio::runtime::Handle::current();
        let (durable_tx, durable) = watch::channel(0);
        let writer = Arc::new(Writer {
            committed: committed.clone(),
            webhooks_generation: Arc::default(),
            requests_generation: Arc::default(),
            sink: Arc::default(),
            wal_long,
            begun: Arc::default(),
            durable: durable_tx,
        });
        let handle = Self {
            tx,
            committed,
            webhooks_generation: Some(writer.webhooks_generation.clone()),
            requests_generation: Some(writer.requests_generation.clone()),
            sink: Some(writer.sink.clone()),
            begun: Some(writer.begun.clone()),
            durable: Some(durable),
            wake_payload: None,
        };
        let syncer = Syncer::start(&conn, path, writer.clone());
        std::thread::Builder::new()
            .name("fieldhook-writer".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                run_sqlite(conn, rx, &writer, syncer);
            })
            .expect("spawning the SQLite writer thread");
        handle
    }

    /// Starts the committer on a dedicated connection of `pool`. Every
    /// commit also sends `NOTIFY <channel>`, so that the workers of other
    /// nodes wake at once; its payload is [`Committer::wake_payload`].
    pub fn start_postgres(pool: PgPool, channel: &'static str) -> Self {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(MAX_BATCH * 8);
        let committed = Arc::new(Notify::new());
        let payload: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        // Sent with the COMMIT, in one simple query: one round trip.
        let commit = format!("NOTIFY {channel}, '{payload}'; COMMIT");
        tokio::spawn(run_postgres(pool, rx, committed.clone(), commit));
        Self {
            tx,
            committed,
            webhooks_generation: None,
            requests_generation: None,
            sink: None,
            begun: None,
            durable: None,
            wake_payload: Some(payload),
        }
    }

    /// PostgreSQL: the payload of the wake-up notifications this committer
    /// sends.
    pub fn wake_payload(&self) -> Option<&str> {
        self.wake_payload.as_deref()
    }

    /// How many commits so far changed webhooks or API keys (SQLite); `None`
    /// when this process cannot know (PostgreSQL).
    pub fn webhooks_generation(&self) -> Option<u64> {
        self.webhooks_generation.as_ref().map(|g| g.load(Ordering::Acquire))
    }

    /// How many commits so far wrote requests that only a claim finds
    /// (SQLite); `None` on PostgreSQL, where every request is claimed.
    pub fn requests_generation(&self) -> Option<u64> {
        self.requests_generation.as_ref().map(|g| g.load(Ordering::Acquire))
    }

    /// Waits until everything a read that has already finished can have
    /// seen is durable. On SQLite a commit is visible to readers as soon as
    /// its WAL frames are written, a moment before the syncer has them on
    /// disk; the delivery engine calls this after a claim, so that it never
    /// sends an event that a crash of the machine (not of the process,
    /// which keeps what the kernel holds) could still take back.
    /// PostgreSQL shows only durable commits: it returns at once.
    pub async fn reads_settled(&self) {
        let (Some(begun), Some(durable)) = (&self.begun, &self.durable) else { return };
        // Every commit a finished read saw began before this load.
        let seen = begun.load(Ordering::Acquire);
        let mut durable = durable.clone();
        // An error means the syncer has stopped: nothing more will settle.
        let _ = durable.wait_for(|d| *d >= seen).await;
    }

    /// Hands the fresh requests of every later commit to `sink` (or stops
    /// handing them over, with `None`). Only SQLite hands requests over;
    /// says whether this committer does.
    pub fn hand_to(&self, sink: Option<Sink>) -> bool {
        match &self.sink {
            Some(slot) => {
                *slot.lock().expect("hand-off sink lock") = sink;
                true
            }
            None => false,
        }
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

/// What the SQLite writer and syncer threads share with the [`Committer`]
/// handles.
struct Writer {
    committed: Arc<Notify>,
    webhooks_generation: Arc<AtomicU64>,
    requests_generation: Arc<AtomicU64>,
    sink: Arc<Mutex<Option<Sink>>>,
    wal_long: Arc<AtomicBool>,
    /// Batches begun: bumped before each `BEGIN`, so that any commit a
    /// reader can see has a number no larger than this.
    begun: Arc<AtomicU64>,
    /// The number of the last batch settled by the syncer.
    durable: watch::Sender<u64>,
}

/// A batch the writer has run, on its way through the syncer.
struct Ran {
    /// Its number ([`Writer::begun`]).
    number: u64,
    /// Whether its transaction committed.
    committed: bool,
    /// The jobs, and what they are answered (their own outcomes ride in
    /// their replies).
    jobs: Vec<Box<dyn Job>>,
    verdict: Verdict,
    /// Whether it changed webhooks or API keys, how many requests it wrote,
    /// and which of them it hands over, and to whom.
    webhooks_changed: bool,
    new_requests: usize,
    handed: Committed,
    sink: Option<Sink>,
}

fn run_sqlite(mut conn: Conn, mut rx: mpsc::Receiver<Box<dyn Job>>, writer: &Writer, syncer: Syncer) {
    // SQLite reports every row this connection changes. Only a change to
    // the tables the engine's webhook list is read from, or a new request,
    // can give the engine new work (results free slots, and the engine
    // hears of those itself). New requests are counted, to tell whether
    // the engine was handed them all.
    let webhooks_changed = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicUsize::new(0));
    if let Conn::Sqlite(c) = &conn {
        let (changed, count) = (webhooks_changed.clone(), inserted.clone());
        c.update_hook(Some(move |action: rusqlite::hooks::Action, _: &str, table: &str, _: i64| {
            match (table, action) {
                ("webhooks" | "api_keys", _) => changed.store(true, Ordering::Relaxed),
                ("requests", rusqlite::hooks::Action::SQLITE_INSERT) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }));
    }
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut durable = writer.durable.subscribe();
    while let Some(first) = rx.blocking_recv() {
        // One batch is synced while the next one runs, no more: a third
        // would be synced with the second anyway, so committing it early
        // gains nothing and splits the jobs arriving meanwhile into smaller
        // transactions (more commits, and the pages they share written to
        // the WAL once per commit).
        let number = writer.begun.load(Ordering::Acquire) + 1;
        let _ = futures::executor::block_on(durable.wait_for(|d| *d + 2 >= number));
        gather(first, &mut rx, &mut batch);
        let sink = writer.sink.lock().expect("hand-off sink lock").clone();
        if let Conn::Sqlite(c) = &mut conn {
            c.collect_handoffs(sink.is_some());
        }
        writer.begun.store(number, Ordering::Release);
        let mut jobs = Vec::with_capacity(batch.len());
        let ended = futures::executor::block_on(run_batch(&mut conn, &mut batch, "COMMIT", &mut jobs));
        let handed = conn.handoff().map(|h| h.take()).unwrap_or_default();
        if let Some(e) = &ended.failure {
            tracing::error!(error = %e, "group commit failed");
            if let Conn::Sqlite(c) = &conn
                && !c.is_autocommit()
            {
                let _ = c.execute_batch("ROLLBACK");
            }
        }
        syncer.settle(Ran {
            number,
            committed: ended.committed,
            jobs,
            verdict: ended.verdict,
            // Whatever the outcome: a rolled-back change costs one extra read.
            webhooks_changed: webhooks_changed.swap(false, Ordering::Relaxed),
            new_requests: inserted.swap(0, Ordering::Relaxed),
            handed,
            sink,
        });
        // Between batches; the callers hear back from the syncer.
        if writer.wal_long.load(Ordering::Relaxed)
            && let Conn::Sqlite(c) = &conn
            && super::sql::finish_checkpoint(c)
        {
            writer.wal_long.store(false, Ordering::Relaxed);
        }
    }
}

/// Makes the SQLite writer's commits durable, off its thread.
///
/// The writer connection commits with `synchronous = NORMAL`: in WAL mode a
/// commit then writes its frames to the WAL and returns without an fsync
/// (checkpoints still sync the WAL before copying it and the database
/// after). The syncer thread takes every batch committed since its last
/// turn, syncs the WAL file once for all of them, and only then settles
/// each in order: bumps the generations the delivery engine watches, hands
/// over fresh requests, wakes the engine and answers the callers. So an
/// answer still means durable, but the writer runs the next batch during
/// the fsync instead of waiting for it — under a create load it had been
/// waiting a third of the time.
///
/// Without a WAL file to sync (it could not be opened), the connection
/// keeps `synchronous = FULL`, each commit syncs itself, and the syncer
/// only settles.
struct Syncer {
    tx: std::sync::mpsc::Sender<Ran>,
}

/// The WAL file, opened to be synced.
struct Wal {
    path: String,
    file: std::fs::File,
    inode: u64,
}

impl Wal {
    fn open(path: String) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(&path)?;
        let inode = file.metadata()?.ino();
        Ok(Self { path, file, inode })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        self.file.sync_data()?;
        // SQLite removes the WAL only when its last connection closes, and
        // the writer's stays open; were the file replaced anyway, the new
        // one is what holds the commits.
        if let Ok(now) = std::fs::metadata(&self.path)
            && now.ino() != self.inode
        {
            *self = Self::open(self.path.clone())?;
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl Syncer {
    fn start(conn: &Conn, path: &str, writer: Arc<Writer>) -> Self {
        let wal = match Self::take_over_syncing(conn, path) {
            Ok(wal) => Some(wal),
            Err(e) => {
                tracing::warn!(error = %e, "commits will sync on the writer thread");
                None
            }
        };
        let (tx, rx) = std::sync::mpsc::channel::<Ran>();
        std::thread::Builder::new()
            .name("fieldhook-sync".into())
            .spawn(move || run_syncer(wal, rx, &writer))
            .expect("spawning the SQLite syncer thread");
        Self { tx }
    }

    /// Opens the WAL to sync it here, and stops the writer connection
    /// from syncing its commits itself.
    fn take_over_syncing(conn: &Conn, path: &str) -> std::result::Result<Wal, String> {
        let Conn::Sqlite(c) = conn else { return Err("not a SQLite connection".into()) };
        let wal = Wal::open(format!("{path}-wal")).map_err(|e| format!("cannot open the WAL file: {e}"))?;
        c.execute_batch("PRAGMA synchronous = NORMAL").map_err(|e| e.to_string())?;
        Ok(wal)
    }

    fn settle(&self, ran: Ran) {
        // The syncer stops only once this sender is gone.
        let _ = self.tx.send(ran);
    }
}

fn run_syncer(mut wal: Option<Wal>, rx: std::sync::mpsc::Receiver<Ran>, writer: &Writer) {
    let mut group = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        group.extend(rx.try_iter());
        if group.iter().any(|r| r.committed)
            && let Some(wal) = wal.as_mut()
            && let Err(e) = wal.sync()
        {
            // After a failed fsync the kernel may have dropped the pages it
            // could not write: what was committed is neither known durable
            // nor safe to report as failed. Start over from what is on disk
            // (PostgreSQL panics for the same reason).
            tracing::error!(error = %e, "syncing the WAL failed; stopping");
            eprintln!("fieldhook: syncing the SQLite WAL failed: {e}");
            std::process::abort();
        }
        let mut last = 0;
        for ran in group.drain(..) {
            last = ran.number;
            settle_sqlite(ran, writer);
        }
        writer.durable.send_replace(last);
    }
}

/// What follows a batch once it is durable (or rolled back).
fn settle_sqlite(ran: Ran, writer: &Writer) {
    // Bumped before any caller hears back, so that a paused webhook is never
    // served from the old list after the pause was acknowledged.
    if ran.webhooks_changed {
        writer.webhooks_generation.fetch_add(1, Ordering::Release);
    }
    if ran.committed {
        // Requests that were not handed over, or that the engine did not
        // take, are for a claim to find.
        let Committed { fresh, accounted } = ran.handed;
        let taken = fresh.is_empty() || ran.sink.is_some_and(|take| take(fresh));
        let to_claim = ran.new_requests > accounted || !taken;
        if to_claim {
            writer.requests_generation.fetch_add(1, Ordering::Release);
        }
        if ran.webhooks_changed || to_claim {
            writer.committed.notify_waiters();
        }
    }
    for job in ran.jobs {
        job.answer(ran.verdict.clone());
    }
}

async fn run_postgres(pool: PgPool, mut rx: mpsc::Receiver<Box<dyn Job>>, committed: Arc<Notify>, commit: String) {
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
        let mut jobs = Vec::with_capacity(batch.len());
        let ended = run_batch(c, &mut batch, &commit, &mut jobs).await;
        if ended.committed {
            committed.notify_waiters();
        }
        for job in jobs {
            job.answer(ended.verdict.clone());
        }
        if let Some(e) = ended.failure {
            // The connection may be broken: start the next batch on a new one.
            tracing::error!(error = %e, "group commit failed");
            if let Some(Conn::Postgres(c)) = conn.take() {
                let _ = sqlx::Connection::close(c.detach()).await;
            }
        }
    }
}

/// Runs one batch in one transaction; says how it ended, and moves the
/// jobs to `answers`, to be answered with its verdict (the caller answers,
/// once the transaction's fate is final). `commit` is the statement that
/// ends it well.
///
/// Each job runs in a savepoint, so that a failing one rolls back only
/// itself; consecutive rerunnable jobs share one ("a run"), and when one of
/// them fails, the run is undone and its jobs run again, one savepoint each.
async fn run_batch(
    conn: &mut Conn,
    batch: &mut Vec<Box<dyn Job>>,
    commit: &str,
    answers: &mut Vec<Box<dyn Job>>,
) -> Ended {
    let single = batch.len() == 1;
    metrics::histogram!(crate::metrics::COMMIT_BATCH).record(batch.len() as f64);
    // IMMEDIATE takes SQLite's write lock up front, so a CLI command writing
    // beside the server makes this wait (busy timeout) instead of failing.
    let begin = if conn.backend() == Backend::Sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
    if let Err(e) = conn.execute_raw(begin).await {
        // Nothing ran: the jobs go unanswered, so each caller hears that
        // its job was dropped.
        batch.clear();
        let e = Arc::new(e);
        return Ended { committed: false, failure: Some(e.clone()), verdict: Err(e) };
    }
    // Consecutive rerunnable jobs share a savepoint, and any other job
    // between them ends the run: the next run copies again the pages the
    // last one copied. Under an end-to-end load the delivery engine's result
    // writes arrive among the creates. The jobs of a batch were sent
    // concurrently — each caller awaits its own job before it sends another
    // — so any order is one they could have committed in: rerunnable jobs
    // go first (a stable sort), one run per batch.
    batch.sort_by_key(|job| !job.rerunnable());
    let mut failure: Option<SqlError> = None;
    // The rerunnable jobs run since the shared savepoint was taken, and
    // where their hand-offs began.
    let mut run: Vec<Box<dyn Job>> = Vec::new();
    let mut run_mark = Mark::default();
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
                conn.undo_handoffs(Mark::default());
                answers.push(job);
                return Ended { committed: false, failure: rolled.err(), verdict: Ok(()) };
            }
            answers.push(job);
        } else if job.rerunnable() {
            if run.is_empty() {
                if let Err(e) = conn.execute_raw("SAVEPOINT run").await {
                    failure = Some(e);
                    continue;
                }
                run_mark = conn.handoff_mark();
            }
            let keep = job.run(conn).await;
            run.push(job);
            if !keep {
                // Undo the run and do it again, a savepoint per job.
                let undone = match conn.execute_raw("ROLLBACK TO SAVEPOINT run").await {
                    Ok(()) => conn.execute_raw("RELEASE SAVEPOINT run").await,
                    Err(e) => Err(e),
                };
                conn.undo_handoffs(run_mark);
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
            if let Err(e) = end_run(conn, &mut run, answers).await {
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
        && let Err(e) = end_run(conn, &mut run, answers).await
    {
        failure = Some(e);
    }
    answers.append(&mut run);
    let result = match failure {
        Some(e) => {
            let _ = conn.execute_raw("ROLLBACK").await;
            Err(Arc::new(e))
        }
        // (PostgreSQL's COMMIT comes with a NOTIFY: should that fail, the
        // transaction is left aborted, and the connection is dropped.)
        None => conn.execute_raw(commit).await.map_err(Arc::new),
    };
    if result.is_err() {
        conn.undo_handoffs(Mark::default());
    }
    Ended { committed: result.is_ok(), failure: result.clone().err(), verdict: result }
}

/// What the jobs of a batch are answered (a job's own error rides in its
/// reply).
type Verdict = std::result::Result<(), Arc<SqlError>>;

/// How a batch's transaction ended.
struct Ended {
    /// Whether its writes are committed (a lone job that failed is rolled
    /// back: nothing to sync, hand over or wake anyone for).
    committed: bool,
    /// A failure of the transaction itself, after which the connection may
    /// be unusable.
    failure: Option<Arc<SqlError>>,
    verdict: Verdict,
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
    let mark = conn.handoff_mark();
    if job.run(conn).await {
        conn.execute_raw("RELEASE SAVEPOINT job").await
    } else {
        conn.undo_handoffs(mark);
        conn.execute_raw("ROLLBACK TO SAVEPOINT job").await?;
        conn.execute_raw("RELEASE SAVEPOINT job").await
    }
}
