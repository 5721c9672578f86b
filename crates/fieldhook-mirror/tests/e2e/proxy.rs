//! The chaos proxy: a small HTTP server between fieldhook and the mirror
//! that, per delivery, forwards it faithfully or misbehaves the ways a real
//! network and a real receiver do — drops it, closes the connection, holds
//! it past the sender's timeout, delays it, reorders it behind a later one,
//! delivers it twice, or loses the receiver's answer.
//!
//! Its decisions come from a seeded RNG (`CHAOS_SEED` overrides the
//! default), so a failing run's sequence of actions can be replayed; which
//! delivery meets which action still depends on arrival order.
//!
//! It is a bare hyper server because dropping a connection without an
//! answer is something only a connection-level service can do.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What the proxy does with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Forward it and relay the mirror's answer.
    Forward,
    /// Answer 500 without forwarding.
    Fail,
    /// Close the connection without answering.
    Close,
    /// Say nothing until fieldhook's 2 s delivery timeout has passed.
    Hang,
    /// Wait a little, then forward.
    Delay,
    /// Hold it until another delivery has gone through (or a second has
    /// passed), then forward: a later event overtakes it.
    HoldBack,
    /// Forward it twice at once; relay the first answer.
    Duplicate,
    /// Forward it, then answer 500 as if the mirror's answer were lost:
    /// fieldhook sends it again.
    LoseAnswer,
}

/// How the proxy behaves.
#[derive(Clone)]
pub enum Mode {
    /// Forward everything.
    PassThrough,
    /// Random actions from the seeded RNG.
    Chaos,
    /// Answer 500 to everything: the receiver is down.
    Down,
    /// The test decides per delivery, from its JSON body.
    Custom(Arc<dyn Fn(&Value) -> Action + Send + Sync>),
}

struct Inner {
    target: String,
    http: reqwest::Client,
    mode: Mutex<Mode>,
    rng: Mutex<StdRng>,
    /// Signalled whenever a forwarded delivery got its answer (for HoldBack).
    forwarded: Notify,
    tally: Mutex<BTreeMap<Action, usize>>,
}

/// A running proxy (see the [module documentation](self)).
#[derive(Clone)]
pub struct ChaosProxy {
    /// Where fieldhook should send: the proxy's address.
    pub url: String,
    inner: Arc<Inner>,
}

/// Returned by the service to make hyper drop the connection unanswered.
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("chaos: connection closed on purpose")
    }
}

impl std::error::Error for CloseConnection {}

type Answer = Result<Response<Full<Bytes>>, CloseConnection>;

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"chaos")));
    *response.status_mut() = StatusCode::from_u16(code).expect("a valid status");
    response
}

/// The seed of this run: `CHAOS_SEED`, or a fixed default so that runs
/// repeat.
pub fn seed() -> u64 {
    std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_F1E1_D400_000C)
}

impl ChaosProxy {
    /// Starts a proxy to `target` (the mirror's webhook URL) in `mode`.
    pub async fn start(target: String, mode: Mode, seed: u64) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let inner = Arc::new(Inner {
            target,
            http: reqwest::Client::new(),
            mode: Mutex::new(mode),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            forwarded: Notify::new(),
            tally: Mutex::new(BTreeMap::new()),
        });
        let accepting = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let inner = accepting.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| handle(inner.clone(), request));
                    // An error here is a closed connection, deliberate or not.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ChaosProxy { url, inner }
    }

    /// Switches the behaviour for the deliveries that arrive from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// How many deliveries met each action.
    pub fn tally(&self) -> BTreeMap<Action, usize> {
        self.inner.tally.lock().unwrap().clone()
    }
}

impl Inner {
    fn choose(&self, body: &Value) -> Action {
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            Mode::PassThrough => Action::Forward,
            Mode::Down => Action::Fail,
            Mode::Custom(decide) => decide(body),
            Mode::Chaos => {
                let roll = self.rng.lock().unwrap().random_range(0..100);
                match roll {
                    0..35 => Action::Forward,
                    35..45 => Action::Fail,
                    45..50 => Action::Close,
                    50..52 => Action::Hang,
                    52..66 => Action::Delay,
                    66..80 => Action::HoldBack,
                    80..90 => Action::Duplicate,
                    _ => Action::LoseAnswer,
                }
            }
        }
    }

    /// Sends the delivery on as it came (minus hop-by-hop headers) and
    /// returns the mirror's answer.
    async fn forward(&self, headers: &hyper::HeaderMap, body: &Bytes) -> Response<Full<Bytes>> {
        let mut request = self.http.post(&self.target).body(body.clone());
        for (name, value) in headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection" | "transfer-encoding") {
                request = request.header(name.as_str(), value.as_bytes());
            }
        }
        let answer = match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                let mut answer = Response::new(Full::new(bytes));
                *answer.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                answer
            }
            Err(_) => status(502),
        };
        self.forwarded.notify_waiters();
        answer
    }
}

async fn handle(inner: Arc<Inner>, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| CloseConnection)?.to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let action = inner.choose(&json);
    *inner.tally.lock().unwrap().entry(action).or_default() += 1;
    let headers = &parts.headers;
    match action {
        Action::Forward => Ok(inner.forward(headers, &body).await),
        Action::Fail => Ok(status(500)),
        Action::Close => Err(CloseConnection),
        Action::Hang => {
            tokio::time::sleep(Duration::from_millis(2_300)).await;
            Ok(status(504))
        }
        Action::Delay => {
            let pause = inner.rng.lock().unwrap().random_range(5..250);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Ok(inner.forward(headers, &body).await)
        }
        Action::HoldBack => {
            let overtaken = inner.forwarded.notified();
            tokio::pin!(overtaken);
            // Register now: a delivery that finishes before the await below
            // must still count as having overtaken this one.
            overtaken.as_mut().enable();
            let _ = tokio::time::timeout(Duration::from_secs(1), overtaken).await;
            Ok(inner.forward(headers, &body).await)
        }
        Action::Duplicate => {
            let (first, _second) = tokio::join!(inner.forward(headers, &body), inner.forward(headers, &body));
            Ok(first)
        }
        Action::LoseAnswer => {
            let _ = inner.forward(headers, &body).await;
            Ok(status(500))
        }
    }
}
