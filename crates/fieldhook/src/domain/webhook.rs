//! Webhooks (webhooks.md): the subscription, its URL rules, the Standard
//! Webhooks signature, and the delivery policy — retry delays with jitter,
//! `Retry-After`, suspension. Pure rules; the engine in `delivery` applies
//! them.

use super::common::ts;
use super::event::EventType;
use crate::error::{Result, Violations};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::IpAddr;
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Events are sent as they happen; receivers order by `version`.
    None,
    /// Events about one resource are sent strictly in version order.
    Entity,
}

impl Ordering {
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Entity => "entity",
        }
    }
    pub fn parse(s: &str) -> Ordering {
        if s == "entity" { Ordering::Entity } else { Ordering::None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    Active,
    /// Held by the user: events are recorded, nothing is sent.
    Paused,
    /// Held after failing for long: events are recorded, one probe every
    /// probe interval.
    Suspended,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Active => "active",
            WebhookStatus::Paused => "paused",
            WebhookStatus::Suspended => "suspended",
        }
    }
    pub fn parse(s: &str) -> WebhookStatus {
        match s {
            "paused" => WebhookStatus::Paused,
            "suspended" => WebhookStatus::Suspended,
            _ => WebhookStatus::Active,
        }
    }
}

/// A webhook as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub uuid: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    /// Sent as `X-Planado-Secret` when set.
    pub secret: Option<String>,
    /// `whsec_` + base64 of 32 random bytes: the Standard Webhooks key.
    pub signing_secret: String,
    pub ordering: Ordering,
    pub status: WebhookStatus,
    #[serde(with = "ts::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspension_reason: Option<String>,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "ts")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// The body of `POST /v2/webhooks` and `PATCH /v2/webhooks/{uuid}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// An http or https URL (`check_url`), in ASCII (a host in another
    /// script is written in its punycode form).
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9\[][!-~]*$")]
    pub url: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Sent as a header: printable ASCII only.
    #[serde(default, deserialize_with = "super::common::nullable")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[ -~]*$")]
    pub secret: Option<Option<String>>,
    #[serde(default)]
    pub ordering: Option<Ordering>,
}

impl WebhookInput {
    pub fn create(self, uuid: Uuid, now: DateTime<Utc>, allow_private: bool) -> Result<Webhook> {
        let blank = Webhook {
            uuid,
            url: String::new(),
            event_types: Vec::new(),
            secret: None,
            signing_secret: new_signing_secret(),
            ordering: Ordering::None,
            status: WebhookStatus::Active,
            suspended_at: None,
            suspension_reason: None,
            created_at: now,
            updated_at: now,
        };
        self.apply(&blank, now, allow_private)
    }

    pub fn apply(self, current: &Webhook, now: DateTime<Utc>, allow_private: bool) -> Result<Webhook> {
        let mut v = Violations::new();
        let mut w = current.clone();
        if let Some(url) = self.url {
            w.url = url.trim().to_string();
        }
        if let Some(types) = self.event_types {
            let mut seen = Vec::new();
            for t in types {
                if !seen.contains(&t) {
                    seen.push(t);
                }
            }
            w.event_types = seen;
        }
        if let Some(secret) = self.secret {
            w.secret = secret.filter(|s| !s.is_empty());
        }
        if let Some(o) = self.ordering {
            w.ordering = o;
        }
        if let Err(m) = check_url(&w.url, allow_private) {
            v.add("url", m);
        }
        if w.event_types.is_empty() {
            v.add("event_types", "must name at least one event type");
        }
        for t in &w.event_types {
            if !EventType::from_name(t).is_some_and(EventType::subscribable) {
                v.add("event_types", format!("{t:?} is not an event type"));
            }
        }
        // It travels as an HTTP header value: visible ASCII only, or the
        // header could not be sent at all.
        if let Some(s) = &w.secret
            && (s.len() > 200 || !s.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            v.add("secret", "must be at most 200 printable ASCII characters");
        }
        v.into_result()?;
        w.updated_at = now;
        Ok(w)
    }
}

