//! One HTTP attempt: the POST with its headers, the answer read (up to 16
//! KiB of body), and every failure mapped to an `error_type` of
//! webhooks.md.
//!
//! The client is hyper's HTTP/1.1 connection API with a small keep-alive
//! pool of our own, not reqwest: in a drain profile reqwest and hyper-util's
//! pooled client were 59 % of the server's runtime CPU, most of it layers a
//! webhook sender does not need (proxy lookup, redirect policy, a URL parse
//! and a pool key built per request, decompression wrappers). Here each
//! webhook's endpoint is parsed once per read of the webhooks
//! ([`Endpoint`]), a request is the request line, our headers and the body,
//! and an idle connection is taken from a per-origin stack.
//!
//! It follows no redirects, and resolves names itself, refusing forbidden
//! addresses — so DNS cannot be used to reach internal hosts.

use crate::domain::webhook::is_forbidden;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderMap, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Longest response body kept in the request log.
pub const MAX_LOGGED_BODY: usize = 16 * 1024;

/// Idle connections kept per origin, and for how long.
const MAX_IDLE_PER_ORIGIN: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const USER_AGENT_VALUE: &str = concat!("fieldhook/", env!("CARGO_PKG_VERSION"));

/// Where a webhook's requests go, parsed once from its URL.
#[derive(Debug)]
pub struct Endpoint {
    https: bool,
    /// The host name (for DNS and TLS), or the literal address.
    host: Host,
    port: u16,
    /// Path and query: the request target.
    target: hyper::Uri,
    /// The `Host` header.
    host_header: HeaderValue,
    /// The pool's key: scheme, host and port.
    origin: Arc<str>,
}

#[derive(Debug, Clone)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Endpoint {
    /// Parses a webhook URL; the error says what is wrong with it.
    ///
    /// # Errors
    /// Not an absolute http(s) URL with a host.
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let https = match parsed.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("{url:?}: the scheme {other:?} is not http or https")),
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => Host::Name(d.to_string()),
            Some(url::Host::Ipv4(v4)) => Host::Ip(v4.into()),
            Some(url::Host::Ipv6(v6)) => Host::Ip(v6.into()),
            None => return Err(format!("{url:?} has no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
        let mut target = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            target.push('?');
            target.push_str(q);
        }
        let target: hyper::Uri = target.parse().map_err(|e| format!("{url:?}: {e}"))?;
        // The URL crate has already normalised the host (IDNA, brackets).
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        let host_header = HeaderValue::from_str(&authority).map_err(|e| format!("{url:?}: {e}"))?;
        let origin = format!("{}://{}:{port}", parsed.scheme(), parsed.host_str().unwrap_or_default()).into();
        Ok(Endpoint { https, host, port, target, host_header, origin })
    }
}

/// The HTTP client of the delivery engine. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

struct Inner {
    timeout: Duration,
    allow_private: bool,
    tls: tokio_rustls::TlsConnector,
    /// Looked up twice per attempt, so hashed with foldhash (see Cargo.toml);
    /// its keys are the webhooks' few origins, and each map has its own seed.
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>, foldhash::fast::RandomState>>,
}

