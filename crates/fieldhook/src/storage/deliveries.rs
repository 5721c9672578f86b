//! The delivery engine's storage: which requests are due, claiming them,
//! and writing what happened (with the retry that follows a failure and the
//! webhook's failure streak) in one place.

use super::Backend;
use super::sql::{self, Conn};
use crate::clock::{from_micros, to_micros};
use crate::delivery::sender::Endpoint;
use crate::domain::event::Event;
use crate::domain::webhook::{Ordering, PayloadSigner, RetryPolicy, WebhookStatus};
use crate::error::Result;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::HeaderValue;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A webhook that may have due requests, with what sending needs.
#[derive(Debug, Clone)]
pub struct Target {
    pub uuid: Uuid,
    /// The webhook's URL, parsed once per read of the webhooks rather than
    /// per attempt.
    pub endpoint: Result<Arc<Endpoint>, String>,
    /// The `X-Planado-Secret` header's value, built once per read of the
    /// webhooks; `None` without a secret (or with one no header can carry).
    pub secret: Option<HeaderValue>,
    pub signer: PayloadSigner,
    pub ordering: Ordering,
    pub status: WebhookStatus,
    /// The key whose scopes the temporary token carries, while it is live.
    pub token_key: Option<Uuid>,
    /// When a suspended webhook gets its next probe.
    pub next_probe_at: Option<DateTime<Utc>>,
}

impl Target {
    /// Whether to serve it at `now`: active, or suspended with its probe due.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            WebhookStatus::Active => true,
            WebhookStatus::Suspended => self.next_probe_at.is_some_and(|at| at <= now),
            WebhookStatus::Paused => false,
        }
    }
}

/// The webhooks that may be served: active and suspended ones (which of the
/// latter are due for a probe depends on the time: [`Target::is_due`]).
/// Shared, as every attempt in flight refers to its webhook.
pub async fn targets(conn: &mut Conn) -> Result<Vec<Arc<Target>>> {
    let rows = sql::query(
        "SELECT w.uuid, w.url, w.secret, w.signing_secret, w.ordering, w.status, w.created_by_key, \
         w.next_probe_at, k.revoked_at AS key_revoked, k.uuid AS key_uuid \
         FROM webhooks w LEFT JOIN api_keys k ON k.uuid = w.created_by_key \
         WHERE w.removed = 0 AND w.status IN ('active', 'suspended')",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let key_live = r.try_get::<Option<String>, _>("key_uuid")?.is_some()
                && r.try_get::<Option<i64>, _>("key_revoked")?.is_none();
            let url: String = r.try_get("url")?;
            Ok(Arc::new(Target {
                uuid: r.try_get("uuid")?,
                endpoint: Endpoint::parse(&url).map(Arc::new),
                secret: r.try_get::<Option<String>, _>("secret")?.and_then(|s| {
                    // Marked sensitive: the `Debug` of a target does not show it.
                    let mut value = HeaderValue::from_str(&s).ok()?;
                    value.set_sensitive(true);
                    Some(value)
                }),
                signer: PayloadSigner::new(&r.try_get::<String, _>("signing_secret")?),
                ordering: Ordering::parse(&r.try_get::<String, _>("ordering")?),
                status: WebhookStatus::parse(&r.try_get::<String, _>("status")?),
                token_key: if key_live { Some(r.try_get("created_by_key")?) } else { None },
                next_probe_at: r.try_get::<Option<i64>, _>("next_probe_at")?.map(from_micros),
            }))
        })
        .collect()
}

/// A request to make now.
///
/// It holds what an attempt needs, not the whole row: a retry copies the
/// rest (account, event type, entity) from the request it follows
/// ([`insert_retry`]), so that neither a claim nor the fan-out's hand-off
/// makes four strings per request that only a failure would read.
#[derive(Debug, Clone)]
pub struct Due {
    pub request: Uuid,
    pub webhook: Uuid,
    pub event_uuid: Uuid,
    pub entity_version: i64,
    pub attempt_no: i64,
    pub retry_no: i64,
    /// The exact body to send (shared by the webhooks an event was handed
    /// to, see [`super::handoff`]).
    pub body: Bytes,
    /// When the event was committed (for the delivery latency metric).
    pub event_created_at: DateTime<Utc>,
    /// SQLite: the request's rowid, so that its result is written without
    /// a look-up through the uuid index ([`mark_sent`]).
    pub row: Option<i64>,
}

impl Due {
    /// The first attempt of `event` for `webhook`: request `request`, just
    /// written by the fan-out.
    pub fn first(request: Uuid, row: Option<i64>, webhook: Uuid, event: &Event, body: Bytes) -> Self {
        Due {
            request,
            webhook,
            event_uuid: event.uuid,
            entity_version: event.entity_version,
            attempt_no: 1,
            retry_no: 0,
            body,
            event_created_at: event.created_at,
            row,
        }
    }
}