fn new_signing_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Checks a webhook URL: http(s), at most 2000 characters, and — unless
/// private targets are allowed — not aimed at a local or private host.
pub fn check_url(url: &str, allow_private: bool) -> std::result::Result<url::Url, String> {
    if url.is_empty() {
        return Err("is required".into());
    }
    if url.chars().count() > 2000 {
        return Err("must be at most 2000 characters".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("is not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    let host = match parsed.host() {
        Some(h) => h,
        None => return Err("must have a host".into()),
    };
    if !allow_private {
        let forbidden = match host {
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == "localhost" || d.ends_with(".localhost")
            }
            url::Host::Ipv4(ip) => is_forbidden(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => is_forbidden(IpAddr::V6(ip)),
        };
        if forbidden {
            return Err("must not point at a loopback, private, link-local, multicast or unspecified address".into());
        }
    }
    Ok(parsed)
}

/// Addresses a webhook may never reach (unless private targets are
/// allowed): loopback, private, shared (CGNAT), link-local, multicast,
/// broadcast, unspecified — IPv4-mapped IPv6 judged as its IPv4.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
        }
    }
}

/// The Standard Webhooks signature: `v1,` + base64(HMAC-SHA256(key,
/// "{id}.{timestamp}.{body}")), the key being the base64 after `whsec_`.
pub fn sign(signing_secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    PayloadSigner::new(signing_secret).sign(id, timestamp, body.as_bytes())
}

/// [`sign`] with the key prepared once per webhook: decoding the secret and
/// keying the HMAC cost as much as hashing a small body, on every attempt.
#[derive(Clone)]
pub struct PayloadSigner(Hmac<Sha256>);

/// What every signature starts with: the scheme's version.
const SIGNATURE_PREFIX: &[u8] = b"v1,";

/// The length of a signature: the prefix and the base64 of 32 bytes.
pub const SIGNATURE_LEN: usize = SIGNATURE_PREFIX.len() + 44;

impl PayloadSigner {
    pub fn new(signing_secret: &str) -> Self {
        let encoded = signing_secret.strip_prefix("whsec_").unwrap_or(signing_secret);
        let key = STANDARD.decode(encoded).unwrap_or_else(|_| encoded.as_bytes().to_vec());
        Self(Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut out = Vec::with_capacity(SIGNATURE_LEN);
        self.sign_into(id, timestamp, body, &mut out);
        String::from_utf8(out).expect("a signature is ASCII")
    }

    /// Appends the signature to `out`, which the delivery engine shares
    /// between the values of one attempt's headers (one allocation for
    /// all of them, where a `String` each cost one apiece).
    pub fn sign_into(&self, id: &str, timestamp: i64, body: &[u8], out: &mut Vec<u8>) {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body);
        out.extend_from_slice(SIGNATURE_PREFIX);
        let start = out.len();
        out.resize(start + SIGNATURE_LEN - SIGNATURE_PREFIX.len(), 0);
        let written = STANDARD.encode_slice(mac.finalize().into_bytes(), &mut out[start..]);
        debug_assert_eq!(written, Ok(SIGNATURE_LEN - SIGNATURE_PREFIX.len()));
    }
}

impl std::fmt::Debug for PayloadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadSigner(..)")
    }
}