struct Idle {
    conn: SendRequest<Full<Bytes>>,
    since: Instant,
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

/// A failed attempt: its `error_type` and what happened.
struct Failure(&'static str, String);

impl Failure {
    fn connection(e: impl std::fmt::Display) -> Self {
        Failure("connection failure", e.to_string())
    }
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> Self {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        Self { inner: Arc::new(Inner { timeout, allow_private, tls, idle: Mutex::default() }) }
    }

    /// POSTs `body` to `endpoint` (or reports why its URL is unusable) with
    /// `headers`; never fails, every problem is part of the answer.
    pub async fn post(&self, endpoint: &Result<Arc<Endpoint>, String>, headers: HeaderMap, body: Bytes) -> Answer {
        let started = Instant::now();
        let outcome = match endpoint {
            Err(e) => Err(Failure::connection(e)),
            Ok(endpoint) => match self.refuse_literal(endpoint) {
                Some(f) => Err(f),
                None => {
                    let timeout = self.inner.timeout;
                    // Boxed: the exchange's state is large, and each attempt's
                    // task would otherwise copy it around when it is spawned.
                    let exchange = Box::pin(self.exchange(endpoint, headers, body));
                    match tokio::time::timeout(timeout, exchange).await {
                        Ok(a) => a,
                        Err(_) => Err(Failure("timeout", format!("no complete answer within {timeout:?}"))),
                    }
                }
            },
        };
        let mut answer = outcome.unwrap_or_else(|Failure(kind, description)| Answer {
            error_type: Some(kind),
            error_description: Some(description),
            ..Answer::default()
        });
        answer.elapsed = started.elapsed();
        answer
    }

    /// IP-literal URLs never reach the resolver: check them here.
    fn refuse_literal(&self, endpoint: &Endpoint) -> Option<Failure> {
        if self.inner.allow_private {
            return None;
        }
        match &endpoint.host {
            Host::Name(d) if d.eq_ignore_ascii_case("localhost") => {
                Some(Failure("forbidden address", "localhost is not a permitted target".into()))
            }
            Host::Name(_) => None,
            Host::Ip(ip) => {
                is_forbidden(*ip).then(|| Failure("forbidden address", format!("{ip} is not a permitted target")))
            }
        }
    }

    async fn exchange(&self, endpoint: &Endpoint, headers: HeaderMap, body: Bytes) -> Result<Answer, Failure> {
        // Built in place rather than through `Request::builder`, whose
        // fallible steps moved the request's parts five times per attempt.
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = endpoint.target.clone();
        *request.headers_mut() = headers;
        request.headers_mut().insert(HOST, endpoint.host_header.clone());
        request.headers_mut().insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        // An idle connection may have been closed by the receiver just now;
        // a request it never took is sent again on a fresh connection.
        let (conn, response) = loop {
            let (mut conn, reused) = match self.checkout(&endpoint.origin) {
                Some(c) => (c, true),
                // Boxed: a TLS handshake's state is large, and unboxed it sat
                // in every exchange's future, copied whole into its box per
                // attempt, though a connection is made rarely.
                None => (Box::pin(self.connect(endpoint)).await?, false),
            };
            // A connection takes a request once its task has finished the
            // last exchange (or the handshake); one that closed meanwhile
            // is dropped.
            if let Err(e) = conn.ready().await {
                if reused {
                    continue;
                }
                return Err(Failure::connection(describe(&e)));
            }
            match conn.try_send_request(request).await {
                Ok(response) => break (conn, response),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => request = r,
                    _ => return Err(Failure::connection(describe(&e.into_error()))),
                },
            }
        };
        let code = response.status().as_u16();
        let retry_after = if code == 429 || code == 503 {
            response.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after)
        } else {
            None
        };
        let header_json = headers_json(response.headers());
        let (body, complete, read_error) = read_limited(response.into_body()).await;
        if complete {
            self.checkin(&endpoint.origin, conn);
        }
        // Otherwise the connection goes: a body left unread or broken off
        // leaves it unusable.
        let mut answer =
            Answer { code: Some(code), headers: Some(header_json), body: Some(body), retry_after, ..Answer::default() };
        if let Some(e) = read_error {
            // The status arrived but the body broke off: not a success.
            answer.error_type = Some("connection failure");
            answer.error_description = Some(describe(&e));
            if (200..300).contains(&code) {
                answer.code = None;
            }
        }
        Ok(answer)
    }