/// Claims up to `limit` due requests of one webhook, oldest first, for
/// `lease` (PostgreSQL: a row lease other nodes respect; SQLite has one
/// sending process, which tracks its in-flight requests itself). With entity
/// ordering, a request waits while an earlier event of the same resource is
/// still pending for this webhook. A `probe` takes the oldest pending
/// request whether it is due or not.
///
/// On PostgreSQL the claim is a transaction of its own ([`claim_leased`]).
/// It takes at most `limit` (the caller's room: what this node's POSTs
/// under way leave of `max_in_flight`), and never more than `max_in_flight`
/// less the live leases of the other nodes.
///
/// With `from`, the claim starts at that position in claim order (after
/// it, on PostgreSQL). Returns the claimed requests and the position of the
/// last one.
#[allow(clippy::too_many_arguments)]
pub async fn claim(
    conn: &mut Conn,
    target: &Target,
    limit: i64,
    max_in_flight: i64,
    now: DateTime<Utc>,
    probe: bool,
    lease: Duration,
    node: &str,
    from: Option<Position>,
) -> Result<(Vec<Due>, Option<Position>)> {
    let now_us = to_micros(now);
    let due_by = if probe { i64::MAX } else { now_us };
    let Conn::Sqlite(sqlite) = conn else {
        let until = to_micros(now + chrono::TimeDelta::from_std(lease).unwrap_or_default());
        let bounds = Leasing { limit, max_in_flight, now: now_us, due_by, until };
        return claim_leased(conn, target, bounds, node, target.ordering == Ordering::Entity, from).await;
    };
    let ordered = ordered_clause(target);
    // From a position in claim order (see `due_positions`).
    let (from, from_send_at, from_uuid) = match from {
        Some(p) => (" AND (r.send_at, r.uuid) >= ($5, $6)", p.send_at, p.uuid.to_string()),
        None => ("", 0, String::new()),
    };
    let text = format!(
        "SELECT r.uuid, r.event_uuid, r.entity_version, r.attempt_no, r.retry_no, e.body, e.created_at, \
         r.rowid AS row, r.send_at FROM requests r JOIN events e ON e.uuid = r.event_uuid \
         WHERE {DUE_NOW}{ordered}{from} ORDER BY r.send_at, r.uuid LIMIT $3"
    );
    let mut q = sql::query(&text).bind(target.uuid.to_string()).bind(now_us).bind(limit).bind(due_by);
    if !from.is_empty() {
        q = q.bind(from_send_at).bind(from_uuid);
    }
    // Read in place (`map_sqlite`): a drain's claims read hundreds of rows,
    // each with its event's body. The columns by position, as selected.
    let mut end = None;
    let due = q.map_sqlite(sqlite, |r| {
        let request = r.uuid(0)?;
        end = Some(Position { send_at: r.int(8)?, uuid: request });
        Ok(Due {
            request,
            webhook: target.uuid,
            event_uuid: r.uuid(1)?,
            entity_version: r.int(2)?,
            attempt_no: r.int(3)?,
            retry_no: r.int(4)?,
            body: Bytes::copy_from_slice(r.bytes(5)?),
            event_created_at: from_micros(r.int(6)?),
            row: Some(r.int(7)?),
        })
    })?;
    Ok((due, end))
}

/// Due now and not leased: `$1` the webhook, `$2` now, `$4` the latest
/// `send_at` to take (now, or any for a probe).
const DUE_NOW: &str = "r.webhook_uuid = $1 AND r.status = 'scheduled' AND r.send_at <= $4 \
     AND (r.claimed_until IS NULL OR r.claimed_until < $2)";

/// The numbers of a PostgreSQL claim, in microseconds where they are times.
struct Leasing {
    /// At most this many requests (the caller's room).
    limit: i64,
    /// The webhook's in-flight bound, shared with the other nodes.
    max_in_flight: i64,
    now: i64,
    /// The latest `send_at` to take.
    due_by: i64,
    /// The lease's end.
    until: i64,
}

