//! The real fieldhook server in-process (SQLite in a temporary directory,
//! the system clock, retry delays shrunk to milliseconds), a running mirror,
//! and the comparison of the two. `TEST_LOG=1` shows both sides' logs.

use fieldhook::clock::SystemClock;
use fieldhook::config::{Config, Settings};
use fieldhook::server::Server;
use fieldhook_mirror::{Kind, Mirror, MirrorHandle, Source};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The CRUD event types: what a full-replication receiver subscribes to.
pub const CRUD_EVENTS: &[&str] = &[
    "job_created",
    "job_updated",
    "job_removed",
    "client_created",
    "client_updated",
    "client_removed",
    "site_created",
    "site_updated",
    "site_removed",
];

/// How long any wait in these tests may take before it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(45);

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = fieldhook::server::init_logging(
                "info,sqlx=warn,fieldhook_mirror=debug",
                fieldhook::config::LogFormat::Text,
            );
        }
    });
}

/// A running fieldhook server and an owner key of a fresh account.
pub struct TestServer {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// A parsed answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl TestServer {
    /// Starts a server whose failed deliveries are retried after each of
    /// `retry_schedule`'s delays (its length is the number of retries).
    pub async fn spawn(retry_schedule: &str) -> TestServer {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            database_url: Some(format!("sqlite://{}", dir.path().join("fieldhook.db").display())),
            listen: Some("127.0.0.1:0".into()),
            rate_limit: Some("0".into()),
            allow_private_targets: Some("true".into()),
            retry_schedule: Some(retry_schedule.into()),
            delivery_timeout: Some("2s".into()),
            ..Default::default()
        };
        let server =
            Server::build(Config::load(settings).unwrap(), Arc::new(SystemClock)).await.expect("server starts");
        let db = server.state().db.clone();
        let base = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        let key = db
            .committer
            .write(|conn| {
                Box::pin(async move {
                    let now = chrono::Utc::now();
                    let account = fieldhook::storage::accounts::create_account(conn, "mirrored", now).await?;
                    let scopes = fieldhook::domain::scope::Scopes::parse(["*"]).unwrap();
                    fieldhook::storage::accounts::create_key(conn, account, "owner", &scopes, now).await
                })
            })
            .await
            .unwrap()
            .api_key;
        TestServer { base, key, http: reqwest::Client::new(), _stop: stop, _dir: dir }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates a resource (asserting 201) and returns its uuid.
    pub async fn create(&self, plural: &str, body: Value) -> Uuid {
        let reply = self.post(&format!("/v2/{plural}"), body).await;
        assert_eq!(reply.status, 201, "creating in {plural}: {:?}", reply.body);
        let key = format!("{}_uuid", plural.trim_end_matches('s'));
        reply.body[&key].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap()
    }

    /// A key of the account with just these scopes.
    pub async fn key_with(&self, scopes: &[&str]) -> String {
        let reply = self.post("/v2/api_keys", json!({"name": "mirror", "scopes": scopes})).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.body["api_key"].as_str().unwrap().to_string()
    }

    /// Creates a webhook to `url` for every CRUD event; returns its uuid and
    /// signing secret.
    pub async fn crud_webhook(&self, url: &str) -> (String, String) {
        let reply = self.post("/v2/webhooks", json!({"url": url, "event_types": CRUD_EVENTS})).await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        let uuid = reply.body["webhook_uuid"].as_str().unwrap().to_string();
        let shown = self.get(&format!("/v2/webhooks/{uuid}")).await;
        let secret = shown.body["webhook"]["signing_secret"].as_str().expect("a signing secret").to_string();
        (uuid, secret)
    }

    /// All pages of a webhook's request log with `filter`.
    pub async fn requests(&self, webhook: &str, filter: &str) -> Vec<Value> {
        self.all_pages(&format!("/v2/webhooks/{webhook}/requests?filter={filter}"), "requests").await
    }

