//! Storage of the versioned resources (jobs, clients, sites): the snapshot
//! document plus the columns lists filter on, and the generic create / save /
//! remove that bump versions and write the outbox events with the change.

use super::events;
use super::sql::{self, Conn, Query, SqlError};
use crate::clock::to_micros;
use crate::domain::client::Client;
use crate::domain::event::{Change, Context, Event, EventType};
use crate::domain::job::Job;
use crate::domain::site::Site;
use crate::domain::{EntityKind, Resource};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A value bound to a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Param {
    pub fn uuid(u: Option<Uuid>) -> Param {
        Param::Text(u.map(|u| u.to_string()))
    }

    fn bind(self, q: Query<'_>) -> Query<'_> {
        match self {
            Param::Text(v) => q.bind(v),
            Param::Int(v) => q.bind(v),
        }
    }
}

/// A resource that knows its filter columns.
pub trait Stored: Resource {
    /// Columns besides the common ones, in a fixed order.
    fn columns(&self) -> Vec<(&'static str, Param)>;
}

impl Stored for Client {
    fn columns(&self) -> Vec<(&'static str, Param)> {
        Vec::new()
    }
}

impl Stored for Site {
    fn columns(&self) -> Vec<(&'static str, Param)> {
        vec![("client_uuid", Param::uuid(self.client.as_ref().map(|c| c.uuid)))]
    }
}

impl Stored for Job {
    fn columns(&self) -> Vec<(&'static str, Param)> {
        let (worker, team) = self.assignee_ids();
        vec![
            ("serial_no", Param::Int(Some(self.serial_no))),
            ("external_order_id", Param::Text(self.external_order_id.clone())),
            ("status", Param::Text(Some(self.status.as_str().to_string()))),
            ("scheduled_at", Param::Int(self.scheduled_at.map(to_micros))),
            ("worker_uuid", Param::uuid(worker)),
            ("team_uuid", Param::uuid(team)),
            ("client_uuid", Param::uuid(self.client.as_ref().map(|c| c.uuid))),
            ("site_uuid", Param::uuid(self.site.as_ref().map(|s| s.uuid))),
        ]
    }
}

/// Finds a live resource of `account` by uuid, else by external_id (api.md:
/// "uuid is tried first"). `lock` takes a row lock for a following update.
pub async fn find<R: Stored>(conn: &mut Conn, account: Uuid, id: &str, lock: bool) -> Result<Option<R>> {
    let table = R::KIND.table();
    let lock = if lock { super::for_update(super::backend_of(conn)) } else { "" };
    if let Ok(uuid) = Uuid::parse_str(id) {
        // By primary key alone; the account and removal are checked on the
        // row. With `AND account_uuid = $2 AND removed = 0` in the query,
        // PostgreSQL took the partial unique index on (account_uuid,
        // external_id) WHERE removed = 0 while the table had no statistics
        // yet (any table younger than its first autovacuum analyse) and
        // filtered the account's every row: 5 ms per read at 11,000 jobs.
        let row = sql::query(&format!("SELECT doc, account_uuid, removed FROM {table} WHERE uuid = $1{lock}"))
            .bind(uuid.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(mut row) = row
            && row.try_get::<i64, _>("removed")? == 0
            && row.try_get::<String, _>("account_uuid")? == account.to_string()
        {
            return Ok(Some(serde_json::from_str(&row.take_text("doc")?)?));
        }
    }
    let doc: Option<String> = sql::query_scalar(&format!(
        "SELECT doc FROM {table} WHERE external_id = $1 AND account_uuid = $2 AND removed = 0{lock}"
    ))
    .bind(id)
    .bind(account.to_string())
    .fetch_optional(conn)
    .await?;
    doc.map(|d| serde_json::from_str(&d).map_err(Error::from)).transpose()
}

/// Whether a resource with this uuid ever existed in `account` (removed ones
/// included): their history stays readable.
pub async fn existed(conn: &mut Conn, kind: EntityKind, account: Uuid, uuid: Uuid) -> Result<bool> {
    let n: i64 =
        sql::query_scalar(&format!("SELECT COUNT(*) FROM {} WHERE uuid = $1 AND account_uuid = $2", kind.table()))
            .bind(uuid.to_string())
            .bind(account.to_string())
            .fetch_one(conn)
            .await?;
    Ok(n > 0)
}

fn external_id_taken(e: SqlError) -> Error {
    if super::unique_violation_on(&e, "external_id") {
        Error::invalid("external_id", "is used by another entity")
    } else {
        e.into()
    }
}

async fn insert<R: Stored>(conn: &mut Conn, account: Uuid, r: &R) -> Result<()> {
    let extra = r.columns();
    let mut cols = String::from("uuid, account_uuid, external_id, version, removed, doc, created_at, updated_at");
    let mut marks = String::from("$1, $2, $3, $4, 0, $5, $6, $6");
    for (i, (c, _)) in extra.iter().enumerate() {
        cols.push_str(", ");
        cols.push_str(c);
        marks.push_str(&format!(", ${}", i + 7));
    }
    let sql = format!("INSERT INTO {} ({cols}) VALUES ({marks})", R::KIND.table());
    let mut q = sql::query(&sql)
        .bind(r.uuid().to_string())
        .bind(account.to_string())
        .bind(r.external_id().map(str::to_string))
        .bind(r.version())
        .bind(serde_json::to_string(r)?)
        .bind(to_micros(r.updated_at()));
    for (_, p) in extra {
        q = p.bind(q);
    }
    q.execute(conn).await.map_err(external_id_taken)?;
    Ok(())
}

async fn update<R: Stored>(conn: &mut Conn, account: Uuid, r: &R, removed: bool) -> Result<()> {
    let extra = r.columns();
    let mut sets = String::from("external_id = $3, version = $4, removed = $5, doc = $6, updated_at = $7");
    for (i, (c, _)) in extra.iter().enumerate() {
        sets.push_str(&format!(", {c} = ${}", i + 8));
    }
    let sql = format!("UPDATE {} SET {sets} WHERE uuid = $1 AND account_uuid = $2", R::KIND.table());
    let mut q = sql::query(&sql)
        .bind(r.uuid().to_string())
        .bind(account.to_string())
        .bind(r.external_id().map(str::to_string))
        .bind(r.version())
        .bind(i64::from(removed))
        .bind(serde_json::to_string(r)?)
        .bind(to_micros(r.updated_at()));
    for (_, p) in extra {
        q = p.bind(q);
    }
    q.execute(conn).await.map_err(external_id_taken)?;
    Ok(())
}

/// Writes the CRUD event of `change`, then `extra` events, all at the
/// resource's current version.
async fn record_events<R: Stored>(
    conn: &mut Conn,
    account: Uuid,
    r: &R,
    change: Change,
    ctx: &Context,
    extra: &[EventType],
) -> Result<Vec<Event>> {
    let mut written = Vec::with_capacity(1 + extra.len());
    for event_type in std::iter::once(EventType::crud(R::KIND, change)).chain(extra.iter().copied()) {
        let event = Event::new(event_type, R::KIND.as_str(), r.uuid(), r.version(), ctx, r)?;
        events::record(conn, account, &event).await?;
        written.push(event);
    }
    Ok(written)
}

/// Stores a new resource (version 1) with its `*_created` event and `extra`.
pub async fn create<R: Stored>(
    conn: &mut Conn,
    account: Uuid,
    r: &R,
    ctx: &Context,
    extra: &[EventType],
) -> Result<Vec<Event>> {
    insert(conn, account, r).await?;
    record_events(conn, account, r, Change::Created, ctx, extra).await
}

/// Stores `new`, derived from `old`, as the next version with its
/// `*_updated` event and `extra` — unless nothing changed, in which case
/// nothing is written and `None` comes back.
pub async fn save<R: Stored>(
    conn: &mut Conn,
    account: Uuid,
    old: &R,
    mut new: R,
    ctx: &Context,
    now: DateTime<Utc>,
    extra: &[EventType],
) -> Result<Option<R>> {
    if !new.differs_from(old) {
        return Ok(None);
    }
    new.stamp(old.version() + 1, now);
    update(conn, account, &new, false).await?;
    record_events(conn, account, &new, Change::Updated, ctx, extra).await?;
    Ok(Some(new))
}

/// Removes a resource: its last snapshot gets the next version and the
/// `*_removed` event; it leaves lists and frees its external_id.
pub async fn remove<R: Stored>(
    conn: &mut Conn,
    account: Uuid,
    mut r: R,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<()> {
    let version = r.version() + 1;
    r.stamp(version, now);
    update(conn, account, &r, true).await?;
    record_events(conn, account, &r, Change::Removed, ctx, &[]).await?;
    Ok(())
}

/// Checks optimistic concurrency: the caller's `version`, if given, must be
/// the current one.
pub fn check_version<R: Resource>(current: &R, expected: Option<i64>) -> Result<()> {
    match expected {
        Some(v) if v != current.version() => Err(Error::Conflict(format!(
            "version {v} is not the current version {} of this {}",
            current.version(),
            R::KIND.as_str()
        ))),
        _ => Ok(()),
    }
}

/// How many live resources of `table` refer to `uuid` through `column`.
pub async fn count_refs(conn: &mut Conn, table: &str, column: &str, uuid: Uuid) -> Result<i64> {
    Ok(sql::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1 AND removed = 0"))
        .bind(uuid.to_string())
        .fetch_one(conn)
        .await?)
}

/// A comparison in a list filter.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Gt,
    Lt,
    In,
}

/// One condition of a list query, on a column the table indexes.
#[derive(Debug, Clone)]
pub struct Filter {
    pub column: &'static str,
    pub op: Op,
    pub values: Vec<Param>,
}

/// A page of a list: newest first, after the cursor.
#[derive(Debug, Clone)]
pub struct Page {
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// Lists the documents of a table (live rows of `account`), newest first.
/// `table` and filter columns are fixed by the caller, never user input.
pub async fn list_docs(
    conn: &mut Conn,
    table: &'static str,
    account: Uuid,
    has_removed: bool,
    filters: Vec<Filter>,
    page: &Page,
) -> Result<Vec<String>> {
    let mut sql = format!("SELECT doc FROM {table} WHERE account_uuid = $1");
    if has_removed {
        sql.push_str(" AND removed = 0");
    }
    let mut params: Vec<Param> = vec![Param::Text(Some(account.to_string()))];
    let mark = |params: &mut Vec<Param>, p: Param| {
        params.push(p);
        format!("${}", params.len())
    };
    if let Some(after) = page.after {
        let m = mark(&mut params, Param::uuid(Some(after)));
        sql.push_str(&format!(" AND uuid < {m}"));
    }
    for f in filters {
        let col = f.column;
        match f.op {
            Op::In => {
                let marks: Vec<String> = f.values.into_iter().map(|p| mark(&mut params, p)).collect();
                sql.push_str(&format!(" AND {col} IN ({})", marks.join(", ")));
            }
            op => {
                let sym = match op {
                    Op::Eq => "=",
                    Op::Gt => ">",
                    Op::Lt => "<",
                    Op::In => unreachable!(),
                };
                for p in f.values {
                    let m = mark(&mut params, p);
                    sql.push_str(&format!(" AND {col} {sym} {m}"));
                }
            }
        }
    }
    let m = mark(&mut params, Param::Int(Some(page.limit)));
    sql.push_str(&format!(" ORDER BY uuid DESC LIMIT {m}"));
    let mut q = sql::query(&sql);
    for p in params {
        q = p.bind(q);
    }
    let rows = q.fetch_all(conn).await?;
    rows.iter().map(|r| r.try_get::<String, _>("doc").map_err(Error::from)).collect()
}

/// The uuid and external_id of a live resource, for references.
pub async fn reference(
    conn: &mut Conn,
    kind: EntityKind,
    account: Uuid,
    by_uuid: Option<Uuid>,
    by_external_id: Option<&str>,
) -> Result<Option<(Uuid, Option<String>, String)>> {
    let (column, value) = match (by_uuid, by_external_id) {
        (Some(u), _) => ("uuid", u.to_string()),
        (None, Some(e)) => ("external_id", e.to_string()),
        (None, None) => return Ok(None),
    };
    let row = sql::query(&format!(
        "SELECT uuid, external_id, doc FROM {} WHERE {column} = $1 AND account_uuid = $2 AND removed = 0",
        kind.table()
    ))
    .bind(value)
    .bind(account.to_string())
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((r.try_get("uuid")?, r.try_get("external_id")?, r.try_get("doc")?))).transpose()
}
