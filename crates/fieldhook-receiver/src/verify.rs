//! Request verification (webhooks.md, "Headers"): the shared
//! `X-Planado-Secret` and the Standard Webhooks signature
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! Verification is a pure function of the headers, the raw body and a
//! `now`, so that a test can pin the clock; [`Verifier::verify_now`] reads
//! the verifier's clock (the system clock unless one was injected).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// `X-Planado-Secret`: the webhook's `secret`, sent verbatim when set.
pub const PLANADO_SECRET_HEADER: &str = "x-planado-secret";
/// `webhook-id`: the event's `event_uuid`.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// `webhook-timestamp`: unix seconds of the attempt.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `webhook-signature`: one or more space-separated `v1,<base64>`.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// `X-Planado-Delivery-Attempt`: 1, 2, 3 … for this event and webhook.
pub const DELIVERY_ATTEMPT_HEADER: &str = "x-planado-delivery-attempt";
/// `X-Planado-Api-Token`: a token valid 60 s, to call the API straight back.
pub const API_TOKEN_HEADER: &str = "x-planado-api-token";

/// The default tolerance between `webhook-timestamp` and now: the value the
/// Standard Webhooks specification recommends.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Read access to request headers, whatever the HTTP library.
///
/// Implemented for `http::HeaderMap` (with the `axum` feature), for slices,
/// arrays and vectors of `(name, value)` pairs, and for `HashMap`s. Names are
/// matched case-insensitively.
pub trait HeaderSource {
    /// The value of the header `name` (given in lower case), if present and
    /// text; the first one if repeated.
    fn header(&self, name: &str) -> Option<&str>;
}

impl<T: HeaderSource + ?Sized> HeaderSource for &T {
    fn header(&self, name: &str) -> Option<&str> {
        (**self).header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderSource for [(K, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> HeaderSource for [(K, V); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> HeaderSource for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, S> HeaderSource for std::collections::HashMap<K, V, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
}

#[cfg(feature = "axum")]
impl HeaderSource for ::axum::http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request was not accepted as coming from fieldhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the configured checks need is absent (or not text).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("invalid header {0}")]
    InvalidHeader(&'static str),
    /// `X-Planado-Secret` differs from the configured secret.
    #[error("wrong X-Planado-Secret")]
    WrongSecret,
    /// No `v1` signature of `webhook-signature` matches the body.
    #[error("no valid webhook-signature")]
    BadSignature,
    /// Signed, but longer ago than the tolerance: possibly a replay.
    #[error("webhook-timestamp {timestamp} is older than the tolerance (now {now})")]
    StaleTimestamp {
        /// `webhook-timestamp`, unix seconds.
        timestamp: i64,
        /// The verifier's now, unix seconds.
        now: i64,
    },
    /// Signed further in the future than the tolerance: a wrong clock on one side.
    #[error("webhook-timestamp {timestamp} is ahead of now ({now}) by more than the tolerance")]
    FutureTimestamp {
        /// `webhook-timestamp`, unix seconds.
        timestamp: i64,
        /// The verifier's now, unix seconds.
        now: i64,
    },
}

/// The signing secret is not `whsec_` followed by base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signing secret must be \"whsec_\" followed by base64")]
pub struct InvalidSigningSecret;

/// A Standard Webhooks signing secret (the webhook's `signing_secret`).
///
/// Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl std::str::FromStr for SigningSecret {
    type Err = InvalidSigningSecret;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SigningSecret::parse(s)
    }
}

type HmacSha256 = Hmac<Sha256>;

impl SigningSecret {
    /// Parses `whsec_<base64>` (the prefix may be left out).
    ///
    /// # Errors
    ///
    /// [`InvalidSigningSecret`] when the rest is not base64 or is empty: a
    /// typo must fail at start-up, not as 401s on every delivery.
    pub fn parse(secret: &str) -> Result<Self, InvalidSigningSecret> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        let key = STANDARD.decode(encoded).map_err(|_| InvalidSigningSecret)?;
        if key.is_empty() {
            return Err(InvalidSigningSecret);
        }
        Ok(Self { key })
    }

    /// The signature fieldhook sends for this message: `v1,` + base64 of
    /// HMAC-SHA256 over `"{id}.{timestamp}.{body}"`. Useful to build signed
    /// requests in a receiver's own tests.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.tag(id, &timestamp.to_string(), body)))
    }

    /// The raw HMAC; the timestamp is taken as the header text, since that
    /// is what the sender signed.
    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// Where a [`Verifier`] reads "now" from in [`Verifier::verify_now`].
