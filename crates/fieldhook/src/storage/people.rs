//! Storage of users, teams and job types: unversioned documents with one
//! unique column each (e-mail, team name, job type code).

use super::sql::{self, Conn};
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// One of the unversioned tables and its unique column.
#[derive(Debug, Clone, Copy)]
pub struct DocTable {
    pub table: &'static str,
    /// The column that must be unique per account, and the request field it
    /// comes from (named in the 422 when taken).
    pub unique: &'static str,
    pub taken_message: &'static str,
}

pub const USERS: DocTable = DocTable { table: "users", unique: "email", taken_message: "is used by another user" };
pub const TEAMS: DocTable = DocTable { table: "teams", unique: "name", taken_message: "is used by another team" };
pub const JOB_TYPES: DocTable =
    DocTable { table: "job_types", unique: "code", taken_message: "is used by another job type" };

impl DocTable {
    fn taken(&self, e: sql::SqlError) -> Error {
        if super::unique_violation_on(&e, self.unique) {
            Error::invalid(self.unique, self.taken_message)
        } else {
            e.into()
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, conn: &mut Conn, account: Uuid, uuid: Uuid) -> Result<Option<T>> {
        let doc: Option<String> =
            sql::query_scalar(&format!("SELECT doc FROM {} WHERE uuid = $1 AND account_uuid = $2", self.table))
                .bind(uuid.to_string())
                .bind(account.to_string())
                .fetch_optional(conn)
                .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(Error::from)).transpose()
    }

    pub async fn get_by_unique<T: DeserializeOwned>(
        &self,
        conn: &mut Conn,
        account: Uuid,
        value: &str,
    ) -> Result<Option<T>> {
        let doc: Option<String> = sql::query_scalar(&format!(
            "SELECT doc FROM {} WHERE {} = $1 AND account_uuid = $2",
            self.table, self.unique
        ))
        .bind(value)
        .bind(account.to_string())
        .fetch_optional(conn)
        .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(Error::from)).transpose()
    }

    pub async fn insert<T: Serialize>(
        &self,
        conn: &mut Conn,
        account: Uuid,
        uuid: Uuid,
        unique: &str,
        doc: &T,
    ) -> Result<()> {
        sql::query(&format!(
            "INSERT INTO {} (uuid, account_uuid, {}, doc) VALUES ($1, $2, $3, $4)",
            self.table, self.unique
        ))
        .bind(uuid.to_string())
        .bind(account.to_string())
        .bind(unique)
        .bind(serde_json::to_string(doc)?)
        .execute(conn)
        .await
        .map_err(|e| self.taken(e))?;
        Ok(())
    }

    pub async fn update<T: Serialize>(
        &self,
        conn: &mut Conn,
        account: Uuid,
        uuid: Uuid,
        unique: &str,
        doc: &T,
    ) -> Result<()> {
        sql::query(&format!(
            "UPDATE {} SET {} = $1, doc = $2 WHERE uuid = $3 AND account_uuid = $4",
            self.table, self.unique
        ))
        .bind(unique)
        .bind(serde_json::to_string(doc)?)
        .bind(uuid.to_string())
        .bind(account.to_string())
        .execute(conn)
        .await
        .map_err(|e| self.taken(e))?;
        Ok(())
    }

    /// Deletes a row; `false` when there was none.
    pub async fn delete(&self, conn: &mut Conn, account: Uuid, uuid: Uuid) -> Result<bool> {
        let done = sql::query(&format!("DELETE FROM {} WHERE uuid = $1 AND account_uuid = $2", self.table))
            .bind(uuid.to_string())
            .bind(account.to_string())
            .execute(conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// All documents of the account (teams are few per account).
    pub async fn all<T: DeserializeOwned>(&self, conn: &mut Conn, account: Uuid) -> Result<Vec<T>> {
        let docs: Vec<String> =
            sql::query_scalar(&format!("SELECT doc FROM {} WHERE account_uuid = $1 ORDER BY uuid", self.table))
                .bind(account.to_string())
                .fetch_all(conn)
                .await?;
        docs.iter().map(|d| serde_json::from_str(d).map_err(Error::from)).collect()
    }
}

/// How many users of `account` among `uuids` exist.
pub async fn count_users(conn: &mut Conn, account: Uuid, uuids: &[Uuid]) -> Result<usize> {
    let mut n = 0;
    for chunk in uuids.chunks(200) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!("SELECT COUNT(*) FROM users WHERE account_uuid = $1 AND uuid IN ({})", marks.join(", "));
        let mut q = sql::query_scalar::<i64>(&sql).bind(account.to_string());
        for u in chunk {
            q = q.bind(u.to_string());
        }
        n += q.fetch_one(&mut *conn).await? as usize;
    }
    Ok(n)
}

/// How many unfinished, live jobs are assigned through `column` to `uuid`.
pub async fn open_jobs_assigned(conn: &mut Conn, column: &str, uuid: Uuid) -> Result<i64> {
    Ok(sql::query_scalar(&format!(
        "SELECT COUNT(*) FROM jobs WHERE {column} = $1 AND removed = 0 AND status NOT IN ('finished', 'canceled')"
    ))
    .bind(uuid.to_string())
    .fetch_one(conn)
    .await?)
}