/// PostgreSQL's claim, in one round trip: one simple query locks the
/// webhook's row, runs the claim statement, which checks the webhook's
/// status, counts the other nodes' leases, and picks, leases and reads the
/// requests, and commits.
///
/// The row lock orders this claim with a pause, a resume or a removal of
/// the webhook, and with the other nodes' claims for it. The status is read
/// again under it: the list `target` came from may predate a pause that has
/// been acknowledged since, and nothing is sent after that (webhooks.md).
/// The lock is taken by a statement of its own, so that the claim statement
/// starts with a snapshot (READ COMMITTED takes one per statement) that
/// sees every commit made before the lock was granted: a pause, and the
/// leases of a claim this one waited for. It is `NO KEY UPDATE`, the lock
/// those changes themselves take, not `UPDATE`: every request a transaction
/// inserts holds a key-share lock on its webhook's row (the foreign key)
/// until it commits, and `FOR UPDATE` waited for each group commit of new
/// events (docs/benchmarks.md, fifteenth round).
///
/// This node's own leases are not counted against the bound: they are
/// requests whose POST has ended and whose result waits for the next batch
/// to be written, and counting them held a drain to `max_in_flight`
/// requests per round of claim, POST and recorded result (fifteenth
/// round). The bound holds across nodes all the same: a node's POSTs never
/// exceed its leases, and a claim leaves room for every lease of the
/// others. A claim lost in a crash only means a resend, so it commits
/// without waiting for the disk.
///
/// With `after`, only requests after that position in claim order are
/// taken: a drain's claims step over the dead index entries its own leases
/// and results left at the head of the claim index (docs/benchmarks.md,
/// sixteenth round); the caller decides when that is safe.
///
/// Until the twenty-third round the lock, the claim and the commit were
/// three round trips, and a webhook's slots waited for all three between
/// its POSTs. A simple query carries no parameters, so the claim statement
/// is prepared on each connection (`PREPARE`, on the first claim that
/// finds it missing) and run with `EXECUTE` and literal arguments. It is
/// planned once per connection, not at every run: PostgreSQL otherwise
/// plans a prepared statement's first five runs and often keeps doing so,
/// and planning took 0.4–0.9 ms of a claim's ~1.5 ms here (sixteenth
/// round). No literal in it would make a better plan: its limit is a
/// subquery, and the claim index serves any webhook and time.
async fn claim_leased(
    conn: &mut Conn,
    target: &Target,
    bounds: Leasing,
    node: &str,
    ordered: bool,
    after: Option<Position>,
) -> Result<(Vec<Due>, Option<Position>)> {
    let Leasing { limit, max_in_flight, now, due_by, until } = bounds;
    let statement = ClaimStatement { ordered, after: after.is_some() };
    let webhook = literal(&target.uuid.to_string());
    let mut args = format!(
        "{webhook}, {now}, {limit}, {due_by}, {}, {until}, {}, {max_in_flight}",
        literal(node),
        literal(target.status.as_str())
    );
    if let Some(p) = after {
        args.push_str(&format!(", {}, {}", p.send_at, literal(&p.uuid.to_string())));
    }
    let text = format!(
        "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_generic_plan; \
         SELECT 1 FROM webhooks WHERE uuid = {webhook} FOR NO KEY UPDATE; \
         EXECUTE {name}({args}); COMMIT",
        name = statement.name()
    );
    let mut prepared = false;
    let mut sets = loop {
        match conn.fetch_each_raw(&text).await {
            Ok(sets) => break sets,
            Err(e) => {
                // A pooled connection must not go back inside a transaction.
                let _ = conn.execute_raw("ROLLBACK").await;
                if prepared || !statement.is_missing(&e) {
                    return Err(e.into());
                }
                conn.execute_raw(&statement.prepare()).await?;
                prepared = true;
            }
        }
    };
    // The statements' rows, in order: BEGIN, the two SETs, the lock, the
    // claim, COMMIT.
    const CLAIMED: usize = 4;
    if sets.len() != CLAIMED + 2 {
        return Err(anyhow::anyhow!("a claim ran {} statements, not {}", sets.len(), CLAIMED + 2).into());
    }
    let rows = std::mem::take(&mut sets[CLAIMED]);
    let end = last_position(&rows)?;
    Ok((dues(rows, target)?, end))
}

/// A text as an SQL string literal. The claim's texts are this server's
/// own values (uuids, a status), quoted all the same.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One of the four forms of the PostgreSQL claim statement: with entity
/// ordering or not, from a position in claim order or from the head.
#[derive(Debug, Clone, Copy)]
struct ClaimStatement {
    ordered: bool,
    after: bool,
}

