//! `spawn_app()`: a real fieldhook server on a random port with a fresh
//! database (a temporary SQLite file, or a fresh PostgreSQL schema), an
//! owner key, and a few HTTP helpers. `TEST_LOG=1` shows the server's logs.

use fieldhook::clock::ManualClock;
use fieldhook::config::{Config, Settings};
use fieldhook::server::Server;
use fieldhook::storage::Db;
use serde_json::Value;
use std::sync::{Arc, Once};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend for each named `async fn(TestApp)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// An owner key (scope `*`) of the test account.
    pub key: String,
    pub db: Db,
    pub clock: ManualClock,
    pub engine: Option<fieldhook::delivery::Engine>,
    _stop: oneshot::Sender<()>,
    _dir: Option<tempfile::TempDir>,
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = fieldhook::server::init_logging("info,sqlx=warn", fieldhook::config::LogFormat::Text);
        }
    });
}

/// The PostgreSQL URL for tests, or `None` (loudly) when unset outside CI.
pub fn postgres_url() -> Option<String> {
    match std::env::var("FIELDHOOK_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("FIELDHOOK_TEST_POSTGRES_URL is not set, and PostgreSQL tests may not be skipped in CI");
            }
            eprintln!("!!! SKIPPED: FIELDHOOK_TEST_POSTGRES_URL is not set; PostgreSQL tests did not run");
            None
        }
    }
}

/// A fresh database: returns its URL and, for SQLite, the directory holding it.
pub async fn fresh_database(backend: Backend) -> Option<(String, Option<tempfile::TempDir>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("fieldhook.db").display());
            Some((url, Some(dir)))
        }
        Backend::Postgres => {
            let base = postgres_url()?;
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
                .await
                .expect("PostgreSQL at FIELDHOOK_TEST_POSTGRES_URL answers");
            sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.unwrap();
            let sep = if base.contains('?') { '&' } else { '?' };
            Some((format!("{base}{sep}options=-c%20search_path%3D{schema}"), None))
        }
    }
}

/// Settings for a test server: random port, no rate limit, private targets
/// allowed (receivers live on 127.0.0.1).
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        database_url: Some(database_url.to_string()),
        listen: Some("127.0.0.1:0".into()),
        rate_limit: Some("0".into()),
        allow_private_targets: Some("true".into()),
        ..Default::default()
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let (url, dir) = fresh_database(backend).await?;
    Some(spawn_with(backend, url, dir, |s| s).await)
}

/// Starts a server with adjusted settings.
pub async fn spawn_with(
    _backend: Backend,
    database_url: String,
    dir: Option<tempfile::TempDir>,
    adjust: impl FnOnce(Settings) -> Settings,
) -> TestApp {
    init_logs();
    let config = Config::load(adjust(test_settings(&database_url))).unwrap();
    let clock = ManualClock::default();
    let server = Server::build(config, Arc::new(clock.clone())).await.expect("server starts");
    let db = server.state().db.clone();
    let engine = server.engine().cloned();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let mut app = TestApp { base, http, key: String::new(), db, clock, engine, _stop: stop, _dir: dir };
    app.key = app.new_account("test").await;
    app
}

/// A parsed answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    /// Creates an account directly in the database; returns its owner key.
    pub async fn new_account(&self, name: &str) -> String {
        let name = name.to_string();
        let now = self.clock_now();
        self.db
            .committer
            .write(move |conn| {
                Box::pin(async move {
                    let account = fieldhook::storage::accounts::create_account(conn, &name, now).await?;
                    let scopes = fieldhook::domain::scope::Scopes::parse(["*"]).unwrap();
                    fieldhook::storage::accounts::create_key(conn, account, "owner", &scopes, now).await
                })
            })
            .await
            .unwrap()
            .api_key
    }

    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use fieldhook::clock::Clock;
        self.clock.now()
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.expect("server answers")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, Some(&self.key), None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(&self.key), Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PATCH, path, Some(&self.key), Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, Some(&self.key), None).await
    }

    /// Creates a resource and returns its uuid (asserting 201).
    pub async fn create(&self, plural: &str, body: Value) -> String {
        let r = self.post(&format!("/v2/{plural}"), body).await;
        assert_eq!(r.status, 201, "creating {plural}: {:?}", r.body);
        let key = format!("{}_uuid", plural.trim_end_matches('s'));
        r.body[&key].as_str().unwrap_or_else(|| panic!("{key} in {:?}", r.body)).to_string()
    }

    /// A key of the test account with the given scopes.
    pub async fn key_with(&self, scopes: &[&str]) -> String {
        let r = self.post("/v2/api_keys", serde_json::json!({"name": "scoped", "scopes": scopes})).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["api_key"].as_str().unwrap().to_string()
    }

    /// Events in the outbox for one entity, as (event_type, version).
    pub async fn outbox(&self, entity_uuid: &str) -> Vec<(String, i64)> {
        let rows = fieldhook::storage::sql::query(
            "SELECT event_type, entity_version FROM events WHERE entity_uuid = $1 ORDER BY entity_version, uuid",
        )
        .bind(entity_uuid)
        .fetch_all(&self.db.read)
        .await
        .unwrap();
        rows.iter().map(|r| (r.try_get("event_type").unwrap(), r.try_get("entity_version").unwrap())).collect()
    }

    /// Moves the clock on and lets the delivery engine look at the queue.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
        if let Some(e) = &self.engine {
            e.wake();
        }
    }

    /// Creates a webhook for `url` subscribed to `types`; returns its uuid.
    pub async fn webhook(&self, url: &str, types: &[&str]) -> String {
        self.webhook_with(serde_json::json!({"url": url, "event_types": types})).await
    }

    pub async fn webhook_with(&self, body: Value) -> String {
        let r = self.post("/v2/webhooks", body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["webhook_uuid"].as_str().unwrap().to_string()
    }

    /// The request log of a webhook (newest first), all pages.
    pub async fn requests(&self, webhook: &str, filter: Option<&str>) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v2/webhooks/{webhook}/requests?limit=100");
            if let Some(f) = filter {
                path.push_str(&format!("&filter={f}"));
            }
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let r = self.get(&path).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            let page = r.body["requests"].as_array().unwrap().clone();
            if page.is_empty() {
                return all;
            }
            after = page.last().unwrap()["uuid"].as_str().map(str::to_string);
            all.extend(page);
        }
    }

    /// Waits until the request log of `webhook` satisfies `pred`.
    pub async fn wait_for_log(&self, webhook: &str, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..400 {
            let log = self.requests(webhook, None).await;
            if pred(&log) {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}: {:#?}", self.requests(webhook, None).await);
    }

    pub async fn outbox_total(&self) -> i64 {
        fieldhook::storage::sql::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&self.db.read).await.unwrap()
    }
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply { status, body, headers }
}
