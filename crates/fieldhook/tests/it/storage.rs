//! The SQLite storage layer: the write path under a steady stream of
//! commits, page sizes, and rows read in place.

use fieldhook::storage::sql;
use fieldhook::storage::{Db, OpenOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A SQLite database `name` in `dir`, with one table made by `create`.
async fn sqlite_with_table(dir: &tempfile::TempDir, name: &str, create: &'static str) -> Db {
    let path = dir.path().join(name);
    let db = Db::open(&format!("sqlite://{}", path.display()), OpenOptions::default()).await.unwrap();
    execute(&db, create).await;
    db
}

/// Runs one statement through the writer, as a write of its own.
async fn execute(db: &Db, statement: &'static str) {
    db.committer
        .write(move |c| {
            Box::pin(async move {
                sql::query(statement).execute(c).await?;
                Ok(())
            })
        })
        .await
        .unwrap();
}

/// SQLite rewinds the WAL only when a write transaction begins with every
/// frame copied back, which a steady stream of commits never leaves room
/// for: the WAL grew to gigabytes in the benchmark. The writer now makes
/// that room once the WAL is long, so it stays a fraction of what passes
/// through it. (Without that, this test saw the WAL grow with everything
/// written.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_wal_starts_over_under_a_steady_stream_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_with_table(&dir, "wal.db", "CREATE TABLE pad (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL)").await;
    let done = Arc::new(AtomicBool::new(false));
    // Readers beside the writer, as the API and the delivery engine are.
    let reader = tokio::spawn({
        let (db, done) = (db.clone(), done.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                let _: Option<i64> = sql::query_scalar("SELECT MAX(id) FROM pad").fetch_one(&db.read).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let wal = dir.path().join("wal.db-wal");
    let watcher = tokio::spawn({
        let done = done.clone();
        async move {
            let mut largest = 0;
            while !done.load(Ordering::Relaxed) {
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            largest
        }
    });
    // Rows of one page each from 8 writers at once, until about 200 MB have
    // gone through the WAL: an amount, not a time, as a slow machine writes
    // too little in a few seconds for the WAL to have had to start over
    // (it may grow to 4,096 frames first).
    let claimed_rows = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (db, claimed_rows) = (db.clone(), claimed_rows.clone());
            tokio::spawn(async move {
                let mut rows = 0;
                while claimed_rows.fetch_add(4, Ordering::Relaxed) < 48_000 {
                    db.committer
                        .write(|c| {
                            Box::pin(async move {
                                for _ in 0..4 {
                                    sql::query("INSERT INTO pad (bytes) VALUES (randomblob(4000))")
                                        .execute(&mut *c)
                                        .await?;
                                }
                                Ok(())
                            })
                        })
                        .await
                        .unwrap();
                    rows += 4;
                }
                rows
            })
        })
        .collect();
    let mut written_rows = 0;
    for w in writers {
        written_rows += w.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let largest = watcher.await.unwrap();
    let rows: i64 = sql::query_scalar("SELECT COUNT(*) FROM pad").fetch_one(&db.read).await.unwrap();
    assert_eq!(rows, written_rows);
    let written = written_rows as u64 * 4096;
    eprintln!("largest WAL {} MB of {} MB written", largest >> 20, written >> 20);
    assert!(largest < written / 2, "the WAL reached {largest} bytes of {written} written");
}

/// A new database gets the writer's page size (8 KiB, for the drain); a
/// database created with SQLite's default of 4 KiB keeps it, since in WAL
/// mode the size cannot change, and is opened and written as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_takes_8_kib_pages_and_an_older_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let page_size = |db: &Db| {
        let read = db.read.clone();
        async move { sql::query_scalar::<i64>("PRAGMA page_size").fetch_one(&read).await.unwrap() }
    };
    let new = sqlite_with_table(&dir, "new.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    assert_eq!(page_size(&new).await, 8192);

    let old_path = dir.path().join("old.db");
    {
        let old = rusqlite::Connection::open(&old_path).unwrap();
        old.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('before')")
            .unwrap();
    }
    let old = Db::open(&format!("sqlite://{}", old_path.display()), OpenOptions::default()).await.unwrap();
    assert_eq!(page_size(&old).await, 4096);
    execute(&old, "INSERT INTO t VALUES ('after')").await;
    let rows: i64 = sql::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&old.read).await.unwrap();
    assert_eq!(rows, 2);
}

/// `map_sqlite` (the drain's claims) reads each row's columns by position,
/// as SQLite holds them: integers, texts as their bytes (not re-checked),
/// uuids parsed from text. A column of another type is an error that names
/// the column, not a panic or a wrong value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_in_place_decode_by_position_and_a_mismatch_names_its_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_with_table(&dir, "in-place.db", "CREATE TABLE t (n INTEGER, id TEXT, body TEXT)").await;
    execute(
        &db,
        "INSERT INTO t VALUES (7, '0191f1e4-7c3a-7d2e-9a4b-5c6d7e8f9a0b', '{\"caf\u{e9}\":1}'), (8, 'not a uuid', 'x')",
    )
    .await;
    let mut conn = db.read.acquire().await.unwrap();
    let sql::Conn::Sqlite(c) = &mut *conn else { panic!("a SQLite database reads through SQLite") };

    let rows = sql::query("SELECT n, id, body FROM t WHERE n = $1")
        .bind(7i64)
        .map_sqlite(c, |r| Ok((r.int(0)?, r.uuid(1)?, r.bytes(2)?.to_vec())))
        .unwrap();
    let id = uuid::Uuid::parse_str("0191f1e4-7c3a-7d2e-9a4b-5c6d7e8f9a0b").unwrap();
    assert_eq!(rows, vec![(7, id, "{\"caf\u{e9}\":1}".as_bytes().to_vec())]);

    let not_a_uuid = sql::query("SELECT n, id FROM t WHERE n = 8").map_sqlite(c, |r| r.uuid(1)).unwrap_err();
    assert!(not_a_uuid.to_string().starts_with("column #1: "), "{not_a_uuid}");
    let text_for_int = sql::query("SELECT id FROM t WHERE n = 7").map_sqlite(c, |r| r.int(0)).unwrap_err();
    assert_eq!(text_for_int.to_string(), "column #0: expected an integer, found Text");
    let no_such = sql::query("SELECT n FROM t WHERE n = 7").map_sqlite(c, |r| r.int(3)).unwrap_err();
    assert!(no_such.to_string().starts_with("column #3: "), "{no_such}");
}