impl ClaimStatement {
    /// Its name on a connection.
    fn name(self) -> &'static str {
        match (self.ordered, self.after) {
            (false, false) => "fieldhook_claim",
            (false, true) => "fieldhook_claim_after",
            (true, false) => "fieldhook_claim_ordered",
            (true, true) => "fieldhook_claim_ordered_after",
        }
    }

    /// Whether `e` says the connection has not prepared it yet.
    fn is_missing(self, e: &sql::SqlError) -> bool {
        matches!(e, sql::SqlError::Database { message, .. }
            if message.contains("prepared statement") && message.contains(&format!("\"{}\"", self.name())))
    }

    /// The statement that prepares it: `$1` the webhook, `$2` now, `$3`
    /// the caller's room, `$4` the latest `send_at` to take, `$5` this
    /// node, `$6` the lease's end, `$7` the status the caller's list
    /// says, `$8` the in-flight bound; with `after`, `$9` and `$10` the
    /// position.
    fn prepare(self) -> String {
        let ordered = if self.ordered { ENTITY_ORDERED } else { "" };
        let (after, after_types) =
            if self.after { (" AND (r.send_at, r.uuid) > ($9, $10)", ", BIGINT, TEXT") } else { ("", "") };
        format!(
            "PREPARE {name} (TEXT, BIGINT, BIGINT, BIGINT, TEXT, BIGINT, TEXT, BIGINT{after_types}) AS \
             WITH live AS (SELECT 1 FROM webhooks WHERE uuid = $1 AND removed = 0 AND status = $7), \
             others AS (SELECT COUNT(*) AS n FROM requests WHERE webhook_uuid = $1 AND status = 'scheduled' \
             AND claimed_until IS NOT NULL AND claimed_until >= $2 AND claimed_by <> $5), \
             picked AS (SELECT r.uuid FROM requests r WHERE EXISTS (SELECT 1 FROM live) AND {DUE_NOW}{ordered}{after} \
             ORDER BY r.send_at, r.uuid LIMIT GREATEST(LEAST($3, $8) - (SELECT n FROM others), 0) \
             FOR UPDATE OF r SKIP LOCKED), \
             leased AS (UPDATE requests q SET claimed_by = $5, claimed_until = $6 FROM picked \
             WHERE q.uuid = picked.uuid \
             RETURNING q.uuid, q.event_uuid, q.entity_version, q.attempt_no, q.retry_no, q.send_at) \
             SELECT l.uuid, l.event_uuid, l.entity_version, l.attempt_no, l.retry_no, e.body, e.created_at, \
             NULL AS row, l.send_at FROM leased l JOIN events e ON e.uuid = l.event_uuid ORDER BY l.send_at, l.uuid",
            name = self.name()
        )
    }
}

/// Where the last of a PostgreSQL claim's rows (in claim order) stands.
fn last_position(rows: &[sql::Row]) -> Result<Option<Position>> {
    match rows.last() {
        Some(r) => Ok(Some(Position { send_at: r.try_get("send_at")?, uuid: r.try_get("uuid")? })),
        None => Ok(None),
    }
}

/// The requests a PostgreSQL claim read, ready to send. (SQLite's claims
/// decode their rows in place, in [`claim`].)
fn dues(rows: Vec<sql::Row>, target: &Target) -> Result<Vec<Due>> {
    rows.into_iter()
        .map(|mut r| {
            // The texts move out of the row rather than being copied: a
            // claim reads hundreds of rows.
            let body = Bytes::from(r.take_text("body")?);
            let r = &r;
            Ok(Due {
                request: r.try_get("uuid")?,
                webhook: target.uuid,
                event_uuid: r.try_get("event_uuid")?,
                entity_version: r.try_get("entity_version")?,
                attempt_no: r.try_get("attempt_no")?,
                retry_no: r.try_get("retry_no")?,
                body,
                event_created_at: from_micros(r.try_get("created_at")?),
                row: r.try_get("row")?,
            })
        })
        .collect()
}

/// With entity ordering, a request waits while an earlier event of the same
/// resource is still pending for the same webhook. (Every scheduled request
/// of an entity-ordered webhook has `entity_ordered = 1`: see migration
/// 0006; the term lets the query use the partial index.)
const ENTITY_ORDERED: &str = " AND NOT EXISTS (SELECT 1 FROM requests p WHERE p.webhook_uuid = r.webhook_uuid \
     AND p.entity_uuid = r.entity_uuid AND p.status = 'scheduled' AND p.entity_ordered = 1 \
     AND (p.entity_version < r.entity_version \
          OR (p.entity_version = r.entity_version AND p.event_uuid < r.event_uuid)))";

/// The claim's condition for `target`'s ordering.
fn ordered_clause(target: &Target) -> &'static str {
    if target.ordering == Ordering::Entity { ENTITY_ORDERED } else { "" }
}

/// A request's place in claim order (`send_at`, then `uuid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub send_at: i64,
    pub uuid: Uuid,
}

/// SQLite: where the first `limit` due requests of one webhook stand in
/// claim order, without reading the requests themselves (the claim index
/// covers it). The sending process has no lease to hide the requests it
/// holds, so a claim would return those first, bodies and all, only for
/// them to be skipped; with these positions it can start [`claim`] at the
/// first one it does not hold.
pub fn due_positions(conn: &mut Conn, target: &Target, limit: i64, now: DateTime<Utc>) -> Result<Vec<Position>> {
    let Conn::Sqlite(sqlite) = conn else {
        return Err(sql::SqlError::Unsupported("claim positions are read on SQLite only").into());
    };
    let positions = sql::query(&format!(
        "SELECT r.send_at, r.uuid FROM requests r \
         WHERE r.webhook_uuid = $1 AND r.status = 'scheduled' AND r.send_at <= $2{} \
         ORDER BY r.send_at, r.uuid LIMIT $3",
        ordered_clause(target)
    ))
    .bind(target.uuid.to_string())
    .bind(to_micros(now))
    .bind(limit)
    .map_sqlite(sqlite, |r| Ok(Position { send_at: r.int(0)?, uuid: r.uuid(1)? }))?;
    Ok(positions)
}

