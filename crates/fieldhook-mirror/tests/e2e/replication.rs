//! The mirror against the real server: through chaos, after missing
//! everything, across a gap that never fills by itself, and at its own door
//! (verification and answers).

use crate::harness::{
    PATIENCE, RunningMirror, TestServer, assert_replica_matches_server, start_mirror, summary, wait_for_mirror,
};
use crate::proxy::{self, Action, ChaosProxy, Mode};
use crate::workload;
use fieldhook_mirror::{Config, Kind, Source};
use fieldhook_receiver::SigningSecret;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use uuid::Uuid;

/// Retry delays shrunk from fieldhook's week to about 14 s, keeping their
/// number (17 retries) and their growth.
const FAST_RETRIES: &str = "50ms,100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s";

/// Two retries within 150 ms: deliveries run out of retries almost at once.
const BRIEF_RETRIES: &str = "50ms,100ms";

/// A listener for the mirror, bound before the mirror is built: the proxy
/// needs its address before the webhook exists, and the mirror needs the
/// webhook's signing secret.
async fn mirror_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    (listener, url)
}

/// A mirror of `server` with a read-only API key of its own.
async fn mirror_with_key(
    server: &TestServer,
    listener: TcpListener,
    signing_secret: &str,
    gap_timeout: Duration,
    dir: &tempfile::TempDir,
) -> RunningMirror {
    let mut config = Config::new(dir.path().join("mirror.db"), &server.base, signing_secret);
    config.api_key = Some(server.key_with(&["jobs:read", "clients:read", "sites:read"]).await.as_str().into());
    config.gap_timeout = gap_timeout;
    let mirror = start_mirror(config, listener).await;
    wait_for_mirror(&mirror.handle, "the start-up catch-up", |s| s.full_catch_ups >= 1).await;
    mirror
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replica_equals_the_server_after_hundreds_of_changes_through_a_chaotic_network() {
    // Arrange
    let seed = proxy::seed();
    let server = TestServer::spawn(FAST_RETRIES).await;
    let (listener, mirror_url) = mirror_listener().await;
    let proxy = ChaosProxy::start(mirror_url, Mode::PassThrough, seed).await;
    let (webhook, signing_secret) = server.crud_webhook(&proxy.url).await;
    let dir = tempfile::tempdir().unwrap();
    // Gaps normally close within a retry or two; the timeout is a backstop
    // for long chains of reordered versions.
    let mirror = mirror_with_key(&server, listener, &signing_secret, Duration::from_secs(3), &dir).await;

    // Act
    let started = std::time::Instant::now();
    proxy.set_mode(Mode::Chaos);
    let done = workload::run(&server, 320, seed).await;
    let changed_in = started.elapsed();
    proxy.set_mode(Mode::PassThrough);
    server.wait_until_drained(&webhook).await;
    let drained_in = started.elapsed();

    // Assert
    let failed = server.requests(&webhook, "failed").await;
    assert!(failed.is_empty(), "deliveries ran out of retries: {:#?}", failed.iter().map(summary).collect::<Vec<_>>());
    let compared = assert_replica_matches_server(&server, &mirror.handle, &done.removed).await;
    let stats = mirror.handle.stats();
    let tally = proxy.tally();
    eprintln!(
        "seed {seed}: {:?}\nchanges made in {changed_in:?}, deliveries drained after {drained_in:?}\n\
         chaos: {tally:?}\nmirror: {stats:?}\ncompared: {compared:?}",
        done.operations
    );
    for action in [
        Action::Forward,
        Action::Fail,
        Action::Close,
        Action::Hang,
        Action::Delay,
        Action::HoldBack,
        Action::Duplicate,
        Action::LoseAnswer,
    ] {
        assert!(tally.get(&action).copied().unwrap_or(0) > 0, "the chaos never did {action:?}: {tally:?}");
    }
    assert!(done.removed.iter().any(|(k, _)| *k == Kind::Client), "clients were removed too: {:?}", done.operations);
    assert!(stats.delivered_gaps > 0, "reordering opened gaps that the mirror refused: {stats:?}");
    assert!(stats.delivered_ignored > 0, "duplicates reached the mirror and were ignored: {stats:?}");
    assert!(
        stats.delivered_applied > stats.caught_up_versions,
        "deliveries, not catch-up, did most of the replication: {stats:?}"
    );
    let last = mirror.handle.catch_up().await.expect("a final catch-up");
    assert_eq!(last.applied, 0, "nothing was left for a catch-up to apply: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_missed_every_delivery_catches_up_from_history_with_a_delivery_token() {
    // Arrange: the receiver is down while changes are made, until every
    // delivery has run out of retries.
    let server = TestServer::spawn(BRIEF_RETRIES).await;
    let (listener, mirror_url) = mirror_listener().await;
    let proxy = ChaosProxy::start(mirror_url, Mode::Down, 0).await;
    let (webhook, signing_secret) = server.crud_webhook(&proxy.url).await;
    let done = workload::run(&server, 80, proxy::seed() ^ 0xA5A5).await;
    server.wait_until_drained(&webhook).await;
    assert!(!server.requests(&webhook, "failed").await.is_empty(), "the deliveries failed for good");

    // Act: the mirror starts without an API key, so its start-up catch-up
    // needs the token of a delivery; one more change brings one.
    proxy.set_mode(Mode::PassThrough);
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(Config::new(dir.path().join("mirror.db"), &server.base, &signing_secret), listener).await;
    assert_eq!(mirror.handle.stats().full_catch_ups, 0, "no credentials before a delivery");
    let late = server.create("clients", json!({"organization": true, "organization_name": "Late Ltd"})).await;
    wait_for_mirror(&mirror.handle, "the start-up catch-up", |s| s.full_catch_ups >= 1).await;
    server.wait_until_drained(&webhook).await;

    // Assert
    let compared = assert_replica_matches_server(&server, &mirror.handle, &done.removed).await;
    assert!(compared.from_history > 0 && compared.from_history < compared.versions, "{compared:?}");
    let log = mirror.handle.replica().change_log(Kind::Client, late).await.unwrap();
    assert_eq!(log.iter().map(|c| (c.version, c.source)).collect::<Vec<_>>(), [(1, Source::Delivery)]);
}

/// The snapshot's version in a delivery body, whatever the resource.
fn version_in(body: &Value) -> Option<i64> {
    ["job", "client", "site"].iter().find_map(|k| body.get(*k)).and_then(|s| s["version"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_that_outlasts_the_retries_is_filled_from_history() {
    // Arrange: version 2 of anything never gets through, and runs out of
    // retries; versions 3 and 4 can only be answered 422 meanwhile.
    let server = TestServer::spawn(BRIEF_RETRIES).await;
    let (listener, mirror_url) = mirror_listener().await;
    let lose_version_2 =
        Mode::Custom(Arc::new(|body: &Value| if version_in(body) == Some(2) { Action::Fail } else { Action::Forward }));
    let proxy = ChaosProxy::start(mirror_url, lose_version_2, 0).await;
    let (webhook, signing_secret) = server.crud_webhook(&proxy.url).await;
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_with_key(&server, listener, &signing_secret, Duration::from_millis(300), &dir).await;

    // Act
    let client = server.create("clients", json!({"first_name": "Ada"})).await;
    for name in ["Grace", "Edsger", "Barbara"] {
        let reply = server
            .send(reqwest::Method::PATCH, &format!("/v2/clients/{client}"), Some(json!({"first_name": name})))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    server.wait_until_drained(&webhook).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while mirror.handle.replica().version(Kind::Client, client).await.unwrap() != Some(4) {
        assert!(tokio::time::Instant::now() < deadline, "the gap was never filled: {:?}", mirror.handle.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert
    let failed = server.requests(&webhook, "failed").await;
    assert!(failed.iter().any(|r| r["entity_version"] == 2), "version 2 was never delivered: {failed:#?}");
    assert_replica_matches_server(&server, &mirror.handle, &[]).await;
    let log = mirror.handle.replica().change_log(Kind::Client, client).await.unwrap();
    assert_eq!(log[0].source, Source::Delivery);
    assert_eq!(log[1].source, Source::History, "version 2 came from history: {log:?}");
    assert!(mirror.handle.stats().gap_catch_ups >= 1, "{:?}", mirror.handle.stats());
}

/// A `site_created`/`site_updated` body at `version`.
fn site_event(version: i64) -> String {
    json!({
        "event_uuid": Uuid::from_u128(1000 + version as u128),
        "event_type": if version == 1 { "site_created" } else { "site_updated" },
        "context": {"source": "api", "happened_at": "2026-11-22T10:00:00+00:00",
                    "created_at": "2026-11-22T10:00:00+00:00", "user_uuid": null, "user_email": null,
                    "device_uuid": null},
        "site": {"uuid": Uuid::from_u128(42), "external_id": null, "name": format!("Depot v{version}"),
                 "description": null, "address": null, "contacts": [], "client": null, "version": version,
                 "created_at": "2026-11-22T10:00:00+00:00", "updated_at": "2026-11-22T10:00:00+00:00"}
    })
    .to_string()
}

#[tokio::test]
async fn deliveries_are_verified_then_applied_in_version_order_with_the_answers_fieldhook_expects() {
    // Arrange: no server behind it; only the webhook endpoint is exercised.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (listener, url) = mirror_listener().await;
    let dir = tempfile::tempdir().unwrap();
    let mirror = start_mirror(Config::new(dir.path().join("mirror.db"), "http://127.0.0.1:9", secret), listener).await;
    let http = reqwest::Client::new();
    let post = |body: String, signed_with: &'static str| {
        let id = "msg_1";
        let now = chrono::Utc::now().timestamp();
        let signature = SigningSecret::parse(signed_with).unwrap().sign(id, now, body.as_bytes());
        http.post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
    };
    let forger = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    // Act + Assert, in order: (body, secret, status, why)
    let cases = [
        (site_event(1), forger, 401, "signed with another secret"),
        (site_event(2), secret, 422, "version 2 before version 1: a gap"),
        (site_event(1), secret, 200, "the creation"),
        (site_event(1), secret, 200, "a duplicate"),
        (site_event(2), secret, 200, "the retry of version 2"),
        ("{\"no\": \"event\"}".to_string(), secret, 400, "verified, but not an event"),
    ];
    for (body, signed_with, status, why) in cases {
        let response = post(body, signed_with).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{why}: {}", response.text().await.unwrap());
    }
    let stored = mirror.handle.replica().get(Kind::Site, Uuid::from_u128(42)).await.unwrap().expect("replicated");
    assert_eq!((stored.version, stored.snapshot["name"].as_str()), (2, Some("Depot v2")));
    let stats = mirror.handle.stats();
    assert_eq!((stats.delivered_applied, stats.delivered_ignored, stats.delivered_gaps), (2, 1, 1), "{stats:?}");
}
