//! How handlers write: through the group committer, with `Idempotency-Key`
//! honoured for creates (api.md, "Idempotent creation"). The key, the change
//! and its events commit together, so a replay can never see half of one.

use super::AppState;
use crate::error::{Error, Result};
use crate::storage::accounts::{self, Idempotency};
use crate::storage::sql::Conn;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A JSON answer whose body is already serialised (stored documents are
/// sent as they are, without a parse and re-serialise).
pub fn raw_json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"<key>": <doc>}` from a stored document.
pub fn wrap_doc(key: &str, doc: &str) -> String {
    format!("{{\"{key}\":{doc}}}")
}

/// `{"<key>": [<doc>, ...]}` from stored documents.
pub fn wrap_docs(key: &str, docs: &[String]) -> String {
    let mut out = String::with_capacity(docs.iter().map(|d| d.len() + 1).sum::<usize>() + key.len() + 8);
    out.push_str("{\"");
    out.push_str(key);
    out.push_str("\":[");
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(d);
    }
    out.push_str("]}");
    out
}

/// A create's writes. It may run more than once (the group committer runs
/// it again after undoing it when another create sharing its savepoint
/// failed), so it only writes to the database.
pub type WriteOp = std::sync::Arc<
    dyn for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<(StatusCode, serde_json::Value)>> + Send + Sync,
>;

/// Runs a create. With an `Idempotency-Key`, a repeat of the same request
/// within 24 h gets the first answer and creates nothing; the same key with
/// another request is `409`.
pub async fn create(
    state: &AppState,
    account: Uuid,
    headers: &HeaderMap,
    path: &str,
    raw: &Bytes,
    op: WriteOp,
) -> Result<Response> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v.to_str().map_err(|_| Error::invalid("Idempotency-Key", "must be visible ASCII"))?;
            if k.is_empty() || k.len() > 200 {
                return Err(Error::invalid("Idempotency-Key", "must be 1 to 200 characters"));
            }
            Some(k.to_string())
        }
    };
    let hash = {
        let mut h = Sha256::new();
        h.update(path.as_bytes());
        h.update([0]);
        h.update(raw);
        hex::encode(h.finalize())
    };
    let now = state.clock.now();
    let (status, body) = state
        .db
        .committer
        .write_rerunnable(move |conn| {
            let (key, hash, op) = (key.clone(), hash.clone(), op.clone());
            Box::pin(async move {
                if let Some(key) = &key
                    && let Idempotency::Replay { status, body } =
                        accounts::idempotency_claim(conn, account, key, &hash, now).await?
                {
                    return Ok((StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body));
                }
                let (status, value) = op(&mut *conn).await?;
                let body = value.to_string();
                if let Some(key) = &key {
                    accounts::idempotency_save(conn, account, key, status.as_u16(), &body).await?;
                }
                Ok((status, body))
            })
        })
        .await?;
    Ok(raw_json(status, body))
}