/// When and how often to retry, and when to give up on a webhook.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay after failed attempt n (index n-1); its length is the number of retries.
    pub schedule: Vec<Duration>,
    /// ± fraction applied to each delay.
    pub jitter: f64,
    /// Suspend after at least this many consecutive failures …
    pub suspend_min_failures: u32,
    /// … and no success for this long.
    pub suspend_after: Duration,
    pub probe_interval: Duration,
}

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl RetryPolicy {
    /// The delay before the retry that follows failure number `failures`
    /// (1-based), or `None` when the retries ran out. `unit` is a random
    /// number in [0, 1) for the jitter; a longer `Retry-After` wins.
    pub fn delay(&self, failures: u32, unit: f64, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self.schedule.get(failures as usize - 1)?;
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        let jittered = base.mul_f64(factor.max(0.0));
        Some(match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }

    /// The jitter draw, in [0, 1), for the retry that follows failure
    /// number `failures` of a request to `webhook`. It is drawn per webhook
    /// and retry number, not per request: it still spreads the retries of
    /// different endpoints apart, while requests of one webhook that failed
    /// one after another are retried one after another, in the order their
    /// retries were written (`storage::deliveries::record`: event order).
    /// Drawn per request, it would shuffle them at every round, and a
    /// receiver replicating by version (full replication, webhooks.md) that
    /// refused a burst of versions behind a missing one would be offered the
    /// missing one in the middle of the rest again, applying a version or two
    /// per round — fewer than the schedule has rounds, for a burst of dozens.
    pub fn jitter_unit(webhook: uuid::Uuid, failures: u32) -> f64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (webhook, failures).hash(&mut h);
        // The top 53 bits: every such fraction is exact in an f64.
        (h.finish() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether a webhook that failed `consecutive` times in a row, failing
    /// since `failing_since`, should be suspended at `now`.
    pub fn should_suspend(&self, consecutive: i64, failing_since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        consecutive >= i64::from(self.suspend_min_failures)
            && (now - failing_since).to_std().is_ok_and(|d| d >= self.suspend_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(sig.len(), SIGNATURE_LEN);
        // Appended after what the buffer already holds.
        let mut out = b"42".to_vec();
        PayloadSigner::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign_into(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            &mut out,
        );
        assert_eq!(out, b"42v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_and_local_targets_are_refused() {
        for url in [
            "http://localhost/hook",
            "http://127.0.0.1:8080/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://100.64.0.1/",
            "http://app.localhost/",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
            assert!(check_url(url, true).is_ok(), "{url} is fine when private targets are allowed");
        }
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_url("http://93.184.216.34/", false).is_ok());
        assert!(check_url("ftp://example.com/", true).is_err());
        assert!(check_url("not a url", true).is_err());
    }

    #[test]
    fn retries_follow_the_schedule_with_bounded_jitter_and_retry_after() {
        let p = RetryPolicy {
            schedule: vec![Duration::from_secs(15), Duration::from_secs(30)],
            jitter: 0.1,
            suspend_min_failures: 20,
            suspend_after: Duration::from_secs(86400),
            probe_interval: Duration::from_secs(300),
        };
        assert_eq!(p.delay(1, 0.5, None), Some(Duration::from_secs(15)));
        assert_eq!(p.delay(1, 0.0, None), Some(Duration::from_secs_f64(13.5)));
        assert!(p.delay(2, 0.999, None).unwrap() <= Duration::from_secs(33));
        assert_eq!(p.delay(3, 0.5, None), None, "two retries, then no more");
        assert_eq!(p.delay(1, 0.5, Some(Duration::from_secs(120))), Some(Duration::from_secs(120)));
        assert_eq!(p.delay(1, 0.5, Some(Duration::from_secs(1))), Some(Duration::from_secs(15)));
        assert_eq!(p.delay(1, 0.5, Some(Duration::from_secs(10 * 86400))), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn the_jitter_is_one_draw_per_webhook_and_retry_number() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        assert_eq!(RetryPolicy::jitter_unit(a, 3), RetryPolicy::jitter_unit(a, 3));
        let draws: Vec<f64> =
            (1..=17).flat_map(|n| [RetryPolicy::jitter_unit(a, n), RetryPolicy::jitter_unit(b, n)]).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)), "{draws:?}");
        // Spread, not one value: over 34 draws, both halves of [0, 1) occur.
        assert!(draws.iter().any(|u| *u < 0.5) && draws.iter().any(|u| *u >= 0.5), "{draws:?}");
        let distinct: std::collections::HashSet<u64> = draws.iter().map(|u| u.to_bits()).collect();
        assert_eq!(distinct.len(), draws.len(), "webhooks and retry numbers draw apart");
    }

    #[test]
    fn suspension_needs_both_many_failures_and_a_long_time() {
        let p = RetryPolicy {
            schedule: vec![],
            jitter: 0.0,
            suspend_min_failures: 20,
            suspend_after: Duration::from_secs(86400),
            probe_interval: Duration::from_secs(300),
        };
        let t0 = Utc::now();
        let day = chrono::TimeDelta::hours(24);
        assert!(!p.should_suspend(19, t0, t0 + day));
        assert!(!p.should_suspend(25, t0, t0 + chrono::TimeDelta::hours(23)));
        assert!(p.should_suspend(20, t0, t0 + day));
    }
}