/// The writer commits while the syncer makes the previous batch durable;
/// a reader waits until what it read is durable before acting on it (the
/// delivery engine, after a claim). Under concurrent writes every write is
/// answered and every wait ends: a batch number the syncer never published,
/// or a writer waiting on a sync that never comes, would hang here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_settle_while_the_writer_runs_ahead_of_the_syncer() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_with_table(&dir, "sync.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    execute(&db, "INSERT INTO t DEFAULT VALUES").await;
                }
            })
        })
        .collect();
    let reader = tokio::spawn({
        let db = db.clone();
        async move {
            let mut seen = 0;
            while seen < 1600 {
                seen = sql::query_scalar::<i64>("SELECT COUNT(*) FROM t").fetch_one(&db.read).await.unwrap();
                tokio::time::timeout(Duration::from_secs(10), db.committer.reads_settled())
                    .await
                    .expect("what a finished read saw becomes durable");
            }
            seen
        }
    });
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w).await.expect("every write is answered").unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader).await.unwrap().unwrap();
    assert_eq!(seen, 1600);
}

/// A lone write that fails is rolled back whole, so its batch counts as not
/// committed: the delivery engine is not sent looking for requests that
/// were written and taken back (and no fsync is spent on it). A committed
/// write of a request does send it looking, which shows the count can move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_write_that_fails_leaves_the_requests_generation_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_with_table(&dir, "lone.db", "CREATE TABLE requests (id INTEGER PRIMARY KEY)").await;
    let insert = |fail: bool| {
        db.committer.write(move |c| {
            Box::pin(async move {
                sql::query("INSERT INTO requests DEFAULT VALUES").execute(c).await?;
                if fail {
                    return Err(fieldhook::error::Error::Conflict("taken back".into()));
                }
                Ok(())
            })
        })
    };
    let before = db.committer.requests_generation();
    assert!(insert(true).await.is_err());
    // A later write is settled after the failed one.
    db.committer.write(|_| Box::pin(async { Ok(()) })).await.unwrap();
    assert_eq!(db.committer.requests_generation(), before, "a rolled-back request moved the generation");
    insert(false).await.unwrap();
    assert_ne!(db.committer.requests_generation(), before);
    let rows: i64 = sql::query_scalar("SELECT COUNT(*) FROM requests").fetch_one(&db.read).await.unwrap();
    assert_eq!(rows, 1);
}
