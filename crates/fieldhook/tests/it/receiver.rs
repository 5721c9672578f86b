//! A real HTTP receiver on a random port: it records every request and
//! answers as the test tells it (status, headers, delay, hang).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub raw: String,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn event_uuid(&self) -> String {
        self.body["event_uuid"].as_str().unwrap_or_default().to_string()
    }
}

/// How to answer.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    WithHeader(u16, &'static str, String),
    /// Answer after a pause.
    Slow(Duration, u16),
    /// Never answer.
    Hang,
    /// A status with this body.
    Body(u16, String),
}

type Policy = Box<dyn FnMut(&Received) -> Answer + Send>;

struct Inner {
    received: Mutex<Vec<Received>>,
    policy: Mutex<Policy>,
    arrived: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver answering 200 to everything.
    pub async fn start() -> Receiver {
        let inner = Arc::new(Inner {
            received: Mutex::new(Vec::new()),
            policy: Mutex::new(Box::new(|_| Answer::Status(200))),
            arrived: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inner }
    }

    /// Answers with `f(request)` from now on.
    pub fn answer_with(&self, f: impl FnMut(&Received) -> Answer + Send + 'static) {
        *self.inner.policy.lock().unwrap() = Box::new(f);
    }

    /// Answers the given statuses in turn, then `then` for ever.
    pub fn script(&self, answers: Vec<Answer>, then: Answer) {
        let mut queue: std::collections::VecDeque<Answer> = answers.into();
        self.answer_with(move |_| queue.pop_front().unwrap_or_else(|| then.clone()));
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) until `pred` holds for what arrived.
    pub async fn wait_until(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.inner.arrived.notified();
            {
                let got = self.inner.received.lock().unwrap();
                if pred(&got) {
                    return got.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.received();
                assert!(pred(&got), "timed out waiting for {what}; received {} requests", got.len());
                return got;
            }
        }
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} requests"), |r| r.len() >= n).await
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let received = Received {
        headers,
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        at: std::time::Instant::now(),
    };
    let answer = (inner.policy.lock().unwrap())(&received);
    inner.received.lock().unwrap().push(received);
    inner.arrived.notify_waiters();
    let status = |code: u16| StatusCode::from_u16(code).unwrap();
    match answer {
        Answer::Status(code) => (status(code), "ok").into_response(),
        Answer::WithHeader(code, name, value) => (status(code), [(name, value)], "").into_response(),
        Answer::Slow(pause, code) => {
            tokio::time::sleep(pause).await;
            (status(code), "ok").into_response()
        }
        Answer::Body(code, body) => (status(code), body).into_response(),
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
