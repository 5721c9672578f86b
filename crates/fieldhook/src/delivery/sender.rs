//! One HTTP attempt: the POST with its headers, the answer read (up to 16
//! KiB of body), and every failure mapped to an `error_type` of
//! webhooks.md. The client keeps connections alive per endpoint, follows no
//! redirects, and resolves names through a resolver that refuses forbidden
//! addresses — so DNS cannot be used to reach internal hosts.

use crate::domain::webhook::is_forbidden;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest response body kept in the request log.
pub const MAX_LOGGED_BODY: usize = 16 * 1024;

/// The HTTP client of the delivery engine.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
    allow_private: bool,
}

/// What came back from one attempt.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub code: Option<u16>,
    pub headers: Option<String>,
    pub body: Option<String>,
    pub error_type: Option<&'static str>,
    pub error_description: Option<String>,
    pub retry_after: Option<Duration>,
    pub elapsed: Duration,
}

#[derive(Debug)]
struct ForbiddenAddress(String);
impl fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} resolves only to forbidden addresses", self.0)
    }
}
impl StdError for ForbiddenAddress {}

#[derive(Debug)]
struct DnsFailure(String);
impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve {}", self.0)
    }
}
impl StdError for DnsFailure {}

/// Resolves with the system resolver and drops forbidden addresses.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(DnsFailure(format!("{host}: {e}"))) as Box<dyn StdError + Send + Sync>)?
                .collect();
            if found.is_empty() {
                return Err(Box::new(DnsFailure(host)) as Box<dyn StdError + Send + Sync>);
            }
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| allow_private || !is_forbidden(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(ForbiddenAddress(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("fieldhook/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .expect("the HTTP client configuration is valid");
        Self { client, timeout, allow_private }
    }

    /// POSTs `body` to `url` (`parsed` is `url` parsed, once per webhook)
    /// with `headers`; never fails, every problem is part of the answer.
    pub async fn post(
        &self,
        url: &str,
        parsed: &Result<url::Url, url::ParseError>,
        headers: reqwest::header::HeaderMap,
        body: String,
    ) -> Answer {
        let started = Instant::now();
        let mut answer = match parsed {
            Err(e) => failure("connection failure", format!("{url:?} is not a URL: {e}")),
            Ok(parsed) => match self.refuse_literal(parsed) {
                Some(a) => a,
                None => match tokio::time::timeout(self.timeout, self.exchange(parsed.clone(), headers, body)).await {
                    Ok(a) => a,
                    Err(_) => failure("timeout", format!("no complete answer within {:?}", self.timeout)),
                },
            },
        };
        answer.elapsed = started.elapsed();
        answer
    }

    /// IP-literal URLs never reach the resolver: check them here.
    fn refuse_literal(&self, url: &url::Url) -> Option<Answer> {
        if self.allow_private {
            return None;
        }
        let ip: IpAddr = match url.host()? {
            url::Host::Ipv4(v4) => v4.into(),
            url::Host::Ipv6(v6) => v6.into(),
            url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
                return Some(failure("forbidden address", "localhost is not a permitted target".into()));
            }
            url::Host::Domain(_) => return None,
        };
        is_forbidden(ip).then(|| failure("forbidden address", format!("{ip} is not a permitted target")))
    }

    async fn exchange(&self, url: url::Url, headers: reqwest::header::HeaderMap, body: String) -> Answer {
        let response = match self.client.post(url).headers(headers).body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let (kind, description) = classify(&e);
                return failure(kind, description);
            }
        };
        let code = response.status().as_u16();
        let retry_after = if code == 429 || code == 503 {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
        } else {
            None
        };
        let mut header_map = serde_json::Map::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match header_map.get_mut(name.as_str()) {
                Some(serde_json::Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    header_map.insert(name.as_str().to_string(), serde_json::Value::String(value));
                }
            }
        }
        let (body, read_error) = read_limited(response).await;
        let mut answer = Answer {
            code: Some(code),
            headers: Some(serde_json::Value::Object(header_map).to_string()),
            body: Some(body),
            retry_after,
            ..Answer::default()
        };
        if let Some(e) = read_error {
            // The status arrived but the body broke off: not a success.
            let (kind, description) = classify(&e);
            answer.error_type = Some(kind);
            answer.error_description = Some(description);
            if (200..300).contains(&code) {
                answer.code = None;
            }
        }
        answer
    }
}

/// Reads at most [`MAX_LOGGED_BODY`] bytes of the body.
async fn read_limited(mut response: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut kept: Vec<u8> = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_LOGGED_BODY - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if kept.len() >= MAX_LOGGED_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return (String::from_utf8_lossy(&kept).into_owned(), Some(e)),
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), None)
}

fn failure(kind: &'static str, description: String) -> Answer {
    Answer { error_type: Some(kind), error_description: Some(description), ..Answer::default() }
}

/// Maps a client error to the `error_type` values of webhooks.md.
fn classify(e: &reqwest::Error) -> (&'static str, String) {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = source {
        chain.push(s);
        source = s.source();
    }
    let description = chain.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(": ");
    let kind = if chain.iter().any(|s| s.is::<ForbiddenAddress>()) {
        "forbidden address"
    } else if chain.iter().any(|s| s.is::<DnsFailure>()) {
        "dns failure"
    } else if e.is_timeout() {
        "timeout"
    } else if chain.iter().any(|s| {
        let text = format!("{s:?}").to_ascii_lowercase();
        text.contains("rustls") || text.contains("certificate") || text.contains("tls")
    }) {
        "tls failure"
    } else {
        "connection failure"
    };
    (kind, description)
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let later = (chrono::Utc::now() + chrono::TimeDelta::seconds(600)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(590) && d <= Duration::from_secs(600));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