/// When the next scheduled request of an active webhook falls due, if any.
/// One index probe per active webhook, never a scan of the backlog.
pub async fn next_due_at(conn: &mut Conn) -> Result<Option<DateTime<Utc>>> {
    let next: Option<i64> = sql::query_scalar(
        "SELECT MIN(next) FROM (SELECT (SELECT MIN(r.send_at) FROM requests r \
         WHERE r.webhook_uuid = w.uuid AND r.status = 'scheduled') AS next \
         FROM webhooks w WHERE w.status = 'active' AND w.removed = 0) AS per_webhook",
    )
    .fetch_one(conn)
    .await?;
    Ok(next.map(from_micros))
}

/// What a batch of attempts led to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub attempts: usize,
    /// Retries scheduled.
    pub retries: usize,
    /// Events whose retries ran out.
    pub exhausted: usize,
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub due: Due,
    /// Whether the webhook was suspended and this was its probe.
    pub probe: bool,
    pub sent_at: DateTime<Utc>,
    pub elapsed_ms: i64,
    pub response_code: Option<u16>,
    /// JSON object of the response headers.
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub error_type: Option<&'static str>,
    pub error_description: Option<String>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.response_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// Writes a batch of attempts: each request row gets its outcome, a failure
/// gets its retry (or is marked exhausted), and each webhook's failure
/// streak, suspension and probe time move on — one read and at most one
/// write per webhook per batch. On PostgreSQL the outcomes are written with
/// a few multi-row statements ([`mark_sent`]), not one per attempt: every
/// statement is a round trip there, and the leases of unrecorded requests
/// count against each webhook's in-flight bound. A request already
/// finished elsewhere (e.g. after a lost lease) is skipped.
///
/// A batch's retries are written in the order of their events (commit
/// time, then version), not in the order the answers came back: of
/// parallel requests refused together, that order is a shuffle. One
/// webhook's retries share a jitter draw ([`RetryPolicy::jitter_unit`]), so
/// they fall due in that order too: claims take equal `send_at`s by request
/// uuid, and those are made in writing order.
pub async fn record(
    conn: &mut Conn,
    attempts: &mut [Attempt],
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<Recorded> {
    let mut recorded = Recorded::default();
    // The retry that follows each failure. Probes of a suspended webhook
    // cost no retry budget; their request simply waits again.
    let retries: Vec<Option<(i64, DateTime<Utc>)>> = attempts
        .iter()
        .map(|a| {
            if a.succeeded() {
                None
            } else if a.probe {
                Some((a.due.retry_no, now))
            } else {
                let failures = a.due.retry_no + 1;
                policy
                    .delay(failures as u32, RetryPolicy::jitter_unit(a.due.webhook, failures as u32), a.retry_after)
                    .map(|d| (failures, now + chrono::TimeDelta::from_std(d).unwrap_or_default()))
            }
        })
        .collect();
    let outcomes: Vec<&'static str> = attempts
        .iter()
        .zip(&retries)
        .map(|(a, retry)| match (a.succeeded(), retry) {
            (true, _) => "success",
            (false, Some(_)) => "failed",
            (false, None) => "exhausted",
        })
        .collect();
    let mut marked = mark_sent(conn, attempts, &outcomes).await?;
    // Per webhook, in order: (succeeded, answered 410).
    let mut streaks: Vec<(Uuid, Vec<(bool, bool)>)> = Vec::new();
    let mut follow_ups: Vec<(&Due, i64, DateTime<Utc>)> = Vec::new();
    for (a, retry) in attempts.iter().zip(retries) {
        // Taken out, so that a request listed twice is recorded once.
        if !marked.remove(&a.due.request) {
            continue;
        }
        let success = a.succeeded();
        recorded.attempts += 1;
        match (success, retry) {
            (true, _) => {}
            (false, None) => recorded.exhausted += 1,
            (false, Some((retry_no, send_at))) => {
                recorded.retries += 1;
                follow_ups.push((&a.due, retry_no, send_at));
            }
        }
        let entry = match streaks.iter_mut().find(|(w, _)| *w == a.due.webhook) {
            Some(e) => e,
            None => {
                streaks.push((a.due.webhook, Vec::new()));
                streaks.last_mut().expect("just pushed")
            }
        };
        entry.1.push((success, a.response_code == Some(410)));
    }
    follow_ups.sort_by_key(|(d, _, _)| (d.webhook, d.event_created_at, d.entity_version));
    for (d, retry_no, send_at) in follow_ups {
        insert_retry(conn, d.request, d.attempt_no + 1, retry_no, to_micros(send_at), to_micros(now)).await?;
    }
    for (webhook, results) in streaks {
        update_streak(conn, webhook, &results, policy, now).await?;
    }
    Ok(recorded)
}

/// The request that follows a failed attempt of `request`: the same event
/// for the same webhook, copied from its row, due at `send_at`.
async fn insert_retry(
    conn: &mut Conn,
    request: Uuid,
    attempt_no: i64,
    retry_no: i64,
    send_at: i64,
    created_at: i64,
) -> Result<()> {
    use super::webhooks::{insert_request_into, sqlite_entity_ordered};
    macro_rules! insert_retry_with_entity_ordered {
        ($entity_ordered:expr) => {
            concat!(
                insert_request_into!(),
                "SELECT $1, r.account_uuid, r.webhook_uuid, r.event_uuid, r.event_type, r.entity_type, \
                 r.entity_uuid, r.entity_version, $2, $3, 'scheduled', $4, $5, ",
                $entity_ordered,
                " FROM requests r WHERE r.uuid = $6"
            )
        };
    }
    let sql = match conn.backend() {
        Backend::Sqlite => insert_retry_with_entity_ordered!(sqlite_entity_ordered!("r.webhook_uuid")),
        Backend::Postgres => insert_retry_with_entity_ordered!("1"),
    };
    sql::query(sql)
        .bind(Uuid::now_v7().to_string())
        .bind(attempt_no)
        .bind(retry_no)
        .bind(send_at)
        .bind(created_at)
        .bind(request.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Rows per statement of [`mark_sent`], largest first. A batch is split
/// along these sizes, so that a handful of statement texts (each prepared
/// once per connection) serve every batch size.
const MARK_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Marks the attempts' requests sent, with their outcomes, if they are
/// still scheduled; returns the requests it marked.
///
/// On PostgreSQL one `UPDATE … FROM (VALUES …)` per chunk (the casts give
/// the VALUES columns their types); on SQLite one `UPDATE` per attempt.
async fn mark_sent(
    conn: &mut Conn,
    attempts: &mut [Attempt],
    outcomes: &[&'static str],
) -> Result<crate::delivery::UuidSet> {
    let mut marked = crate::delivery::UuidSet::with_capacity_and_hasher(attempts.len(), Default::default());
    if conn.backend() == Backend::Sqlite {
        // In process, a statement costs no round trip, and SQLite runs
        // UPDATE … FROM as a join through a temporary table: a drain took
        // a third more CPU with it. So one UPDATE per attempt.
        // By rowid where the claim or the fan-out knew it (the uuid is
        // still compared: a rowid can be reused once its row is deleted).
        // No lease to clear: SQLite claims write none.
        macro_rules! mark_sent_where {
            ($condition:literal) => {
                concat!(
                    "UPDATE requests SET status = 'sent', outcome = $2, sent_at = $3, request_time_ms = $4, \
                     http_response_code = $5, http_response_headers = $6, http_response_body = $7, \
                     error_type = $8, error_description = $9 WHERE ",
                    $condition,
                    " AND status = 'scheduled'"
                )
            };
        }
        // Room for the parameters at once, the rowid included: bound one by
        // one into an empty list, they grew it three times per statement.
        let queries = attempts
            .iter_mut()
            .zip(outcomes)
            .map(|(a, outcome)| match a.due.row {
                Some(row) => {
                    let q = sql::query(mark_sent_where!("rowid = $10 AND uuid = $1")).reserve(SENT_PARAMS + 1);
                    bind_sent(q, a, outcome).bind(row)
                }
                None => bind_sent(sql::query(mark_sent_where!("uuid = $1")).reserve(SENT_PARAMS), a, outcome),
            })
            .collect();
        let changed = sql::execute_each(conn, queries).await?;
        for (a, changed) in attempts.iter().zip(changed) {
            if changed > 0 {
                marked.insert(a.due.request);
            }
        }
        return Ok(marked);
    }
    let mut at = 0;
    while at < attempts.len() {
        let left = attempts.len() - at;
        let (size, text) = mark_statements().iter().find(|(n, _)| *n <= left).expect("chunks end with 1");
        let mut q = sql::query(text).reserve(size * SENT_PARAMS);
        for (a, outcome) in attempts[at..at + size].iter_mut().zip(&outcomes[at..at + size]) {
            q = bind_sent(q, a, outcome);
        }
        for row in q.fetch_all(&mut *conn).await? {
            marked.insert(row.try_get("uuid")?);
        }
        at += size;
    }
    Ok(marked)
}

/// How many parameters [`bind_sent`] binds per attempt.
const SENT_PARAMS: usize = 9;

/// Binds what [`mark_sent`] writes of one attempt, in column order: the
/// request, then its outcome and the answer.
/// The answer's texts move into the statement: nothing reads them after.
fn bind_sent<'q>(q: sql::Query<'q>, a: &mut Attempt, outcome: &'static str) -> sql::Query<'q> {
    q.bind(a.due.request.to_string())
        .bind(outcome)
        .bind(to_micros(a.sent_at))
        .bind(a.elapsed_ms)
        .bind(a.response_code.map(i64::from))
        .bind(a.response_headers.take())
        .bind(a.response_body.take())
        .bind(a.error_type)
        .bind(a.error_description.take())
}

/// The PostgreSQL statements of [`mark_sent`], one per chunk size, built
/// once per process.
///
/// A request still waiting to be recorded is told by `outcome IS NULL`
/// (only this statement ever sets an outcome, and with it `status =
/// 'sent'`), not by `status = 'scheduled'`: that condition let PostgreSQL
/// find the batch's rows through the partial claim index, which holds an
/// entry for every request version since the last vacuum, and join them by
/// hash. It did whenever the statistics counted few scheduled requests: 19
/// to 37 ms for a batch of 64 in the latency phase (docs/benchmarks.md,
/// twenty-third round). The primary key finds each row directly.
fn mark_statements() -> &'static [(usize, String)] {
    static STATEMENTS: std::sync::OnceLock<Vec<(usize, String)>> = std::sync::OnceLock::new();
    STATEMENTS.get_or_init(|| {
        MARK_CHUNKS
            .iter()
            .map(|&size| {
                let rows: Vec<String> = (0..size)
                    .map(|i| {
                        let casts: [&str; SENT_PARAMS] =
                            ["TEXT", "TEXT", "BIGINT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT"];
                        let values: Vec<String> = casts
                            .iter()
                            .enumerate()
                            .map(|(c, ty)| format!("CAST(${} AS {ty})", i * casts.len() + c + 1))
                            .collect();
                        format!("({})", values.join(", "))
                    })
                    .collect();
                let text = format!(
                    "UPDATE requests SET status = 'sent', outcome = v.column2, sent_at = v.column3, \
                     request_time_ms = v.column4, http_response_code = v.column5, \
                     http_response_headers = v.column6, http_response_body = v.column7, error_type = v.column8, \
                     error_description = v.column9, claimed_by = NULL, claimed_until = NULL \
                     FROM (VALUES {}) AS v WHERE requests.uuid = v.column1 AND requests.outcome IS NULL \
                     RETURNING uuid",
                    rows.join(", ")
                );
                (size, text)
            })
            .collect()
    })
}

/// Moves a webhook's failure streak on by a batch of results, suspending
/// or reactivating it; writes only when something changed.
async fn update_streak(
    conn: &mut Conn,
    webhook: Uuid,
    results: &[(bool, bool)],
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<()> {
    let id = webhook.to_string();
    let row = sql::query("SELECT status, consecutive_failures, failing_since FROM webhooks WHERE uuid = $1")
        .bind(&id)
        .fetch_one(&mut *conn)
        .await?;
    let was = WebhookStatus::parse(&row.try_get::<String, _>("status")?);
    let was_failures: i64 = row.try_get("consecutive_failures")?;
    let was_since: Option<i64> = row.try_get("failing_since")?;
    let now_us = to_micros(now);
    let (mut status, mut failures, mut since) = (was, was_failures, was_since);
    let mut reason: Option<String> = None;
    for &(success, gone) in results {
        if success {
            failures = 0;
            since = None;
            if status == WebhookStatus::Suspended {
                status = WebhookStatus::Active;
                reason = None;
            }
            continue;
        }
        failures += 1;
        let started = *since.get_or_insert(now_us);
        if status == WebhookStatus::Active {
            if gone {
                reason = Some("the endpoint answered 410 Gone".to_string());
            } else if policy.should_suspend(failures, from_micros(started), now) {
                reason = Some(format!(
                    "{failures} consecutive failed attempts, none successful since {}",
                    crate::domain::common::ts::format(&from_micros(started))
                ));
            }
            if reason.is_some() {
                status = WebhookStatus::Suspended;
            }
        }
    }
    let probe_at = to_micros(now + chrono::TimeDelta::from_std(policy.probe_interval).unwrap_or_default());
    match (was, status) {
        (WebhookStatus::Suspended, WebhookStatus::Active) => {
            // A probe answered: the webhook is back, its backlog due now.
            sql::query(
                "UPDATE webhooks SET status = 'active', suspended_at = NULL, suspension_reason = NULL, \
                 consecutive_failures = 0, failing_since = NULL, next_probe_at = NULL, updated_at = $1 WHERE uuid = $2",
            )
            .bind(now_us)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            super::webhooks::make_pending_due(conn, webhook, now).await?;
        }
        (WebhookStatus::Active, WebhookStatus::Suspended) => {
            sql::query(
                "UPDATE webhooks SET consecutive_failures = $1, failing_since = $2, status = 'suspended', \
                 suspended_at = $3, suspension_reason = $4, next_probe_at = $5, updated_at = $3 WHERE uuid = $6",
            )
            .bind(failures)
            .bind(since)
            .bind(now_us)
            .bind(reason)
            .bind(probe_at)
            .bind(&id)
            .execute(conn)
            .await?;
        }
        _ if failures == 0 && was_failures == 0 && was_since.is_none() => {}
        _ => {
            let next_probe = (failures > 0).then_some(probe_at);
            sql::query(
                "UPDATE webhooks SET consecutive_failures = $1, failing_since = $2, next_probe_at = $3 WHERE uuid = $4",
            )
            .bind(failures)
            .bind(since)
            .bind(next_probe)
            .bind(&id)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// Hands back claims (graceful shutdown): the requests are due again at once
/// for any node.
pub async fn release(conn: &mut Conn, node: &str) -> Result<()> {
    sql::query(
        "UPDATE requests SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1 AND status = 'scheduled'",
    )
    .bind(node)
    .execute(conn)
    .await?;
    Ok(())
}

/// One step of pruning (retention): looks at up to `limit` requests
/// after `after` in creation order (their uuid; "" starts at the oldest),
/// and deletes those of them sent before `before`. Returns how many went
/// and where the next step starts, or `None` once every request created
/// before `before` has been looked at.
///
/// A request is sent after it was created, and a v7 uuid begins with its
/// creation time, so requests sent before `before` all have uuids below the
/// first uuid of that millisecond. Walking them through the primary key
/// needs no index on the send time, which every recorded attempt would
/// otherwise update. Each step looks at a bounded number of rows, so a
/// large backlog of old requests still scheduled (a webhook suspended for
/// months) never holds the writer for long; a pass looks at each of them
/// once.
pub async fn prune(conn: &mut Conn, before: DateTime<Utc>, after: &str, limit: u64) -> Result<(u64, Option<String>)> {
    let below = created_before(before);
    let window = sql::query(
        "SELECT MAX(uuid) AS last, COUNT(*) AS seen FROM \
         (SELECT uuid FROM requests WHERE uuid > $1 AND uuid < $2 ORDER BY uuid LIMIT $3) AS w",
    )
    .bind(after)
    .bind(below.as_str())
    .bind(limit as i64)
    .fetch_one(&mut *conn)
    .await?;
    let seen: i64 = window.try_get("seen")?;
    let Some(last) = window.try_get::<Option<String>, _>("last")? else {
        return Ok((0, None));
    };
    let deleted =
        sql::query("DELETE FROM requests WHERE uuid > $1 AND uuid <= $2 AND status = 'sent' AND sent_at < $3")
            .bind(after)
            .bind(last.as_str())
            .bind(to_micros(before))
            .execute(conn)
            .await?
            .rows_affected();
    let next = (seen as u64 == limit).then_some(last);
    Ok((deleted, next))
}

/// The smallest v7 uuid of `at`'s millisecond, as text: every request
/// created earlier has a smaller uuid. (Stored uuids all have one shape,
/// lowercase hex with hyphens in the same places, so their texts sort in
/// the order of their bytes under the C collation and the usual others.)
fn created_before(at: DateTime<Utc>) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid().hyphenated().to_string()
}

/// Pending requests by state, and webhooks by status, for the gauges.
///
/// The backlog is counted per webhook, in the order of the `requests_due`
/// index, and the webhooks' statuses are joined here: grouping the joined
/// rows by state instead made SQLite sort the whole backlog through
/// temporary files, every ten seconds, beside a drain.
pub async fn stats(conn: &mut Conn, now: DateTime<Utc>) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>)> {
    let per_webhook = sql::query(
        "SELECT webhook_uuid, COUNT(*) AS pending, SUM(CASE WHEN send_at <= $1 THEN 1 ELSE 0 END) AS due \
         FROM requests WHERE status = 'scheduled' GROUP BY webhook_uuid",
    )
    .bind(to_micros(now))
    .fetch_all(&mut *conn)
    .await?;
    let webhooks = sql::query("SELECT uuid, status, removed, kind FROM webhooks").fetch_all(conn).await?;
    let mut status_of = std::collections::HashMap::with_capacity(webhooks.len());
    let mut by_status: Vec<(String, i64)> = Vec::new();
    for w in &webhooks {
        let status: String = w.try_get("status")?;
        if w.try_get::<i64, _>("removed")? == 0 && w.try_get::<String, _>("kind")? == "user" {
            match by_status.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => by_status.push((status.clone(), 1)),
            }
        }
        status_of.insert(w.try_get::<String, _>("uuid")?, status);
    }
    let (mut held, mut due, mut retrying) = (0, 0, 0);
    for r in &per_webhook {
        let pending: i64 = r.try_get("pending")?;
        let now_due: i64 = r.try_get("due")?;
        if status_of.get(&r.try_get::<String, _>("webhook_uuid")?).is_some_and(|s| s == "active") {
            due += now_due;
            retrying += pending - now_due;
        } else {
            held += pending;
        }
    }
    let pending = vec![("due".to_string(), due), ("retrying".to_string(), retrying), ("held".to_string(), held)];
    Ok((pending, by_status))
}