type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Checks that a request comes from fieldhook.
///
/// Built with [`Verifier::builder`]; it checks `X-Planado-Secret`, the
/// Standard Webhooks signature, or both, whichever were configured — every
/// configured check must pass. Cheap to clone (put it in your app state).
///
/// ```
/// use fieldhook_receiver::Verifier;
/// use std::time::Duration;
///
/// let verifier = Verifier::builder()
///     .signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
///     .tolerance(Duration::from_secs(120))
///     .build()?;
/// # Ok::<(), fieldhook_receiver::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// SHA-256 of the expected `X-Planado-Secret`: comparing digests keeps the
    /// comparison constant-time whatever the lengths, and the plain secret
    /// is not kept in memory.
    planado_secret: Option<[u8; 32]>,
    signing_secret: Option<SigningSecret>,
    tolerance: Duration,
    clock: Clock,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("planado_secret", &self.inner.planado_secret.map(|_| "***"))
            .field("signing_secret", &self.inner.signing_secret)
            .field("tolerance", &self.inner.tolerance)
            .finish_non_exhaustive()
    }
}

/// A [`Verifier`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The signing secret is malformed.
    #[error(transparent)]
    InvalidSigningSecret(#[from] InvalidSigningSecret),
    /// Neither a secret nor a signing secret was given: such a verifier would
    /// accept anything.
    #[error("configure a signing secret, an X-Planado-Secret, or both")]
    NothingToVerify,
}

/// Builds a [`Verifier`].
#[derive(Default)]
#[must_use]
pub struct VerifierBuilder {
    planado_secret: Option<String>,
    signing_secret: Option<String>,
    tolerance: Option<Duration>,
    clock: Option<Clock>,
}

impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder").field("tolerance", &self.tolerance).finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// Requires `X-Planado-Secret` to equal `secret` (the webhook's `secret`).
    pub fn planado_secret(mut self, secret: impl Into<String>) -> Self {
        self.planado_secret = Some(secret.into());
        self
    }

    /// Requires a valid Standard Webhooks signature made with `secret` (the
    /// webhook's `signing_secret`, `whsec_…`). Checked by [`build`](Self::build).
    pub fn signing_secret(mut self, secret: impl Into<String>) -> Self {
        self.signing_secret = Some(secret.into());
        self
    }

    /// How far `webhook-timestamp` may be from now, either way (default
    /// [`DEFAULT_TOLERANCE`], 5 minutes). Bounds how long a captured request
    /// can be replayed.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Where [`Verifier::verify_now`] reads the time (default: the system
    /// clock). Tests pin it.
    pub fn clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the verifier.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSigningSecret`] for a malformed signing secret,
    /// [`ConfigError::NothingToVerify`] when no check was configured.
    pub fn build(self) -> Result<Verifier, ConfigError> {
        let signing_secret = self.signing_secret.as_deref().map(SigningSecret::parse).transpose()?;
        let planado_secret = self.planado_secret.as_deref().map(digest);
        if signing_secret.is_none() && planado_secret.is_none() {
            return Err(ConfigError::NothingToVerify);
        }
        Ok(Verifier {
            inner: Arc::new(Inner {
                planado_secret,
                signing_secret,
                tolerance: self.tolerance.unwrap_or(DEFAULT_TOLERANCE),
                clock: self.clock.unwrap_or_else(|| Arc::new(Utc::now)),
            }),
        })
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl Verifier {
    /// Starts configuring a verifier.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    /// The time the verifier's clock says it is.
    pub fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    /// [`verify`](Self::verify) at the verifier's clock.
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    pub fn verify_now<H: HeaderSource + ?Sized>(&self, headers: &H, body: &[u8]) -> Result<(), VerifyError> {
        self.verify(headers, body, self.now())
    }

    /// Checks the request's headers against its raw body, as of `now`.
    ///
    /// `body` must be the bytes as received: the signature covers them
    /// exactly, so re-serialised JSON will not verify.
    ///
    /// # Errors
    ///
    /// The first check that fails, as a [`VerifyError`]: the secret first,
    /// then the signature, then the timestamp — so that a stale timestamp is
    /// only reported for a genuine (signed) message, i.e. a replay or a
    /// long-delayed delivery.
    pub fn verify<H: HeaderSource + ?Sized>(
        &self,
        headers: &H,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), VerifyError> {
        let inner = &*self.inner;
        if let Some(expected) = &inner.planado_secret {
            let got = headers.header(PLANADO_SECRET_HEADER).ok_or(VerifyError::MissingHeader(PLANADO_SECRET_HEADER))?;
            if !bool::from(digest(got).ct_eq(expected)) {
                return Err(VerifyError::WrongSecret);
            }
        }
        if let Some(secret) = &inner.signing_secret {
            let header = |name| headers.header(name).ok_or(VerifyError::MissingHeader(name));
            let id = header(WEBHOOK_ID_HEADER)?;
            let timestamp_text = header(WEBHOOK_TIMESTAMP_HEADER)?;
            let signatures = header(WEBHOOK_SIGNATURE_HEADER)?;
            let timestamp: i64 =
                timestamp_text.parse().map_err(|_| VerifyError::InvalidHeader(WEBHOOK_TIMESTAMP_HEADER))?;

            let expected = secret.tag(id, timestamp_text, body);
            // Several signatures appear during a key rotation; any v1 that
            // matches will do. Other schemes (v1a …) are not ours to check.
            let matches = signatures
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .filter_map(|b64| STANDARD.decode(b64).ok())
                .any(|candidate| bool::from(candidate.ct_eq(&expected)));
            if !matches {
                return Err(VerifyError::BadSignature);
            }

            let now = now.timestamp();
            let tolerance = i64::try_from(inner.tolerance.as_secs()).unwrap_or(i64::MAX);
            if timestamp < now.saturating_sub(tolerance) {
                return Err(VerifyError::StaleTimestamp { timestamp, now });
            }
            if timestamp > now.saturating_add(tolerance) {
                return Err(VerifyError::FutureTimestamp { timestamp, now });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    fn signed_headers(signature: &str) -> Vec<(&'static str, String)> {
        vec![
            ("webhook-id", ID.to_string()),
            ("Webhook-Timestamp", TIMESTAMP.to_string()),
            ("webhook-signature", signature.to_string()),
        ]
    }

    fn verifier() -> Verifier {
        Verifier::builder().signing_secret(SECRET).build().unwrap()
    }

    #[test]
    fn signing_reproduces_the_standard_webhooks_test_vector() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn the_standard_webhooks_test_vector_verifies_at_its_own_time() {
        let result = verifier().verify(&signed_headers(SIGNATURE), BODY.as_bytes(), at(TIMESTAMP + 10));
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn any_matching_v1_signature_among_several_is_enough() {
        let header = format!("v1a,AAAA v1,bm90IHRoZSByaWdodCBvbmU= garbage {SIGNATURE}");
        assert_eq!(verifier().verify(&signed_headers(&header), BODY.as_bytes(), at(TIMESTAMP)), Ok(()));
    }

    #[test]
    fn tampered_or_wrongly_signed_requests_are_rejected_with_a_reason() {
        let now = at(TIMESTAMP);
        let other_secret =
            Verifier::builder().signing_secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").build();
        // (why, verifier, headers, body, expected rejection)
        type Case = (&'static str, Verifier, Vec<(&'static str, String)>, &'static str, VerifyError);
        let cases: Vec<Case> = vec![
            (
                "tampered body",
                verifier(),
                signed_headers(SIGNATURE),
                r#"{"test": 2432232315}"#,
                VerifyError::BadSignature,
            ),
            ("wrong secret", other_secret.unwrap(), signed_headers(SIGNATURE), BODY, VerifyError::BadSignature),
            (
                "signature of another scheme only",
                verifier(),
                signed_headers("v1a,g0hM9SsE"),
                BODY,
                VerifyError::BadSignature,
            ),
            (
                "no signature header",
                verifier(),
                signed_headers(SIGNATURE)[..2].to_vec(),
                BODY,
                VerifyError::MissingHeader("webhook-signature"),
            ),
            (
                "no id header",
                verifier(),
                signed_headers(SIGNATURE)[1..].to_vec(),
                BODY,
                VerifyError::MissingHeader("webhook-id"),
            ),
            (
                "timestamp not a number",
                verifier(),
                vec![
                    ("webhook-id", ID.into()),
                    ("webhook-timestamp", "yesterday".into()),
                    ("webhook-signature", SIGNATURE.into()),
                ],
                BODY,
                VerifyError::InvalidHeader("webhook-timestamp"),
            ),
            (
                "timestamp changed after signing",
                verifier(),
                vec![
                    ("webhook-id", ID.into()),
                    ("webhook-timestamp", (TIMESTAMP + 1).to_string()),
                    ("webhook-signature", SIGNATURE.into()),
                ],
                BODY,
                VerifyError::BadSignature,
            ),
        ];
        for (why, verifier, headers, body, expected) in cases {
            assert_eq!(verifier.verify(&headers, body.as_bytes(), now), Err(expected), "{why}");
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_rejected_either_way() {
        let v = verifier();
        let headers = signed_headers(SIGNATURE);
        let five_minutes = 5 * 60;
        assert_eq!(v.verify(&headers, BODY.as_bytes(), at(TIMESTAMP + five_minutes)), Ok(()), "at the edge");
        assert_eq!(
            v.verify(&headers, BODY.as_bytes(), at(TIMESTAMP + five_minutes + 1)),
            Err(VerifyError::StaleTimestamp { timestamp: TIMESTAMP, now: TIMESTAMP + five_minutes + 1 })
        );
        assert_eq!(
            v.verify(&headers, BODY.as_bytes(), at(TIMESTAMP - five_minutes - 1)),
            Err(VerifyError::FutureTimestamp { timestamp: TIMESTAMP, now: TIMESTAMP - five_minutes - 1 })
        );
        let strict = Verifier::builder().signing_secret(SECRET).tolerance(Duration::from_secs(5)).build().unwrap();
        assert!(matches!(
            strict.verify(&headers, BODY.as_bytes(), at(TIMESTAMP + 6)),
            Err(VerifyError::StaleTimestamp { .. })
        ));
    }

    #[test]
    fn verify_now_reads_the_injected_clock() {
        let v = Verifier::builder().signing_secret(SECRET).clock(|| at(TIMESTAMP + 1)).build().unwrap();
        assert_eq!(v.verify_now(&signed_headers(SIGNATURE), BODY.as_bytes()), Ok(()));
    }

    #[test]
    fn the_planado_secret_must_match_exactly() {
        let v = Verifier::builder().planado_secret("s3cret").build().unwrap();
        let now = at(0);
        assert_eq!(v.verify(&[("X-Planado-Secret", "s3cret")], b"{}", now), Ok(()));
        assert_eq!(v.verify(&[("x-planado-secret", "s3cre")], b"{}", now), Err(VerifyError::WrongSecret));
        assert_eq!(v.verify(&[("x-planado-secret", "s3cret ")], b"{}", now), Err(VerifyError::WrongSecret));
        let none: [(&str, &str); 0] = [];
        assert_eq!(v.verify(&none, b"{}", now), Err(VerifyError::MissingHeader("x-planado-secret")));
    }

    #[test]
    fn both_checks_must_pass_when_both_are_configured() {
        let v = Verifier::builder().planado_secret("s3cret").signing_secret(SECRET).build().unwrap();
        let mut headers = signed_headers(SIGNATURE);
        assert_eq!(
            v.verify(&headers, BODY.as_bytes(), at(TIMESTAMP)),
            Err(VerifyError::MissingHeader("x-planado-secret")),
            "a valid signature does not excuse a missing secret"
        );
        headers.push(("x-planado-secret", "s3cret".into()));
        assert_eq!(v.verify(&headers, BODY.as_bytes(), at(TIMESTAMP)), Ok(()));
        headers[2].1 = "v1,AAAA".into();
        assert_eq!(v.verify(&headers, BODY.as_bytes(), at(TIMESTAMP)), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_verifier_that_would_accept_anything_cannot_be_built() {
        assert_eq!(Verifier::builder().build().unwrap_err(), ConfigError::NothingToVerify);
        assert_eq!(
            Verifier::builder().signing_secret("whsec_not base64!").build().unwrap_err(),
            ConfigError::InvalidSigningSecret(InvalidSigningSecret)
        );
        assert!(SigningSecret::parse("whsec_").is_err(), "an empty key");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let v = Verifier::builder().planado_secret("s3cret").signing_secret(SECRET).build().unwrap();
        let shown = format!("{v:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("MfKQ9r8"), "{shown}");
    }
}
