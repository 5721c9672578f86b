//! The outbox. Events are written in the transaction of the change that
//! caused them (so a change is never without its event, nor an event without
//! its change), and read back by the history endpoints and the delivery
//! engine.

use super::sql::{self, Conn};
use super::{Backend, webhooks};
use crate::clock::to_micros;
use crate::domain::event::Event;
use crate::error::Result;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The insert of one event: `$1`–`$8`.
const INSERT_EVENT: &str = "INSERT INTO events (uuid, account_uuid, event_type, entity_type, entity_uuid, entity_version, body, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Writes `event` to the outbox with one pending request for every webhook
/// of the account that subscribes to its type.
pub async fn record(conn: &mut Conn, account: Uuid, event: &Event) -> Result<()> {
    match conn.backend() {
        // On the committer's connection, round trips, one after another,
        // bound how many changes a second PostgreSQL takes (and how long a
        // group commit holds its events back): the event, its subscribers
        // and their requests are one statement ([`record_and_fan_out`]).
        Backend::Postgres => record_and_fan_out(conn, account, event).await?,
        Backend::Sqlite => {
            record_only(conn, account, event).await?;
            let subscribers = webhooks::subscribers(conn, account, event).await?;
            webhooks::fan_out(conn, account, event, &subscribers).await?;
        }
    }
    Ok(())
}

/// PostgreSQL: inserts the event and, for each subscriber
/// ([`webhooks::select_subscribers`]), its first request, in one statement
/// (data-modifying WITHs run whether or not their output is read, and the
/// requests' foreign keys are checked at its end, when the event is there).
///
/// The requests' uuids are one `Uuid::now_v7` with its last 32 bits (8 hex
/// digits) replaced by the subscriber's number. Those bits are random
/// padding: the time, and the 42-bit counter that keeps one process's v7
/// uuids apart and in order, come before them. So the requests' uuids stay
/// unique and ordered by creation, which pruning relies on
/// ([`super::deliveries::prune`]). Across nodes, uuids of the same
/// millisecond are kept apart by that counter, which each node reseeds at
/// random every millisecond: 41 random bits, against 74 in a whole v7 uuid.
async fn record_and_fan_out(conn: &mut Conn, account: Uuid, event: &Event) -> Result<()> {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = TEXT.get_or_init(|| {
        format!(
            "WITH e AS ({INSERT_EVENT}), s AS ({}) {}\
             SELECT overlay($10 placing lpad(to_hex(row_number() OVER ()), 8, '0') from 29 for 8), \
             $2, s.uuid, $1, $3, $4, $5, $6, 1, 0, 'scheduled', $8, $8, 1 FROM s",
            webhooks::select_subscribers!("$2", "$9"),
            webhooks::insert_request_into!(),
        )
    });
    bind_event(sql::query(text), account, event)
        .bind(webhooks::subscription_pattern(event))
        .bind(Uuid::now_v7().to_string())
        .execute(conn)
        .await?;
    counted(event);
    Ok(())
}

/// Writes `event` without fanning it out (test events have one recipient).
pub async fn record_only(conn: &mut Conn, account: Uuid, event: &Event) -> Result<()> {
    bind_event(sql::query(INSERT_EVENT), account, event).execute(conn).await?;
    counted(event);
    Ok(())
}

/// Binds `$1`–`$8` of [`INSERT_EVENT`].
fn bind_event<'q>(q: sql::Query<'q>, account: Uuid, event: &'q Event) -> sql::Query<'q> {
    q.bind(event.uuid.to_string())
        .bind(account.to_string())
        .bind(event.event_type.name())
        .bind(event.entity_type)
        .bind(event.entity_uuid.to_string())
        .bind(event.entity_version)
        .bind(&event.body)
        .bind(to_micros(event.created_at))
}

/// Counts a recorded event in the metrics.
fn counted(event: &Event) {
    metrics::counter!(crate::metrics::EVENTS, "event_type" => event.event_type.name()).increment(1);
}

/// One page of a resource's history, oldest first: each entry is the event
/// body with its `version` added. The events of one version never straddle
/// two pages, so a page may exceed `limit` by the rest of its last version.
pub async fn history(conn: &mut Conn, entity: Uuid, after_version: i64, limit: i64) -> Result<Vec<Value>> {
    let rows = sql::query(
        "SELECT entity_version, body FROM events WHERE entity_uuid = $1 AND entity_version > $2 \
         ORDER BY entity_version, uuid LIMIT $3",
    )
    .bind(entity.to_string())
    .bind(after_version)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut last: Option<(i64, usize)> = None;
    for row in &rows {
        let version: i64 = row.try_get("entity_version")?;
        entries.push(entry(version, &row.try_get::<String, _>("body")?)?);
        last = Some((version, last.filter(|(v, _)| *v == version).map_or(1, |(_, n)| n + 1)));
    }
    if rows.len() as i64 == limit
        && let Some((version, seen)) = last
    {
        // Complete the last version with the events the limit cut off.
        let rest = sql::query("SELECT body FROM events WHERE entity_uuid = $1 AND entity_version = $2 ORDER BY uuid")
            .bind(entity.to_string())
            .bind(version)
            .fetch_all(conn)
            .await?;
        for row in rest.iter().skip(seen) {
            entries.push(entry(version, &row.try_get::<String, _>("body")?)?);
        }
    }
    Ok(entries)
}

fn entry(version: i64, body: &str) -> Result<Value> {
    let mut map: Map<String, Value> = serde_json::from_str(body)?;
    map.insert("version".into(), Value::from(version));
    Ok(Value::Object(map))
}