    /// An idle connection to `origin` that is still open.
    fn checkout(&self, origin: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.inner.idle.lock().expect("idle connections lock");
        let stack = idle.get_mut(origin)?;
        let now = Instant::now();
        while let Some(c) = stack.pop() {
            if !c.conn.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.conn);
            }
        }
        None
    }

    fn checkin(&self, origin: &Arc<str>, conn: SendRequest<Full<Bytes>>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.inner.idle.lock().expect("idle connections lock");
        let stack = idle.entry(origin.clone()).or_default();
        // One reading of the clock for the whole stack.
        let now = Instant::now();
        stack.retain(|c| !c.conn.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
        if stack.len() >= MAX_IDLE_PER_ORIGIN {
            // The oldest goes: it is the likeliest to be closed by the peer.
            stack.remove(0);
        }
        stack.push(Idle { conn, since: now });
    }

    /// A new connection: resolved, checked against the forbidden ranges,
    /// connected, and with TLS for https.
    async fn connect(&self, endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let addrs = self.resolve(endpoint).await?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        let Some(tcp) = tcp else {
            return Err(Failure::connection(last.unwrap_or_else(|| "no address to connect to".into())));
        };
        let _ = tcp.set_nodelay(true);
        if endpoint.https {
            let name = match &endpoint.host {
                Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone()),
                Host::Ip(ip) => Ok(rustls::pki_types::ServerName::IpAddress((*ip).into())),
            }
            .map_err(|e| Failure("tls failure", e.to_string()))?;
            let tls = self.inner.tls.connect(name, tcp).await.map_err(|e| Failure("tls failure", describe(&e)))?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }

    async fn resolve(&self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, Failure> {
        let name = match &endpoint.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, endpoint.port)]),
            Host::Name(name) => name,
        };
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), endpoint.port))
            .await
            .map_err(|e| Failure("dns failure", format!("cannot resolve {name}: {e}")))?
            .collect();
        if found.is_empty() {
            return Err(Failure("dns failure", format!("cannot resolve {name}")));
        }
        let allow_private = self.inner.allow_private;
        let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| allow_private || !is_forbidden(a.ip())).collect();
        if allowed.is_empty() {
            return Err(Failure("forbidden address", format!("{name} resolves only to forbidden addresses")));
        }
        Ok(allowed)
    }
}

/// The HTTP/1.1 handshake over a connected stream; the connection is driven
/// by a task of its own until either side closes it.
async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(io).await.map_err(|e| Failure::connection(describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "webhook connection ended");
        }
    });
    Ok(send)
}

/// The response headers as a JSON object (repeated names joined by ", ").
fn headers_json(headers: &HeaderMap) -> String {
    // Written straight into one buffer (a map of owned strings per attempt
    // was 3 % of a drain); serde_json still does the escaping.
    let mut out: Vec<u8> = Vec::with_capacity(64 * headers.keys_len());
    out.push(b'{');
    for (i, name) in headers.keys().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // A repeated header becomes one value, comma-joined; a single one is
        // borrowed, not copied.
        let mut values = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()));
        let mut value = values.next().unwrap_or_default();
        for more in values {
            let joined = value.to_mut();
            joined.push_str(", ");
            joined.push_str(&more);
        }
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, name.as_str());
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, value.as_ref());
    }
    out.push(b'}');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Reads at most [`MAX_LOGGED_BODY`] bytes of the body; says whether the
/// body was read to its end (so the connection can be used again).
async fn read_limited(mut body: hyper::body::Incoming) -> (String, bool, Option<hyper::Error>) {
    let mut kept: Vec<u8> = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    let room = MAX_LOGGED_BODY - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if kept.len() >= MAX_LOGGED_BODY {
                        return (into_text(kept), false, None);
                    }
                }
            }
            None => return (into_text(kept), true, None),
            Some(Err(e)) => return (into_text(kept), false, Some(e)),
        }
    }
}

/// The body as text: kept as it is when it is UTF-8 (no copy), with
/// replacement characters otherwise (a cut at the limit can split one).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// An error with its causes, as one line.
fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
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

    #[test]
    fn a_body_cut_inside_a_character_is_kept_with_a_replacement() {
        assert_eq!(into_text("ok ✓".as_bytes().to_vec()), "ok ✓");
        let cut = &"ok ✓".as_bytes()[..4];
        assert_eq!(into_text(cut.to_vec()), "ok \u{FFFD}");
        assert_eq!(into_text(Vec::new()), "");
    }

    #[test]
    fn response_headers_become_one_json_object_in_their_order() {
        let mut h = HeaderMap::new();
        h.insert("x-b", HeaderValue::from_static("1"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=\"2\""));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let json = headers_json(&h);
        assert_eq!(json, r#"{"x-b":"1","set-cookie":"a=1, b=\"2\"","content-type":"text/plain"}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["set-cookie"], "a=1, b=\"2\"");
        assert_eq!(headers_json(&HeaderMap::new()), "{}");
    }
}