    /// Every item of a cursor-paginated list, newest first.
    pub async fn all_pages(&self, path: &str, key: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let mut page_path = format!("{path}{sep}limit=100");
            if let Some(after) = &after {
                page_path.push_str(&format!("&after={after}"));
            }
            let reply = self.get(&page_path).await;
            assert_eq!(reply.status, 200, "{page_path}: {:?}", reply.body);
            let page = reply.body[key].as_array().cloned().unwrap_or_default();
            let Some(last) = page.last() else { return all };
            after = last["uuid"].as_str().map(str::to_string);
            all.extend(page);
        }
    }

    /// The whole history of a resource, oldest first.
    pub async fn history(&self, kind: Kind, uuid: Uuid) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, |e| e["version"].as_i64().unwrap());
            let path = format!("/v2/{}/{uuid}/history?after={after}&limit=100", kind.plural());
            let reply = self.get(&path).await;
            assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
            let page = reply.body["history"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Waits until the webhook has no request waiting or in flight (a
    /// claimed request stays `scheduled` until its outcome is recorded).
    pub async fn wait_until_drained(&self, webhook: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let scheduled = self.requests(webhook, "scheduled").await;
            if scheduled.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deliveries never drained; still scheduled: {:#?}",
                scheduled.iter().map(summary).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One line about a request of the log.
pub fn summary(request: &Value) -> String {
    format!(
        "{} {} v{} attempt {} → {} {}",
        request["event_type"].as_str().unwrap_or("?"),
        request["entity_uuid"].as_str().unwrap_or("?"),
        request["entity_version"],
        request["attempt_no"],
        request["http_response_code"],
        request["error_type"].as_str().unwrap_or_default(),
    )
}

/// A mirror running in-process.
pub struct RunningMirror {
    pub handle: MirrorHandle,
    _stop: oneshot::Sender<()>,
}

/// Starts a mirror on `listener` (bound early, so that its address could go
/// into the proxy before the webhook — and so the secret — existed).
pub async fn start_mirror(config: fieldhook_mirror::Config, listener: TcpListener) -> RunningMirror {
    let mirror = Mirror::build(&config, listener).await.expect("the mirror starts");
    let handle = mirror.handle();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(mirror.run_until(async {
        let _ = stopped.await;
    }));
    RunningMirror { handle, _stop: stop }
}

/// Waits until `done` holds for the mirror's counters.
pub async fn wait_for_mirror(
    mirror: &MirrorHandle,
    what: &str,
    done: impl Fn(&fieldhook_mirror::StatsSnapshot) -> bool,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(&mirror.stats()) {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {:?}", mirror.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The top-level fields on which two snapshots differ, for a readable failure.
fn differing_fields(a: &Value, b: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec!["(not objects)".into()] };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

/// What the comparison found, for the test's report.
#[derive(Debug, Default)]
pub struct Compared {
    pub live: BTreeMap<Kind, usize>,
    pub removed: usize,
    pub versions: usize,
    pub from_history: usize,
}

/// Asserts that the replica is exactly the server's state:
///
/// * every live resource of every kind (from the server's lists) is in the
///   replica with the snapshot a GET returns now — every field, the version
///   included — and the replica has nothing else;
/// * every resource in `removed` answers 404 on the server and is absent
///   from the replica;
/// * and, what makes it *full* replication: for every resource the replica
///   ever had, its change log is each version from 1 to the server's last,
///   once and in order, each carried by the server's CRUD event of that
///   version.
pub async fn assert_replica_matches_server(
    server: &TestServer,
    mirror: &MirrorHandle,
    removed: &[(Kind, Uuid)],
) -> Compared {
    let replica = mirror.replica();
    let mut compared = Compared::default();
    for kind in Kind::ALL {
        let listed = server.all_pages(&format!("/v2/{}", kind.plural()), kind.plural()).await;
        let mut held = replica.all(kind).await.unwrap();
        compared.live.insert(kind, listed.len());
        for item in &listed {
            let uuid = Uuid::parse_str(item["uuid"].as_str().unwrap()).unwrap();
            let reply = server.get(&format!("/v2/{}/{uuid}", kind.plural())).await;
            assert_eq!(reply.status, 200, "{kind} {uuid}: {:?}", reply.body);
            let truth = &reply.body[kind.entity_type()];
            let stored = held.remove(&uuid).unwrap_or_else(|| panic!("{kind} {uuid} is missing from the replica"));
            assert_eq!(
                stored.snapshot,
                *truth,
                "{kind} {uuid}: the replica has version {}, the server {}; differing: {:#?}",
                stored.version,
                truth["version"],
                differing_fields(&stored.snapshot, truth)
            );
            assert_eq!(Some(stored.version), truth["version"].as_i64(), "{kind} {uuid}");
        }
        assert!(held.is_empty(), "the replica holds {kind}s the server does not have: {:?}", held.keys());
    }
    for (kind, uuid) in removed {
        let reply = server.get(&format!("/v2/{}/{uuid}", kind.plural())).await;
        assert_eq!(reply.status, 404, "{kind} {uuid} was removed: {:?}", reply.body);
        assert_eq!(replica.get(*kind, *uuid).await.unwrap(), None, "removed {kind} {uuid} is still in the replica");
    }
    compared.removed = removed.len();

    for kind in Kind::ALL {
        for uuid in replica.known_uuids(kind).await.unwrap() {
            let history = server.history(kind, uuid).await;
            let crud: Vec<(i64, Uuid)> = history
                .iter()
                .filter(|e| {
                    let t = e["event_type"].as_str().unwrap();
                    t.ends_with("_created") || t.ends_with("_updated") || t.ends_with("_removed")
                })
                .map(|e| (e["version"].as_i64().unwrap(), Uuid::parse_str(e["event_uuid"].as_str().unwrap()).unwrap()))
                .collect();
            let log = replica.change_log(kind, uuid).await.unwrap();
            let applied: Vec<(i64, Uuid)> = log.iter().map(|c| (c.version, c.event_uuid)).collect();
            assert_eq!(applied, crud, "{kind} {uuid}: versions applied (left) vs the server's CRUD events (right)");
            let last_removed = history.last().is_some_and(|e| e["event_type"].as_str().unwrap().ends_with("_removed"));
            assert_eq!(log.last().map(|c| c.removed), Some(last_removed), "{kind} {uuid}: removal recorded as such");
            compared.versions += log.len();
            compared.from_history += log.iter().filter(|c| c.source == Source::History).count();
        }
    }
    compared
}
