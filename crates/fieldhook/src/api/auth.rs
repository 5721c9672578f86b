//! Authentication, scopes and the per-key rate limit (api.md,
//! "Authentication, accounts and scopes"). Every `/v2` handler takes an
//! [`Auth`] and asks it for the scope it needs.

use super::AppState;
use crate::error::{Error, Result};
use crate::storage::accounts::{self, Principal};
use crate::storage::sql::Conn;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use uuid::Uuid;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    /// The account whose data this call may see.
    pub fn account(&self) -> Uuid {
        self.0.account_uuid
    }

    /// # Errors
    /// `403 forbidden` naming the scope when the key lacks it.
    pub fn require(&self, scope: &str) -> Result<()> {
        if self.0.scopes.allows(scope) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("this API key lacks the scope {scope}")))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(Error::Unauthorized("missing Authorization header"))?
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Error::Unauthorized("Authorization must be: Bearer <api key>"))?;
        let principal = if let Some(p) = state.keys.as_ref().and_then(|c| c.get(token)) {
            Some(p)
        } else {
            let mut conn = state.db.read.acquire().await?;
            if token.starts_with(TOKEN_PREFIX) {
                state.tokens.verify(token, state.clock.now(), &mut conn).await?
            } else {
                let found = accounts::authenticate(&mut conn, token).await?;
                if let (Some(cache), Some(p)) = (&state.keys, &found) {
                    cache.put(token, p.clone());
                }
                found
            }
        };
        let principal = principal.ok_or(Error::Unauthorized("unknown or revoked API key"))?;
        if let Some(limiter) = &state.limiter
            && let Err(not_until) = limiter.check_key(&principal.key_uuid)
        {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            return Err(Error::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 });
        }
        Ok(Auth(principal))
    }
}

/// Per-key token bucket (burst = 2 × rate).
pub type KeyedLimiter = governor::DefaultKeyedRateLimiter<Uuid>;

pub fn limiter(per_second: u32) -> Option<std::sync::Arc<KeyedLimiter>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let burst = std::num::NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(std::sync::Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))))
}

const TOKEN_PREFIX: &str = "fht_";

/// Temporary API tokens (`X-Planado-Api-Token`): stateless, signed with a
/// server secret kept in the database so that every node accepts them. A
/// token names its key and expiry; it dies with the key and never manages
/// keys.
#[derive(Clone)]
pub struct TokenSigner {
    /// Keyed once: a token is issued with every delivery attempt.
    keyed: Hmac<Sha256>,
}

impl TokenSigner {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { keyed: Hmac::<Sha256>::new_from_slice(&secret).expect("any key length") }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(payload);
        mac
    }

    /// When a token issued at `now` expires (unix microseconds): `ttl`
    /// later, rounded up to the next whole second. It stays valid for the
    /// whole lifetime from the start of the request it goes with
    /// (webhooks.md: "valid for 60 s from the start of this request"), at
    /// most a second longer, and tokens issued within one second are equal.
    pub fn expiry(now: DateTime<Utc>, ttl: Duration) -> i64 {
        const SECOND: i64 = 1_000_000;
        let exact = (now + chrono::TimeDelta::from_std(ttl).unwrap_or_default()).timestamp_micros();
        (exact + SECOND - 1).div_euclid(SECOND) * SECOND
    }

    /// A token for `key` that expires at `expires` ([`expiry`](Self::expiry)).
    pub fn issue_until(&self, key: Uuid, expires: i64) -> String {
        let mut payload = Vec::with_capacity(24);
        payload.extend_from_slice(key.as_bytes());
        payload.extend_from_slice(&expires.to_be_bytes());
        let sig = self.mac(&payload).finalize().into_bytes();
        format!("{TOKEN_PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(sig))
    }

    /// The principal of a valid, unexpired token whose key is still live.
    pub async fn verify(&self, token: &str, now: DateTime<Utc>, conn: &mut Conn) -> Result<Option<Principal>> {
        let Some((payload, sig)) = token.strip_prefix(TOKEN_PREFIX).and_then(|t| t.split_once('.')) else {
            return Ok(None);
        };
        let (Ok(payload), Ok(sig)) = (URL_SAFE_NO_PAD.decode(payload), URL_SAFE_NO_PAD.decode(sig)) else {
            return Ok(None);
        };
        if payload.len() != 24 || self.mac(&payload).verify_slice(&sig).is_err() {
            return Ok(None);
        }
        let key = Uuid::from_slice(&payload[..16]).expect("16 bytes");
        let expires = i64::from_be_bytes(payload[16..24].try_into().expect("8 bytes"));
        if now.timestamp_micros() >= expires {
            return Ok(None);
        }
        Ok(accounts::live_key(conn, key).await?.map(|mut p| {
            p.scopes = p.scopes.without_key_management();
            p
        }))
    }
}

/// Keys this process has verified, so that a request need not read the
/// database to authenticate. Only sound where every revocation goes through
/// this process — a SQLite server, which owns its file alone; with
/// PostgreSQL another node may revoke a key, so there is no cache.
/// Revocation clears it, so it "takes effect on the next request".
#[derive(Default)]
pub struct KeyCache {
    // Keyed by a hash of the presented key: the secret itself is not kept.
    entries: std::sync::RwLock<std::collections::HashMap<[u8; 32], Principal>>,
}

impl KeyCache {
    fn slot(token: &str) -> [u8; 32] {
        use sha2::Digest;
        Sha256::digest(token.as_bytes()).into()
    }

    pub fn get(&self, token: &str) -> Option<Principal> {
        self.entries.read().expect("key cache lock").get(&Self::slot(token)).cloned()
    }

    fn put(&self, token: &str, principal: Principal) {
        let mut entries = self.entries.write().expect("key cache lock");
        // Bounded: a flood of distinct valid keys cannot grow it for ever.
        if entries.len() >= 10_000 {
            entries.clear();
        }
        entries.insert(Self::slot(token), principal);
    }

    /// Forgets everything (after a revocation).
    pub fn clear(&self) {
        self.entries.write().expect("key cache lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_expires_a_lifetime_later_rounded_up_to_a_whole_second() {
        let ttl = Duration::from_secs(60);
        let at = |micros: i64| DateTime::<Utc>::from_timestamp_micros(micros).unwrap();
        // Within one second every token expires at the same moment, never
        // before a full lifetime has passed.
        assert_eq!(TokenSigner::expiry(at(1_000_000_001), ttl), 1_061_000_000);
        assert_eq!(TokenSigner::expiry(at(1_000_999_999), ttl), 1_061_000_000);
        // On a whole second it is exactly the lifetime.
        assert_eq!(TokenSigner::expiry(at(1_000_000_000), ttl), 1_060_000_000);
        let signer = TokenSigner::new(vec![1; 32]);
        let key = Uuid::now_v7();
        let expires = TokenSigner::expiry(at(1_000_000_001), ttl);
        assert_eq!(signer.issue_until(key, expires), signer.issue_until(key, expires));
    }
}
