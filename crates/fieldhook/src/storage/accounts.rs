//! Accounts, API keys, server settings and idempotency records.

use super::sql::{self, Conn};
use crate::clock::to_micros;
use crate::domain::scope::Scopes;
use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

/// Prefix of every API key, so that a leaked key is recognisable in logs and
/// by secret scanners.
const KEY_PREFIX: &str = "fh_";

/// Who is calling: the account, the key and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_uuid: Uuid,
    pub key_uuid: Uuid,
    pub scopes: Scopes,
}

/// An API key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    pub uuid: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(with = "crate::domain::common::ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::common::ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly created key: the only moment its secret is known.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewApiKey {
    pub api_key_uuid: Uuid,
    pub api_key: String,
}

pub async fn create_account(conn: &mut Conn, name: &str, now: DateTime<Utc>) -> Result<Uuid> {
    let uuid = Uuid::now_v7();
    sql::query("INSERT INTO accounts (uuid, name, created_at) VALUES ($1, $2, $3)")
        .bind(uuid.to_string())
        .bind(name)
        .bind(to_micros(now))
        .execute(conn)
        .await?;
    Ok(uuid)
}

pub async fn account_count(conn: &mut Conn) -> Result<i64> {
    Ok(sql::query_scalar("SELECT COUNT(*) FROM accounts").fetch_one(conn).await?)
}

pub async fn create_key(
    conn: &mut Conn,
    account: Uuid,
    name: &str,
    scopes: &Scopes,
    now: DateTime<Utc>,
) -> Result<NewApiKey> {
    let uuid = Uuid::now_v7();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut raw = Vec::with_capacity(48);
    raw.extend_from_slice(uuid.as_bytes());
    raw.extend_from_slice(&secret);
    let api_key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    sql::query(
        "INSERT INTO api_keys (uuid, account_uuid, name, scopes, secret_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid.to_string())
    .bind(account.to_string())
    .bind(name)
    .bind(scopes.to_stored())
    .bind(hex::encode(Sha256::digest(secret)))
    .bind(to_micros(now))
    .execute(conn)
    .await?;
    Ok(NewApiKey { api_key_uuid: uuid, api_key })
}

/// Checks a presented key. `None` for anything that is not a live key of
/// this server: malformed, unknown, wrong secret, revoked.
pub async fn authenticate(conn: &mut Conn, presented: &str) -> Result<Option<Principal>> {
    let Some(encoded) = presented.strip_prefix(KEY_PREFIX) else { return Ok(None) };
    let Ok(raw) = URL_SAFE_NO_PAD.decode(encoded) else { return Ok(None) };
    if raw.len() != 48 {
        return Ok(None);
    }
    let key_uuid = Uuid::from_slice(&raw[..16]).expect("16 bytes");
    let row =
        sql::query("SELECT account_uuid, scopes, secret_hash FROM api_keys WHERE uuid = $1 AND revoked_at IS NULL")
            .bind(key_uuid.to_string())
            .fetch_optional(conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: String = row.try_get("secret_hash")?;
    let presented_hash = hex::encode(Sha256::digest(&raw[16..]));
    if !bool::from(presented_hash.as_bytes().ct_eq(stored.as_bytes())) {
        return Ok(None);
    }
    Ok(Some(Principal {
        account_uuid: row.try_get("account_uuid")?,
        key_uuid,
        scopes: Scopes::from_stored(&row.try_get::<String, _>("scopes")?),
    }))
}

/// The principal of a key by uuid, if it is live (temporary tokens use this).
pub async fn live_key(conn: &mut Conn, key_uuid: Uuid) -> Result<Option<Principal>> {
    let row = sql::query("SELECT account_uuid, scopes FROM api_keys WHERE uuid = $1 AND revoked_at IS NULL")
        .bind(key_uuid.to_string())
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        Ok(Principal {
            account_uuid: row.try_get("account_uuid")?,
            key_uuid,
            scopes: Scopes::from_stored(&row.try_get::<String, _>("scopes")?),
        })
    })
    .transpose()
}

