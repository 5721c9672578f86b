//! Assignee notifications: kept per user, and pushed to the push gateway
//! through a hidden webhook of the account — the same outbox, engine,
//! retries and request log as any webhook, so push is at-least-once too.

use super::people::{TEAMS, USERS};
use super::sql::{self, Conn};
use super::webhooks::insert_request;
use crate::clock::{from_micros, to_micros};
use crate::domain::event::{Context, Event, EventType};
use crate::domain::job::{Assignee, Job};
use crate::domain::notification::{Notification, NotificationKind};
use crate::domain::people::{Team, User};
use crate::error::Result;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The users an assignee stands for: the worker, or each worker of the team.
pub async fn recipients(conn: &mut Conn, account: Uuid, assignee: &Assignee) -> Result<Vec<User>> {
    let uuids = match assignee {
        Assignee::Worker(w) => vec![w.uuid],
        Assignee::Team(t) => {
            TEAMS.get::<Team>(conn, account, t.uuid).await?.map(|t| t.worker_uuids).unwrap_or_default()
        }
    };
    let mut users = Vec::with_capacity(uuids.len());
    for u in uuids {
        if let Some(user) = USERS.get::<User>(conn, account, u).await? {
            users.push(user);
        }
    }
    Ok(users)
}

/// The hidden push webhook of an account: one per account, with a uuid
/// derived from the account so that every node finds the same row.
fn push_webhook_uuid(account: Uuid) -> Uuid {
    Uuid::new_v5(&account, b"fieldhook push gateway")
}

/// Points every push webhook at `url`, or holds them when none is set.
/// Run at start, so a changed FIELDHOOK_PUSH_URL takes effect.
pub async fn configure_push(conn: &mut Conn, url: Option<&str>) -> Result<()> {
    match url {
        Some(url) => {
            sql::query("UPDATE webhooks SET url = $1, status = CASE WHEN status = 'paused' THEN 'active' ELSE status END WHERE kind = 'push'")
                .bind(url)
                .execute(conn)
                .await?
        }
        None => sql::query("UPDATE webhooks SET status = 'paused' WHERE kind = 'push'").execute(conn).await?,
    };
    Ok(())
}

async fn ensure_push_webhook(conn: &mut Conn, account: Uuid, url: &str, now: DateTime<Utc>) -> Result<Uuid> {
    let uuid = push_webhook_uuid(account);
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    sql::query(
        "INSERT INTO webhooks (uuid, account_uuid, url, event_types, signing_secret, ordering, status, created_by_key, \
         kind, created_at, updated_at) VALUES ($1, $2, $3, ',', $4, 'none', 'active', '', 'push', $5, $5) \
         ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(uuid.to_string())
    .bind(account.to_string())
    .bind(url)
    .bind(format!("whsec_{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret)))
    .bind(to_micros(now))
    .execute(conn)
    .await?;
    Ok(uuid)
}

/// Records one notification per recipient and, with a push gateway, one
/// push request each — in the transaction of the job change.
pub async fn notify(
    conn: &mut Conn,
    account: Uuid,
    job: &Job,
    kind: NotificationKind,
    push_url: Option<&str>,
    now: DateTime<Utc>,
) -> Result<usize> {
    let Some(assignee) = &job.assignee else { return Ok(0) };
    let users = recipients(conn, account, assignee).await?;
    for user in &users {
        let n = Notification { uuid: Uuid::now_v7(), job_uuid: job.uuid, kind, created_at: now };
        sql::query(
            "INSERT INTO notifications (uuid, account_uuid, user_uuid, job_uuid, kind, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(n.uuid.to_string())
        .bind(account.to_string())
        .bind(user.uuid.to_string())
        .bind(job.uuid.to_string())
        .bind(kind.as_str())
        .bind(to_micros(now))
        .execute(&mut *conn)
        .await?;
        if let Some(url) = push_url {
            let webhook = ensure_push_webhook(conn, account, url, now).await?;
            let body = serde_json::json!({
                "uuid": n.uuid, "user_uuid": user.uuid, "user_email": user.email, "job_uuid": job.uuid,
                "kind": kind, "created_at": crate::domain::common::ts::format(&now), "job": job,
            });
            let event =
                Event::new(EventType::AssigneeNotification, "notification", n.uuid, 0, &Context::api(now), &body)?;
            super::events::record_only(conn, account, &event).await?;
            insert_request(conn, account, &webhook.to_string(), &event, 1, to_micros(now)).await?;
        }
    }
    Ok(users.len())
}

/// A user's notifications, newest first.
pub async fn list(conn: &mut Conn, user: Uuid, after: Option<Uuid>, limit: i64) -> Result<Vec<Notification>> {
    let rows = sql::query(
        "SELECT uuid, job_uuid, kind, created_at FROM notifications WHERE user_uuid = $1 AND uuid < $2 \
         ORDER BY uuid DESC LIMIT $3",
    )
    .bind(user.to_string())
    .bind(after.map_or_else(|| "g".to_string(), |u| u.to_string()))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Notification {
                uuid: r.try_get("uuid")?,
                job_uuid: r.try_get("job_uuid")?,
                kind: if r.try_get::<String, _>("kind")? == "rescheduled" {
                    NotificationKind::Rescheduled
                } else {
                    NotificationKind::Assigned
                },
                created_at: from_micros(r.try_get("created_at")?),
            })
        })
        .collect()
}
