//! Storage of webhooks, the fan-out of events into pending requests, and
//! the request log as the API lists it.

use super::Backend;
use super::deliveries::Due;
use super::sql::{self, Conn, Row};
use crate::clock::{from_micros, to_micros};
use crate::domain::event::Event;
use crate::domain::webhook::{Ordering, Webhook, WebhookStatus};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

const WEBHOOK_COLUMNS: &str = "uuid, url, event_types, secret, signing_secret, ordering, status, suspended_at, \
     suspension_reason, created_at, updated_at";

fn webhook_from_row(row: &Row) -> Result<Webhook> {
    let types: String = row.try_get("event_types")?;
    Ok(Webhook {
        uuid: row.try_get("uuid")?,
        url: row.try_get("url")?,
        event_types: types.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        secret: row.try_get("secret")?,
        signing_secret: row.try_get("signing_secret")?,
        ordering: Ordering::parse(&row.try_get::<String, _>("ordering")?),
        status: WebhookStatus::parse(&row.try_get::<String, _>("status")?),
        suspended_at: row.try_get::<Option<i64>, _>("suspended_at")?.map(from_micros),
        suspension_reason: row.try_get("suspension_reason")?,
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

/// The stored form of a subscription list: `,a,b,` so that `LIKE '%,a,%'`
/// finds subscribers without a join table.
fn stored_types(types: &[String]) -> String {
    format!(",{},", types.join(","))
}

pub async fn insert(conn: &mut Conn, account: Uuid, created_by_key: Uuid, w: &Webhook) -> Result<()> {
    sql::query(
        "INSERT INTO webhooks (uuid, account_uuid, url, event_types, secret, signing_secret, ordering, status, \
         created_by_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(w.uuid.to_string())
    .bind(account.to_string())
    .bind(&w.url)
    .bind(stored_types(&w.event_types))
    .bind(w.secret.clone())
    .bind(&w.signing_secret)
    .bind(w.ordering.as_str())
    .bind(w.status.as_str())
    .bind(created_by_key.to_string())
    .bind(to_micros(w.created_at))
    .bind(to_micros(w.updated_at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Saves the user-editable fields of a webhook, `previous` being what it
/// was. Switched to entity ordering, its scheduled requests go into the
/// entity-ordering index (on SQLite they were left out of it; migration
/// 0006), so that the claims see the earlier versions they wait for.
pub async fn update(conn: &mut Conn, account: Uuid, previous: Ordering, w: &Webhook) -> Result<()> {
    if w.ordering == Ordering::Entity && previous != Ordering::Entity {
        sql::query(
            "UPDATE requests SET entity_ordered = 1 \
             WHERE webhook_uuid = $1 AND status = 'scheduled' AND entity_ordered = 0",
        )
        .bind(w.uuid.to_string())
        .execute(&mut *conn)
        .await?;
    }
    sql::query(
        "UPDATE webhooks SET url = $1, event_types = $2, secret = $3, ordering = $4, updated_at = $5 \
         WHERE uuid = $6 AND account_uuid = $7",
    )
    .bind(&w.url)
    .bind(stored_types(&w.event_types))
    .bind(w.secret.clone())
    .bind(w.ordering.as_str())
    .bind(to_micros(w.updated_at))
    .bind(w.uuid.to_string())
    .bind(account.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, account: Uuid, uuid: Uuid) -> Result<Option<Webhook>> {
    let row = sql::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE uuid = $1 AND account_uuid = $2 AND removed = 0 AND kind = 'user'"
    ))
    .bind(uuid.to_string())
    .bind(account.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(webhook_from_row).transpose()
}

pub async fn list(conn: &mut Conn, account: Uuid, after: Option<Uuid>, limit: i64) -> Result<Vec<Webhook>> {
    let rows = sql::query(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE account_uuid = $1 AND removed = 0 AND kind = 'user' AND uuid < $2 \
         ORDER BY uuid DESC LIMIT $3"
    ))
    .bind(account.to_string())
    .bind(after.map_or_else(|| "g".to_string(), |u| u.to_string()))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(webhook_from_row).collect()
}

/// Removes a webhook; its scheduled requests are dropped.
pub async fn remove(conn: &mut Conn, account: Uuid, uuid: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let done = sql::query(
        "UPDATE webhooks SET removed = 1, updated_at = $1 WHERE uuid = $2 AND account_uuid = $3 AND removed = 0 AND kind = 'user'",
    )
    .bind(to_micros(now))
    .bind(uuid.to_string())
    .bind(account.to_string())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sql::query("DELETE FROM requests WHERE webhook_uuid = $1 AND status = 'scheduled'")
        .bind(uuid.to_string())
        .execute(conn)
        .await?;
    Ok(true)
}

/// Pauses a webhook, or lifts a pause or a suspension (`Active`): then the
/// failure streak is forgotten and every pending request is due now.
pub async fn set_status(
    conn: &mut Conn,
    account: Uuid,
    uuid: Uuid,
    status: WebhookStatus,
    now: DateTime<Utc>,
) -> Result<Option<Webhook>> {
    let sql = match status {
        WebhookStatus::Active => {
            "UPDATE webhooks SET status = 'active', suspended_at = NULL, suspension_reason = NULL, \
             consecutive_failures = 0, failing_since = NULL, next_probe_at = NULL, updated_at = $1 \
             WHERE uuid = $2 AND account_uuid = $3 AND removed = 0 AND kind = 'user'"
        }
        _ => {
            "UPDATE webhooks SET status = 'paused', updated_at = $1 \
             WHERE uuid = $2 AND account_uuid = $3 AND removed = 0 AND kind = 'user'"
        }
    };
    let done = sql::query(sql)
        .bind(to_micros(now))
        .bind(uuid.to_string())
        .bind(account.to_string())
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    if status == WebhookStatus::Active {
        make_pending_due(conn, uuid, now).await?;
    }
    get(conn, account, uuid).await
}

/// Every pending request of the webhook becomes due now.
pub async fn make_pending_due(conn: &mut Conn, webhook: Uuid, now: DateTime<Utc>) -> Result<()> {
    sql::query("UPDATE requests SET send_at = $1 WHERE webhook_uuid = $2 AND status = 'scheduled' AND send_at > $1")
        .bind(to_micros(now))
        .bind(webhook.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// The webhooks of an account subscribed to an event type, with what the
/// fan-out needs of them: the parameters are the account and
/// [`subscription_pattern`].
macro_rules! select_subscribers {
    ($account:literal, $pattern:literal) => {
        concat!(
            "SELECT uuid, status, ordering FROM webhooks WHERE account_uuid = ",
            $account,
            " AND removed = 0 AND event_types LIKE ",
            $pattern
        )
    };
}
pub(crate) use select_subscribers;

/// Matches the stored event types of a webhook subscribed to `event`'s.
pub(crate) fn subscription_pattern(event: &Event) -> String {
    format!("%,{},%", event.event_type.name())
}

/// The webhooks subscribed to `event` ([`select_subscribers`]).
pub async fn subscribers(conn: &mut Conn, account: Uuid, event: &Event) -> Result<Vec<sql::Row>> {
    Ok(sql::query(select_subscribers!("$1", "$2"))
        .bind(account.to_string())
        .bind(subscription_pattern(event))
        .fetch_all(conn)
        .await?)
}

/// SQLite: writes one pending request (attempt 1, due now) for every
/// webhook of the account subscribed to the event, as [`subscribers`]
/// found them. Runs in the event's transaction. (PostgreSQL writes them
/// with the event, in one statement: `events::record_and_fan_out`.)
///
/// Each request of an active webhook without entity ordering is also
/// handed to the delivery engine, so that no claim has to read it back
/// ([`super::handoff`]); those of entity-ordered webhooks wait for their
/// turn in a claim, and probes of suspended ones are claimed too.
pub async fn fan_out(conn: &mut Conn, account: Uuid, event: &Event, subscribers: &[sql::Row]) -> Result<()> {
    // One copy of the body, shared by every request handed over.
    let mut body: Option<bytes::Bytes> = None;
    for sub in subscribers {
        let webhook: String = sub.try_get("uuid")?;
        let send_at = to_micros(event.created_at);
        let request = insert_request(conn, account, &webhook, event, 1, send_at).await?;
        let row = conn.last_rowid();
        let Some(handoff) = conn.handoff() else { continue };
        match WebhookStatus::parse(&sub.try_get::<String, _>("status")?) {
            WebhookStatus::Active if Ordering::parse(&sub.try_get::<String, _>("ordering")?) == Ordering::None => {
                let body = body.get_or_insert_with(|| bytes::Bytes::from(event.body.clone())).clone();
                handoff.offer(Due::first(request, row, sub.try_get("uuid")?, event, body));
            }
            WebhookStatus::Paused => handoff.unserved(),
            WebhookStatus::Active | WebhookStatus::Suspended => {}
        }
    }
    Ok(())
}

/// One attempt to schedule: the single place a request row is written on
/// its own (SQLite's fan-out, test events, resends, retries). Retries and
/// PostgreSQL's fan-out write theirs with a statement of their own, from
/// the same [`insert_request_into`].
pub(crate) struct NewRequest<'a> {
    pub account: &'a str,
    pub webhook: &'a str,
    pub event_uuid: &'a str,
    pub event_type: &'a str,
    pub entity_type: &'a str,
    pub entity_uuid: &'a str,
    pub entity_version: i64,
    pub attempt_no: i64,
    /// Failures so far that counted against the retry budget.
    pub retry_no: i64,
    pub send_at: i64,
    pub created_at: i64,
}

/// The head of every insert of a request: the table and its columns, the
/// last of them `entity_ordered` (see [`sqlite_entity_ordered`]).
macro_rules! insert_request_into {
    () => {
        "INSERT INTO requests (uuid, account_uuid, webhook_uuid, event_uuid, event_type, entity_type, \
         entity_uuid, entity_version, attempt_no, retry_no, status, send_at, created_at, entity_ordered) "
    };
}
pub(crate) use insert_request_into;

/// Whether the entity-ordering index must hold a new request (migration
/// 0006), on SQLite: as its webhook's ordering is in this same transaction.
/// `$webhook` is the SQL that gives the webhook's uuid. On PostgreSQL the
/// index holds every request (the value is always 1).
macro_rules! sqlite_entity_ordered {
    ($webhook:literal) => {
        concat!(
            "(SELECT CASE WHEN w.ordering = 'entity' THEN 1 ELSE 0 END FROM webhooks w WHERE w.uuid = ",
            $webhook,
            ")"
        )
    };
}
pub(crate) use sqlite_entity_ordered;

impl NewRequest<'_> {
    pub(crate) async fn insert(&self, conn: &mut Conn) -> Result<Uuid> {
        let uuid = Uuid::now_v7();
        macro_rules! insert_with_entity_ordered {
            ($entity_ordered:expr) => {
                concat!(
                    insert_request_into!(),
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'scheduled', $11, $12, ",
                    $entity_ordered,
                    ")"
                )
            };
        }
        let sql = match conn.backend() {
            Backend::Sqlite => insert_with_entity_ordered!(sqlite_entity_ordered!("$3")),
            Backend::Postgres => insert_with_entity_ordered!("1"),
        };
        sql::query(sql)
            .bind(uuid.to_string())
            .bind(self.account)
            .bind(self.webhook)
            .bind(self.event_uuid)
            .bind(self.event_type)
            .bind(self.entity_type)
            .bind(self.entity_uuid)
            .bind(self.entity_version)
            .bind(self.attempt_no)
            .bind(self.retry_no)
            .bind(self.send_at)
            .bind(self.created_at)
            .execute(conn)
            .await?;
        Ok(uuid)
    }
}

/// The first attempt of `event` for `webhook`, due at `send_at`.
pub(crate) async fn insert_request(
    conn: &mut Conn,
    account: Uuid,
    webhook: &str,
    event: &Event,
    attempt_no: i64,
    send_at: i64,
) -> Result<Uuid> {
    NewRequest {
        account: &account.to_string(),
        webhook,
        event_uuid: &event.uuid.to_string(),
        event_type: event.event_type.name(),
        entity_type: event.entity_type,
        entity_uuid: &event.entity_uuid.to_string(),
        entity_version: event.entity_version,
        attempt_no,
        retry_no: 0,
        send_at,
        created_at: send_at,
    }
    .insert(conn)
    .await
}

/// Records a test event for one webhook and its request; returns the request.
pub async fn record_test(conn: &mut Conn, account: Uuid, webhook: Uuid, event: &Event) -> Result<Uuid> {
    super::events::record_only(conn, account, event).await?;
    insert_request(conn, account, &webhook.to_string(), event, 1, to_micros(event.created_at)).await
}

/// A new request delivering the event of `request` again, now, with a fresh
/// retry budget.
pub async fn resend(conn: &mut Conn, account: Uuid, webhook: Uuid, request: Uuid, now: DateTime<Utc>) -> Result<Uuid> {
    let row = sql::query(
        "SELECT event_uuid, event_type, entity_type, entity_uuid, entity_version FROM requests \
         WHERE uuid = $1 AND webhook_uuid = $2 AND account_uuid = $3",
    )
    .bind(request.to_string())
    .bind(webhook.to_string())
    .bind(account.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("request"))?;
    let event_uuid: String = row.try_get("event_uuid")?;
    let attempts: i64 =
        sql::query_scalar("SELECT MAX(attempt_no) FROM requests WHERE event_uuid = $1 AND webhook_uuid = $2")
            .bind(&event_uuid)
            .bind(webhook.to_string())
            .fetch_one(&mut *conn)
            .await?;
    let now_us = to_micros(now);
    NewRequest {
        account: &account.to_string(),
        webhook: &webhook.to_string(),
        event_uuid: &event_uuid,
        event_type: &row.try_get::<String, _>("event_type")?,
        entity_type: &row.try_get::<String, _>("entity_type")?,
        entity_uuid: &row.try_get::<String, _>("entity_uuid")?,
        entity_version: row.try_get("entity_version")?,
        attempt_no: attempts + 1,
        retry_no: 0,
        send_at: now_us,
        created_at: now_us,
    }
    .insert(conn)
    .await
}

/// One attempt as the request log shows it (webhooks.md, "The request log").
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestLog {
    pub uuid: Uuid,
    pub event_uuid: Uuid,
    pub event_type: String,
    pub entity_type: String,
    pub entity_uuid: Uuid,
    pub entity_version: i64,
    pub attempt_no: i64,
    /// `scheduled` (waiting for `send_at`) or `sent`.
    pub status: String,
    /// The exact JSON body sent (or to be sent).
    pub http_request_body: String,
    pub http_response_code: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub http_response_headers: Option<serde_json::Value>,
    pub http_response_body: Option<String>,
    #[serde(with = "crate::domain::common::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub send_at: DateTime<Utc>,
    #[serde(with = "crate::domain::common::ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<DateTime<Utc>>,
    pub request_time_ms: Option<i64>,
    /// Present only when the request failed without an HTTP answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    pub error_description: Option<String>,
}

const LOG_COLUMNS: &str = "r.uuid, r.event_uuid, r.event_type, r.entity_type, r.entity_uuid, r.entity_version, \
     r.attempt_no, r.status, e.body, r.http_response_code, r.http_response_headers, r.http_response_body, r.send_at, \
     r.sent_at, r.request_time_ms, r.error_type, r.error_description";

fn log_from_row(row: &Row) -> Result<RequestLog> {
    Ok(RequestLog {
        uuid: row.try_get("uuid")?,
        event_uuid: row.try_get("event_uuid")?,
        event_type: row.try_get("event_type")?,
        entity_type: row.try_get("entity_type")?,
        entity_uuid: row.try_get("entity_uuid")?,
        entity_version: row.try_get("entity_version")?,
        attempt_no: row.try_get("attempt_no")?,
        status: row.try_get("status")?,
        http_request_body: row.try_get("body")?,
        http_response_code: row.try_get("http_response_code")?,
        http_response_headers: row
            .try_get::<Option<String>, _>("http_response_headers")?
            .and_then(|h| serde_json::from_str(&h).ok()),
        http_response_body: row.try_get("http_response_body")?,
        send_at: from_micros(row.try_get("send_at")?),
        sent_at: row.try_get::<Option<i64>, _>("sent_at")?.map(from_micros),
        request_time_ms: row.try_get("request_time_ms")?,
        error_type: row.try_get("error_type")?,
        error_description: row.try_get("error_description")?,
    })
}

/// Which requests a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFilter {
    All,
    /// Still waiting: rescheduled failures and whatever a suspension holds.
    Scheduled,
    /// The last request of every event whose retries ran out.
    Failed,
}

pub async fn list_requests(
    conn: &mut Conn,
    webhook: Uuid,
    filter: RequestFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<RequestLog>> {
    let condition = match filter {
        RequestFilter::All => "",
        RequestFilter::Scheduled => " AND r.status = 'scheduled'",
        RequestFilter::Failed => " AND r.outcome = 'exhausted'",
    };
    let rows = sql::query(&format!(
        "SELECT {LOG_COLUMNS} FROM requests r JOIN events e ON e.uuid = r.event_uuid \
         WHERE r.webhook_uuid = $1 AND r.uuid < $2{condition} ORDER BY r.uuid DESC LIMIT $3"
    ))
    .bind(webhook.to_string())
    .bind(after.map_or_else(|| "g".to_string(), |u| u.to_string()))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(log_from_row).collect()
}

pub async fn get_request(conn: &mut Conn, webhook: Uuid, request: Uuid) -> Result<Option<RequestLog>> {
    let row = sql::query(&format!(
        "SELECT {LOG_COLUMNS} FROM requests r JOIN events e ON e.uuid = r.event_uuid \
         WHERE r.webhook_uuid = $1 AND r.uuid = $2"
    ))
    .bind(webhook.to_string())
    .bind(request.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(log_from_row).transpose()
}