pub async fn list_keys(conn: &mut Conn, account: Uuid) -> Result<Vec<ApiKeyInfo>> {
    let rows = sql::query(
        "SELECT uuid, name, scopes, created_at, revoked_at FROM api_keys WHERE account_uuid = $1 ORDER BY uuid DESC",
    )
    .bind(account.to_string())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ApiKeyInfo {
                uuid: row.try_get("uuid")?,
                name: row.try_get("name")?,
                scopes: Scopes::from_stored(&row.try_get::<String, _>("scopes")?).names().map(str::to_string).collect(),
                created_at: crate::clock::from_micros(row.try_get("created_at")?),
                revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(crate::clock::from_micros),
            })
        })
        .collect()
}

/// Revokes a key of `account`; `false` when there is no such live key.
pub async fn revoke_key(conn: &mut Conn, account: Uuid, key: Uuid, now: DateTime<Utc>) -> Result<bool> {
    let done =
        sql::query("UPDATE api_keys SET revoked_at = $1 WHERE uuid = $2 AND account_uuid = $3 AND revoked_at IS NULL")
            .bind(to_micros(now))
            .bind(key.to_string())
            .bind(account.to_string())
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Reads a server setting.
pub async fn setting(conn: &mut Conn, name: &str) -> Result<Option<String>> {
    Ok(sql::query_scalar("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(conn).await?)
}

/// Stores a setting unless it exists; returns the value in force.
pub async fn setting_or_insert(conn: &mut Conn, name: &str, value: &str) -> Result<String> {
    sql::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    Ok(setting(conn, name).await?.unwrap_or_else(|| value.to_string()))
}

/// How long an `Idempotency-Key` is remembered (api.md, "Idempotent creation").
pub const IDEMPOTENCY_WINDOW: TimeDelta = TimeDelta::hours(24);

/// What an idempotency key says about a request.
#[derive(Debug)]
pub enum Idempotency {
    /// First use: go ahead, then [`idempotency_save`].
    Fresh,
    /// A repeat of an earlier request: answer what it got.
    Replay { status: u16, body: String },
}

/// Claims `key` for this request. On PostgreSQL the insert waits for a
/// concurrent transaction holding the same key, so two simultaneous repeats
/// cannot both create.
///
/// # Errors
/// `409 conflict` when the key was used with a different request.
pub async fn idempotency_claim(
    conn: &mut Conn,
    account: Uuid,
    key: &str,
    request_hash: &str,
    now: DateTime<Utc>,
) -> Result<Idempotency> {
    let inserted = sql::query(
        "INSERT INTO idempotency_keys (account_uuid, idem_key, request_hash, status, body, created_at) \
         VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (account_uuid, idem_key) DO NOTHING",
    )
    .bind(account.to_string())
    .bind(key)
    .bind(request_hash)
    .bind(to_micros(now))
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Idempotency::Fresh);
    }
    let row = sql::query(
        "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE account_uuid = $1 AND idem_key = $2",
    )
    .bind(account.to_string())
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let created_at: i64 = row.try_get("created_at")?;
    if created_at < to_micros(now - IDEMPOTENCY_WINDOW) {
        // Expired: this use starts a new window.
        sql::query("UPDATE idempotency_keys SET request_hash = $1, status = 0, body = '', created_at = $2 WHERE account_uuid = $3 AND idem_key = $4")
            .bind(request_hash)
            .bind(to_micros(now))
            .bind(account.to_string())
            .bind(key)
            .execute(conn)
            .await?;
        return Ok(Idempotency::Fresh);
    }
    if row.try_get::<String, _>("request_hash")? != request_hash {
        return Err(Error::Conflict("Idempotency-Key was already used with a different request".into()));
    }
    Ok(Idempotency::Replay { status: row.try_get::<i64, _>("status")? as u16, body: row.try_get("body")? })
}

/// Records the answer given to the request that claimed `key`.
pub async fn idempotency_save(conn: &mut Conn, account: Uuid, key: &str, status: u16, body: &str) -> Result<()> {
    sql::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE account_uuid = $3 AND idem_key = $4")
        .bind(i64::from(status))
        .bind(body)
        .bind(account.to_string())
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}
