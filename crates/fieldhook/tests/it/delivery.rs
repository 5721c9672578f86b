//! The delivery engine against real receivers: body, headers, signature,
//! temporary tokens, retries, failure kinds, suspension, ordering,
//! isolation.

use crate::helpers::{Backend, TestApp, fresh_database, spawn_with};
use crate::receiver::{Answer, Receiver};
use fieldhook::config::Settings;
use serde_json::{Value, json};
use std::time::Duration;

crate::on_both_backends!(
    body_and_headers_are_as_specified_and_the_signature_verifies,
    only_subscribed_events_are_delivered,
    a_failing_receiver_is_retried_with_the_next_attempt_number,
    redirects_and_closed_ports_are_failures_of_their_kind,
    retry_after_is_honoured_and_410_suspends_at_once,
    a_webhook_that_keeps_failing_is_suspended_then_probed_back,
    retries_run_out_and_the_event_is_listed_as_failed_and_can_be_resent,
    entity_ordering_delivers_one_job_in_version_order_despite_failures,
    switching_to_entity_ordering_orders_the_backlog_already_held,
    switching_to_entity_ordering_holds_back_what_was_already_queued,
    last_write_wins_and_full_replication_receivers_converge,
    a_dead_endpoint_does_not_delay_a_healthy_one,
    pause_holds_events_and_resume_releases_them,
    pausing_in_the_middle_of_a_backlog_stops_sending_at_once,
    a_backlog_beyond_the_read_ahead_goes_out_once_within_the_in_flight_bound,
    a_draining_backlog_misses_nothing_that_arrives_or_fails_meanwhile,
    creates_undone_in_a_busy_group_commit_deliver_nothing,
    the_test_event_and_deleting_a_webhook,
    webhook_urls_and_event_types_are_validated,
    sent_requests_are_pruned_after_the_retention_period,
    pruning_steps_past_old_requests_still_scheduled,
    the_backlog_gauges_count_held_retrying_and_due_requests,
);

/// `fieldhook_pending_requests` by state and `fieldhook_webhooks` by
/// status, with exact values (each test runs in a process of its own).
async fn the_backlog_gauges_count_held_retrying_and_due_requests(app: TestApp) {
    let failing = Receiver::start().await;
    failing.script(vec![], Answer::Status(500));
    let retried = app.webhook(&failing.url, &["client_created"]).await;
    let healthy = Receiver::start().await;
    let held = app.webhook(&healthy.url, &["client_created"]).await;
    app.post(&format!("/v2/webhooks/{held}/pause"), json!({})).await;
    for i in 0..3 {
        app.create("clients", json!({"first_name": format!("g{i}")})).await;
    }
    // Each event failed once at the failing webhook; its retry waits.
    failing.wait_for(3).await;
    app.wait_for_log(&retried, "three retries scheduled", |l| {
        l.iter().filter(|r| r["status"] == "scheduled").count() == 3 && l.len() == 6
    })
    .await;
    let engine = app.engine.as_ref().unwrap();
    assert_eq!(gauges(engine).await, [3.0, 3.0, 0.0, 1.0, 1.0]);
}

/// Renders the gauges `engine` refreshes: pending requests held, retrying
/// and due, then webhooks active and paused.
async fn gauges(engine: &fieldhook::delivery::Engine) -> [f64; 5] {
    let metrics = fieldhook::metrics::handle();
    engine.refresh_gauges().await.unwrap();
    let text = metrics.render();
    let value = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
    };
    [
        value("fieldhook_pending_requests{state=\"held\"}"),
        value("fieldhook_pending_requests{state=\"retrying\"}"),
        value("fieldhook_pending_requests{state=\"due\"}"),
        value("fieldhook_webhooks{status=\"active\"}"),
        value("fieldhook_webhooks{status=\"paused\"}"),
    ]
}

/// On an API-only node nothing is sent: what the active webhook has waiting
/// is due, what the paused one has is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_nobody_sends_yet_count_as_due() {
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let app = spawn_with(Backend::Sqlite, url, dir, |s| Settings { role: Some("api".into()), ..s }).await;
    assert!(app.engine.is_none());
    app.webhook("https://example.com/a", &["client_created"]).await;
    let held = app.webhook("https://example.com/b", &["client_created"]).await;
    app.post(&format!("/v2/webhooks/{held}/pause"), json!({})).await;
    for i in 0..2 {
        app.create("clients", json!({"first_name": format!("d{i}")})).await;
    }
    let config = fieldhook::delivery::DeliveryConfig {
        timeout: Duration::from_secs(1),
        policy: test_policy(),
        max_in_flight_per_webhook: 16,
        allow_private_targets: true,
        token_ttl: Duration::from_secs(60),
        retention: Duration::from_secs(86400),
    };
    let tokens = fieldhook::api::auth::TokenSigner::new(vec![7; 32]);
    let idle = fieldhook::delivery::Engine::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()), config, tokens);
    assert_eq!(gauges(&idle).await, [2.0, 0.0, 2.0, 1.0, 1.0]);
}

async fn sent_requests_are_pruned_after_the_retention_period(app: TestApp) {
    let rx = Receiver::start().await;
    let hook = app.webhook(&rx.url, &["client_created"]).await;
    app.create("clients", json!({"first_name": "A"})).await;
    app.wait_for_log(&hook, "a sent request", |l| l.len() == 1 && l[0]["status"] == "sent").await;
    let engine = app.engine.as_ref().unwrap();
    assert_eq!(engine.prune_pass(Duration::ZERO).await.unwrap(), 0, "kept within the 30 days");
    app.clock.advance(Duration::from_secs(29 * 86400));
    assert_eq!(engine.prune_pass(Duration::ZERO).await.unwrap(), 0);
    app.clock.advance(Duration::from_secs(2 * 86400));
    assert_eq!(engine.prune_pass(Duration::ZERO).await.unwrap(), 1);
    assert!(app.requests(&hook, None).await.is_empty());
}

/// Pruning walks the requests oldest first, a bounded number per step.
/// Two old requests are kept: one still scheduled (its webhook is paused)
/// and one created long ago but sent within the retention period; the walk
/// goes on past them to the old sent ones.
async fn pruning_steps_past_old_requests_still_scheduled(app: TestApp) {
    use fieldhook::storage::deliveries;
    let rx = Receiver::start().await;
    let held = app.webhook(&rx.url, &["client_created"]).await;
    let late = app.webhook(&rx.url, &["client_created"]).await;
    for hook in [&held, &late] {
        app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    }
    app.create("clients", json!({"first_name": "held"})).await;
    let sent = app.webhook(&rx.url, &["site_created"]).await;
    for i in 0..3 {
        app.create("sites", json!({"name": format!("s{i}")})).await;
    }
    app.wait_for_log(&sent, "three sent requests", |l| l.len() == 3 && l.iter().all(|r| r["status"] == "sent")).await;
    app.clock.advance(Duration::from_secs(31 * 86400));
    app.post(&format!("/v2/webhooks/{late}/resume"), json!({})).await;
    app.wait_for_log(&late, "the late request sent", |l| l.len() == 1 && l[0]["status"] == "sent").await;

    let before = fieldhook::clock::Clock::now(&app.clock) - chrono::TimeDelta::days(30);
    let step = |after: String| {
        app.db.committer.write(move |conn| Box::pin(async move { deliveries::prune(conn, before, &after, 2).await }))
    };
    // The two requests of the client's event: both kept.
    let (gone, next) = step(String::new()).await.unwrap();
    assert_eq!(gone, 0);
    // Two of the sites' requests, then the last one, and the walk is over.
    let (gone, next) = step(next.expect("a full step goes on")).await.unwrap();
    assert_eq!(gone, 2);
    let (gone, next) = step(next.expect("a full step goes on")).await.unwrap();
    assert_eq!((gone, next), (1, None));
    assert!(app.requests(&sent, None).await.is_empty());
    assert_eq!(app.requests(&held, None).await[0]["status"], "scheduled");
    assert_eq!(app.requests(&late, None).await[0]["status"], "sent");
}

fn settle() -> Duration {
    Duration::from_millis(30)
}

async fn body_and_headers_are_as_specified_and_the_signature_verifies(app: TestApp) {
    let rx = Receiver::start().await;
    let hook = app.webhook_with(json!({"url": rx.url, "event_types": ["job_created"], "secret": "s3cret"})).await;
    let signing_secret =
        app.get(&format!("/v2/webhooks/{hook}")).await.body["webhook"]["signing_secret"].as_str().unwrap().to_string();
    assert!(signing_secret.starts_with("whsec_"));
    let job = app.create("jobs", json!({"description": "leak"})).await;
    let got = rx.wait_for(1).await;
    let r = &got[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("user-agent").unwrap().starts_with("fieldhook/"));
    assert_eq!(r.header("x-planado-delivery-attempt"), Some("1"));
    assert_eq!(r.header("x-planado-secret"), Some("s3cret"));
    assert_eq!(r.body["event_type"], "job_created");
    assert_eq!(r.header("webhook-id"), r.body["event_uuid"].as_str());
    let snapshot = app.get(&format!("/v2/jobs/{job}")).await.body["job"].clone();
    assert_eq!(r.body["job"], snapshot);
    assert_eq!(r.body["context"]["source"], "api");
    // Standard Webhooks signature over the exact bytes received.
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((ts - chrono::Utc::now().timestamp()).abs() < 120);
    let expected = fieldhook::domain::webhook::sign(&signing_secret, &r.event_uuid(), ts, &r.raw);
    assert_eq!(r.header("webhook-signature"), Some(expected.as_str()));
    // The temporary token calls straight back, until it expires.
    let token = r.header("x-planado-api-token").expect("a temporary token").to_string();
    let back = app.send(reqwest::Method::GET, &format!("/v2/jobs/{job}"), Some(&token), None).await;
    assert_eq!(back.status, 200);
    let keys = app.send(reqwest::Method::GET, "/v2/api_keys", Some(&token), None).await;
    assert_eq!(keys.status, 403, "a temporary token never manages keys");
    // Valid for the whole lifetime from the start of the request …
    app.advance(Duration::from_millis(59_900));
    let still = app.send(reqwest::Method::GET, &format!("/v2/jobs/{job}"), Some(&token), None).await;
    assert_eq!(still.status, 200);
    // … and not past it (the expiry is rounded up to a whole second at most).
    app.advance(Duration::from_millis(1_100));
    let late = app.send(reqwest::Method::GET, &format!("/v2/jobs/{job}"), Some(&token), None).await;
    assert_eq!(late.status, 401);
    // The log shows the request with its answer.
    let log = app.wait_for_log(&hook, "a sent request", |l| l.first().is_some_and(|r| r["status"] == "sent")).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["http_response_code"], 200);
    assert_eq!(log[0]["attempt_no"], 1);
    assert_eq!(log[0]["entity_type"], "job");
    assert_eq!(log[0]["entity_uuid"], job);
    assert_eq!(log[0]["entity_version"], 1);
    assert_eq!(log[0]["http_request_body"], Value::String(r.raw.clone()));
    assert!(log[0].get("error_type").is_none());
    let one = app.get(&format!("/v2/webhooks/{hook}/requests/{}", log[0]["uuid"].as_str().unwrap())).await;
    assert_eq!(one.body["request"], log[0]);
}

async fn only_subscribed_events_are_delivered(app: TestApp) {
    let billing = Receiver::start().await;
    let crm = Receiver::start().await;
    app.webhook(&billing.url, &["client_removed"]).await;
    app.webhook(&crm.url, &["client_created", "client_updated"]).await;
    let c = app.create("clients", json!({"first_name": "A"})).await;
    app.patch(&format!("/v2/clients/{c}"), json!({"last_name": "B"})).await;
    app.delete(&format!("/v2/clients/{c}")).await;
    let got = crm.wait_for(2).await;
    let billing_got = billing.wait_for(1).await;
    tokio::time::sleep(settle()).await;
    assert_eq!(crm.received().len(), 2);
    assert_eq!(billing.received().len(), 1);
    assert_eq!(billing_got[0].body["event_type"], "client_removed");
    let mut types: Vec<_> = got.iter().map(|r| r.body["event_type"].as_str().unwrap().to_string()).collect();
    types.sort();
    assert_eq!(types, vec!["client_created", "client_updated"]);
}

async fn a_failing_receiver_is_retried_with_the_next_attempt_number(app: TestApp) {
    let rx = Receiver::start().await;
    rx.script(vec![Answer::Status(500), Answer::Status(500)], Answer::Status(200));
    let hook = app.webhook(&rx.url, &["client_created"]).await;
    app.create("clients", json!({"first_name": "A"})).await;
    rx.wait_for(1).await;
    app.wait_for_log(&hook, "the retry", |l| l.len() == 2).await;
    app.advance(Duration::from_secs(17)); // 15 s + 10 % jitter
    rx.wait_for(2).await;
    app.wait_for_log(&hook, "the second retry", |l| l.len() == 3).await;
    app.advance(Duration::from_secs(34)); // 30 s + 10 %
    let got = rx.wait_for(3).await;
    let attempts: Vec<_> = got.iter().map(|r| r.header("x-planado-delivery-attempt").unwrap().to_string()).collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
    assert!(got.iter().all(|r| r.event_uuid() == got[0].event_uuid()), "one event_uuid on every attempt");
    let log = app
        .wait_for_log(&hook, "three sent requests", |l| l.iter().all(|r| r["status"] == "sent") && l.len() == 3)
        .await;
    let codes: Vec<_> = log.iter().map(|r| r["http_response_code"].clone()).collect();
    assert_eq!(codes, vec![json!(200), json!(500), json!(500)], "newest first");
    let numbers: Vec<_> = log.iter().map(|r| r["attempt_no"].clone()).collect();
    assert_eq!(numbers, vec![json!(3), json!(2), json!(1)]);
    // A retry is the same event about the same resource as the attempt it
    // follows (its row is copied from that attempt's).
    assert_eq!(log[2]["event_type"], "client_created");
    assert_eq!(log[2]["entity_type"], "client");
    for key in ["event_uuid", "event_type", "entity_type", "entity_uuid", "entity_version"] {
        assert!(log.iter().all(|r| r[key] == log[2][key]), "{key} differs between the attempts: {log:?}");
    }
    // The retry was scheduled 15 s (± 10 %) after the first attempt.
    let at = |r: &Value, k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
    let gap = (at(&log[1], "send_at") - at(&log[2], "sent_at")).num_milliseconds();
    assert!((13_500..=16_500).contains(&gap), "first retry after {gap} ms");
    assert!(app.requests(&hook, Some("scheduled")).await.is_empty());
}

async fn redirects_and_closed_ports_are_failures_of_their_kind(app: TestApp) {
    let rx = Receiver::start().await;
    rx.answer_with(|_| Answer::WithHeader(302, "location", "http://127.0.0.1:1/elsewhere".into()));
    let redirected = app.webhook(&rx.url, &["client_created"]).await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        port
    };
    let closed = app.webhook(&format!("http://127.0.0.1:{closed_port}/hook"), &["client_created"]).await;
    let unresolvable = app.webhook("http://no-such-host.invalid/hook", &["client_created"]).await;
    app.create("clients", json!({"first_name": "A"})).await;
    let sent = |l: &[Value]| l.iter().any(|r| r["status"] == "sent");
    let log = app.wait_for_log(&redirected, "the redirect", sent).await;
    let first = log.iter().find(|r| r["status"] == "sent").unwrap();
    assert_eq!(first["http_response_code"], 302);
    assert!(first.get("error_type").is_none());
    assert_eq!(log.iter().filter(|r| r["status"] == "scheduled").count(), 1, "a 302 is retried");
    assert_eq!(rx.received().len(), 1, "the redirect was not followed");
    let log = app.wait_for_log(&closed, "the closed port", sent).await;
    let first = log.iter().find(|r| r["status"] == "sent").unwrap();
    assert_eq!(first["error_type"], "connection failure");
    assert_eq!(first["http_response_code"], Value::Null);
    assert!(first["error_description"].is_string());
    let log = app.wait_for_log(&unresolvable, "the dns failure", sent).await;
    assert_eq!(log.iter().find(|r| r["status"] == "sent").unwrap()["error_type"], "dns failure");
}

async fn retry_after_is_honoured_and_410_suspends_at_once(app: TestApp) {
    let busy = Receiver::start().await;
    busy.script(vec![Answer::WithHeader(429, "retry-after", "3600".into())], Answer::Status(200));
    let hook = app.webhook(&busy.url, &["client_created"]).await;
    let gone = Receiver::start().await;
    gone.answer_with(|_| Answer::Status(410));
    let gone_hook = app.webhook(&gone.url, &["client_created"]).await;
    app.create("clients", json!({"first_name": "A"})).await;
    let log = app.wait_for_log(&hook, "the retry", |l| l.len() == 2).await;
    let at = |r: &Value, k: &str| chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap()).unwrap();
    assert!((at(&log[0], "send_at") - at(&log[1], "sent_at")).num_seconds() >= 3600);
    app.advance(Duration::from_secs(60));
    tokio::time::sleep(settle()).await;
    assert_eq!(busy.received().len(), 1, "not before the hour asked for");
    app.advance(Duration::from_secs(3600));
    busy.wait_for(2).await;

    app.wait_for_log(&gone_hook, "the 410", |l| l.iter().any(|r| r["http_response_code"] == 410)).await;
    let w = app.get(&format!("/v2/webhooks/{gone_hook}")).await.body["webhook"].clone();
    assert_eq!(w["status"], "suspended");
    assert!(w["suspended_at"].is_string());
    assert!(w["suspension_reason"].as_str().unwrap().contains("410"));
}

async fn a_webhook_that_keeps_failing_is_suspended_then_probed_back(app: TestApp) {
    let rx = Receiver::start().await;
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = failing.clone();
    rx.answer_with(move |_| Answer::Status(if f.load(std::sync::atomic::Ordering::SeqCst) { 503 } else { 200 }));
    let hook = app.webhook(&rx.url, &["client_created"]).await;
    // Fail until suspended: 20 consecutive failures and 24 h without success.
    let mut created = vec![app.create("clients", json!({"first_name": "first"})).await];
    let mut rounds = 0;
    while webhook_status(&app, &hook).await == "active" {
        rounds += 1;
        assert!(rounds < 60, "never suspended");
        let n = rx.received().len();
        created.push(app.create("clients", json!({"first_name": format!("c{rounds}")})).await);
        // Wait for an attempt, unless that last failure suspended it.
        for _ in 0..400 {
            if rx.received().len() > n || webhook_status(&app, &hook).await == "suspended" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(settle()).await;
        app.advance(Duration::from_secs(3 * 3600));
    }
    let suspended = app.get(&format!("/v2/webhooks/{hook}")).await.body["webhook"].clone();
    assert!(suspended["suspension_reason"].as_str().unwrap().contains("consecutive"));
    // While suspended, new events pile up as scheduled, and no retries are
    // spent. (Attempts claimed just before the suspension may still land.)
    tokio::time::sleep(settle()).await;
    let before = rx.received().len();
    for i in 0..5 {
        created.push(app.create("clients", json!({"first_name": format!("held{i}")})).await);
    }
    app.advance(Duration::from_secs(60));
    tokio::time::sleep(settle()).await;
    assert_eq!(rx.received().len(), before, "nothing is sent while suspended before the probe");
    let scheduled = app.requests(&hook, Some("scheduled")).await;
    assert_eq!(scheduled.len(), created.len(), "every event waits, none was dropped");
    // The receiver recovers; the next probe finds it and the backlog flows.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    app.advance(Duration::from_secs(301));
    let got = rx
        .wait_until("every event delivered", |r| {
            let ok: std::collections::HashSet<String> =
                r.iter().map(|x| x.body["client"]["uuid"].as_str().unwrap_or_default().to_string()).collect();
            created.iter().all(|c| ok.contains(c))
        })
        .await;
    assert!(got.len() > created.len());
    assert_eq!(webhook_status(&app, &hook).await, "active");
    app.wait_for_log(&hook, "an empty backlog", |l| l.iter().all(|r| r["status"] == "sent")).await;
}

async fn webhook_status(app: &TestApp, hook: &str) -> String {
    app.get(&format!("/v2/webhooks/{hook}")).await.body["webhook"]["status"].as_str().unwrap().to_string()
}

async fn retries_run_out_and_the_event_is_listed_as_failed_and_can_be_resent(app: TestApp) {
    let backend = backend_of(&app);
    let (url, dir) = fresh_database(backend).await.unwrap();
    drop(app);
    let app = spawn_with(backend, url, dir, |s| Settings { retry_schedule: Some("10s,20s".into()), ..s }).await;
    let rx = Receiver::start().await;
    rx.answer_with(|_| Answer::Status(500));
    let hook = app.webhook(&rx.url, &["client_created"]).await;
    app.create("clients", json!({"first_name": "A"})).await;
    for n in 1..=3 {
        rx.wait_for(n).await;
        app.wait_for_log(&hook, "the attempt recorded", |l| l.iter().filter(|r| r["status"] == "sent").count() == n)
            .await;
        app.advance(Duration::from_secs(25));
    }
    tokio::time::sleep(settle()).await;
    assert_eq!(rx.received().len(), 3, "one attempt and two retries");
    let failed = app.requests(&hook, Some("failed")).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempt_no"], 3);
    assert!(app.requests(&hook, Some("scheduled")).await.is_empty());
    rx.answer_with(|_| Answer::Status(200));
    let r = app
        .post(&format!("/v2/webhooks/{hook}/requests/{}/resend", failed[0]["uuid"].as_str().unwrap()), json!({}))
        .await;
    assert_eq!(r.status, 202);
    let got = rx.wait_for(4).await;
    assert_eq!(got[3].header("x-planado-delivery-attempt"), Some("4"));
    assert_eq!(got[3].event_uuid(), got[0].event_uuid());
}

fn backend_of(app: &TestApp) -> Backend {
    match app.db.backend {
        fieldhook::storage::Backend::Sqlite => Backend::Sqlite,
        fieldhook::storage::Backend::Postgres => Backend::Postgres,
    }
}

async fn entity_ordering_delivers_one_job_in_version_order_despite_failures(app: TestApp) {
    let rx = Receiver::start().await;
    let mut n = 0;
    rx.answer_with(move |_| {
        n += 1;
        Answer::Status(if n % 3 == 0 { 500 } else { 200 })
    });
    app.webhook_with(json!({"url": rx.url, "event_types": ["job_created", "job_updated"], "ordering": "entity"})).await;
    let job = app.create("jobs", json!({"description": "v1"})).await;
    for v in 2..=50 {
        app.patch(&format!("/v2/jobs/{job}"), json!({"description": format!("v{v}")})).await;
    }
    let delivered = |r: &[crate::receiver::Received]| r.iter().any(|x| x.body["job"]["version"] == 50);
    for _ in 0..200 {
        if delivered(&rx.received()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        app.advance(Duration::from_secs(20));
    }
    let got = rx.wait_until("version 50", delivered).await;
    // Every attempt, failed or not, came in version order: never an older
    // version after a newer one.
    let versions: Vec<i64> = got.iter().map(|r| r.body["job"]["version"].as_i64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "out of order: {versions:?}");
    let distinct: std::collections::BTreeSet<i64> = versions.iter().copied().collect();
    assert_eq!(distinct.len(), 50);
}

/// Requests written while a webhook had no ordering are ordered once it is
/// switched to entity ordering (on SQLite they were written outside the
/// entity-ordering index: migration 0006).
async fn switching_to_entity_ordering_orders_the_backlog_already_held(app: TestApp) {
    let rx = Receiver::start().await;
    rx.script(vec![Answer::Status(500)], Answer::Status(200));
    let hook = app.webhook(&rx.url, &["job_created", "job_updated"]).await;
    app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    let job = app.create("jobs", json!({"description": "v1"})).await;
    for v in 2..=10 {
        app.patch(&format!("/v2/jobs/{job}"), json!({"description": format!("v{v}")})).await;
    }
    let r = app.patch(&format!("/v2/webhooks/{hook}"), json!({"ordering": "entity"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    // Version 1 fails first; nothing else of the job may go out before its
    // retry succeeds.
    rx.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early: Vec<i64> = rx.received().iter().map(|r| r.body["job"]["version"].as_i64().unwrap()).collect();
    assert_eq!(early, vec![1], "sent while version 1 waited for its retry");
    let delivered = |r: &[crate::receiver::Received]| r.iter().any(|x| x.body["job"]["version"] == 10);
    for _ in 0..100 {
        if delivered(&rx.received()) {
            break;
        }
        app.advance(Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = rx.wait_until("version 10", delivered).await;
    let versions: Vec<i64> = got.iter().map(|r| r.body["job"]["version"].as_i64().unwrap()).collect();
    let mut expected = vec![1];
    expected.extend(1..=10);
    assert_eq!(versions, expected);
}

/// Requests an active webhook without ordering had already queued in
/// memory (handed over or read ahead, SQLite) are not sent past the switch
/// to entity ordering: after it, one version of the job at a time.
async fn switching_to_entity_ordering_holds_back_what_was_already_queued(app: TestApp) {
    let rx = Receiver::start().await;
    // Until the switch, the receiver holds each request long enough for the
    // rest of the job's versions to queue up behind the in-flight bound.
    let pause = Duration::from_millis(100);
    let switching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let after_switch = switching.clone();
    rx.answer_with(move |_| {
        let held = if after_switch.load(std::sync::atomic::Ordering::SeqCst) { pause } else { pause * 15 };
        Answer::Slow(held, 200)
    });
    let hook = app.webhook(&rx.url, &["job_created", "job_updated"]).await;
    let job = app.create("jobs", json!({"description": "v1"})).await;
    for v in 2..=40 {
        app.patch(&format!("/v2/jobs/{job}"), json!({"description": format!("v{v}")})).await;
    }
    switching.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = app.patch(&format!("/v2/webhooks/{hook}"), json!({"ordering": "entity"})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // (A POST that left just before the switch became visible to the
    // engine may arrive a moment after the test hears back.)
    let switched = std::time::Instant::now() + Duration::from_millis(30);
    let got = rx.wait_until("version 40", |r| r.iter().any(|x| x.body["job"]["version"] == 40)).await;
    let after: Vec<(std::time::Instant, i64)> =
        got.iter().filter(|r| r.at > switched).map(|r| (r.at, r.body["job"]["version"].as_i64().unwrap())).collect();
    assert!(after.len() > 1, "nearly everything went out before the switch: {after:?}");
    // Each version after the switch waits for the answer to the one
    // before it (a pause of 100 ms), never sent beside it.
    for pair in after.windows(2) {
        let ((a, va), (b, vb)) = (pair[0], pair[1]);
        assert!(va < vb, "out of order after the switch: {after:?}");
        assert!(b - a >= pause * 9 / 10, "versions {va} and {vb} were in flight together after the switch");
    }
}

/// A receiver replicating one job, answering as webhooks.md describes; the
/// version it holds is kept in `stored`, for the test to read.
fn replicator(
    full: bool,
    stored: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> impl FnMut(&crate::receiver::Received) -> Answer + Send {
    use std::sync::atomic::Ordering::SeqCst;
    move |r| {
        let v = r.body["job"]["version"].as_i64().unwrap_or(0);
        let held = stored.load(SeqCst);
        if full {
            if v == held + 1 {
                stored.store(v, SeqCst);
                Answer::Status(200)
            } else if v <= held {
                Answer::Status(200)
            } else {
                Answer::Status(422)
            }
        } else {
            stored.store(held.max(v), SeqCst);
            Answer::Status(200)
        }
    }
}

async fn last_write_wins_and_full_replication_receivers_converge(app: TestApp) {
    use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
    let lww = Receiver::start().await;
    let full = Receiver::start().await;
    let flaky = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (lww_holds, full_holds) = (std::sync::Arc::new(AtomicI64::new(0)), std::sync::Arc::new(AtomicI64::new(0)));
    let mut lww_policy = replicator(false, lww_holds.clone());
    let f = flaky.clone();
    lww.answer_with(move |r| {
        // Fail every fourth attempt so that retries overtake newer events.
        if f.fetch_add(1, SeqCst) % 4 == 3 { Answer::Status(500) } else { lww_policy(r) }
    });
    full.answer_with(replicator(true, full_holds.clone()));
    let types = ["job_created", "job_updated", "job_removed"];
    app.webhook(&lww.url, &types).await;
    app.webhook(&full.url, &types).await;
    let job = app.create("jobs", json!({"description": "v1"})).await;
    for v in 2..=30 {
        app.patch(&format!("/v2/jobs/{job}"), json!({"description": format!("v{v}")})).await;
    }
    let final_version = 30;
    // Until both hold the last version. (Not until it has merely arrived:
    // the full replicator refuses a version that overtook an earlier one,
    // with 422, and takes it on a retry once the earlier one is in. Each
    // refusal lengthens that version's next delay, so a chain of them can
    // take a day or more of retries: the clock moves up to eight days, past
    // the whole retry schedule, two minutes at a time at first. One swap
    // makes the replicator refuse every version behind it; those retries
    // come back in version order, so each round applies the versions up to
    // the next swap. Shuffled at every round, as they were when each request
    // drew its own jitter, a round applied one or two, and about one run in
    // forty ran out of retries before the last.)
    for step in 0..400 {
        if full_holds.load(SeqCst) == final_version && lww_holds.load(SeqCst) == final_version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        app.advance(Duration::from_secs(if step < 200 { 120 } else { 3600 }));
    }
    // Both converge: the full replicator has applied every version in turn.
    let applied: std::collections::BTreeSet<i64> =
        full.received().iter().filter_map(|r| r.body["job"]["version"].as_i64()).collect();
    assert_eq!(applied, (1..=final_version).collect(), "full replication saw every version");
    assert_eq!(full_holds.load(SeqCst), final_version, "full replication applied every version in turn");
    assert_eq!(lww_holds.load(SeqCst), final_version);
}

async fn a_dead_endpoint_does_not_delay_a_healthy_one(app: TestApp) {
    let dead = Receiver::start().await;
    dead.answer_with(|_| Answer::Hang);
    let healthy = Receiver::start().await;
    let dead_hook = app.webhook(&dead.url, &["client_created"]).await;
    app.webhook(&healthy.url, &["client_created"]).await;
    for i in 0..40 {
        app.create("clients", json!({"first_name": format!("c{i}")})).await;
    }
    healthy.wait_for(40).await;
    // The dead endpoint holds at most its in-flight bound, and not one of
    // its requests has even timed out yet: the healthy one never waited.
    let stuck = dead.received().len();
    assert!(stuck <= 16, "{stuck} requests in flight to one webhook");
    assert!(app.requests(&dead_hook, None).await.iter().all(|r| r["status"] == "scheduled"));
}

async fn pause_holds_events_and_resume_releases_them(app: TestApp) {
    let rx = Receiver::start().await;
    let hook = app.webhook(&rx.url, &["site_created"]).await;
    let r = app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["webhook"]["status"], "paused");
    for i in 0..3 {
        app.create("sites", json!({"name": format!("s{i}")})).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.received().is_empty());
    assert_eq!(app.requests(&hook, Some("scheduled")).await.len(), 3);
    let r = app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    assert_eq!(r.body["webhook"]["status"], "active");
    rx.wait_for(3).await;
}

/// The engine reads due requests ahead (SQLite) and keeps its list of
/// webhooks between commits: neither may outlive a pause.
async fn pausing_in_the_middle_of_a_backlog_stops_sending_at_once(app: TestApp) {
    let rx = Receiver::start().await;
    rx.answer_with(|_| Answer::Slow(Duration::from_millis(30), 200));
    let hook = app.webhook(&rx.url, &["site_created"]).await;
    app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    for i in 0..150 {
        app.create("sites", json!({"name": format!("s{i}")})).await;
    }
    app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    rx.wait_for(20).await;
    assert_eq!(app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await.status, 200);
    let at_pause = rx.received().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rx.received().len() - at_pause;
    // At most what a dispatch pass already under way when the pause
    // committed had started: one in-flight bound.
    assert!(after <= 16, "{after} requests sent after the pause was acknowledged");
    assert!(rx.received().len() < 150, "the backlog went out despite the pause");
    app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    let all = rx.wait_for(150).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let distinct: std::collections::HashSet<String> = rx.received().iter().map(|r| r.event_uuid()).collect();
    assert_eq!(distinct.len(), 150);
    assert_eq!(rx.received().len(), 150, "no event was sent twice (got {} before settling)", all.len());
}

/// A backlog longer than the SQLite read-ahead (256) drains through POSTs
/// that take the next request themselves and through top-ups while every
/// slot is busy: every event once, never more than 16 requests at a time.
async fn a_backlog_beyond_the_read_ahead_goes_out_once_within_the_in_flight_bound(app: TestApp) {
    let (url, seen) = concurrency_receiver(Duration::from_millis(3)).await;
    let hook = app.webhook(&url, &["site_created"]).await;
    app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    let mut sites = std::collections::HashSet::new();
    for i in 0..600 {
        sites.insert(app.create("sites", json!({"name": format!("s{i}")})).await);
    }
    app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    seen.assert_each_site_once_within_the_bound(&sites, "").await;
}

/// While a backlog longer than the read-ahead drains (on SQLite each claim
/// starts where the last one stopped), new events arrive and attempts
/// fail: each event is answered 200 exactly once, the failed ones by their
/// retry, and nothing is left scheduled.
async fn a_draining_backlog_misses_nothing_that_arrives_or_fails_meanwhile(app: TestApp) {
    // Two first attempts are answered 500, one in the middle of the
    // backlog and one of an event that arrived during the drain. (Not more:
    // a retry is written without a hand-off, so each one sends the next
    // claim back to the start of the claim order.)
    fn fails(r: &crate::receiver::Received) -> bool {
        let name = r.body["site"]["name"].as_str().unwrap_or_default();
        r.header("x-planado-delivery-attempt") == Some("1") && (name == "s700" || name == "late50")
    }
    let succeeded = |got: &[crate::receiver::Received]| -> Vec<String> {
        got.iter()
            .filter(|r| !fails(r))
            .map(|r| r.body["site"]["uuid"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let rx = Receiver::start().await;
    rx.answer_with(|r| if fails(r) { Answer::Status(500) } else { Answer::Slow(Duration::from_millis(1), 200) });
    let hook = app.webhook(&rx.url, &["site_created"]).await;
    app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    let mut sites = std::collections::HashSet::new();
    for i in 0..2400 {
        sites.insert(app.create("sites", json!({"name": format!("s{i}")})).await);
    }
    app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    for i in 0..100 {
        sites.insert(app.create("sites", json!({"name": format!("late{i}")})).await);
    }
    // Every event has had its first attempt; then the retries fall due.
    app.wait_for_log(&hook, "a first attempt of every event", |l| {
        l.iter().filter(|r| r["status"] == "sent").count() >= 2500
    })
    .await;
    app.advance(Duration::from_secs(17)); // 15 s + 10 % jitter
    rx.wait_until("every event answered 200", |got| succeeded(got).len() >= 2500).await;
    // Anything sent twice would arrive within this pause.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.received();
    assert_eq!(got.iter().filter(|r| fails(r)).count(), 2, "two first attempts failed");
    let ok = succeeded(&got);
    assert_eq!(ok.len(), 2500, "every event answered 200 exactly once");
    assert_eq!(ok.into_iter().collect::<std::collections::HashSet<_>>(), sites);
    assert!(app.requests(&hook, Some("scheduled")).await.is_empty(), "nothing left scheduled");
}

/// PostgreSQL: a full claim leaves a cursor and the webhook's next claims
/// start after it, but a chain of them goes back to the head of the claim
/// order within 100 ms (`DrainCursor`). A request that sorts before the
/// cursor (as does one that a create commits during a claim, with an
/// earlier time than the cursor's) is sent while the backlog still drains,
/// not only once a claim finds less than it asked for at the backlog's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_behind_the_drain_cursor_goes_out_while_the_backlog_drains() {
    let Some(app) = crate::helpers::spawn_app(Backend::Postgres).await else {
        return;
    };
    const BACKLOG: usize = 1000;
    let rx = Receiver::start().await;
    // 16 in flight, 10 ms each: the drain takes at least 600 ms.
    rx.answer_with(|_| Answer::Slow(Duration::from_millis(10), 200));
    let hook = app.webhook(&rx.url, &["site_created"]).await;
    app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    for i in 0..BACKLOG {
        app.create("sites", json!({"name": format!("s{i}")})).await;
    }
    app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    rx.wait_until("the drain under way", |got| got.len() >= 64).await;
    // A copy of the webhook's oldest request, an hour earlier than any
    // request of the backlog, told apart by its attempt number.
    let copied = fieldhook::storage::sql::query(concat!(
        "INSERT INTO requests (uuid, account_uuid, webhook_uuid, event_uuid, event_type, entity_type, ",
        "entity_uuid, entity_version, attempt_no, retry_no, status, send_at, created_at, entity_ordered) ",
        "SELECT $1, account_uuid, webhook_uuid, event_uuid, event_type, entity_type, entity_uuid, ",
        "entity_version, 99, 0, 'scheduled', send_at - 3600000000, created_at, entity_ordered ",
        "FROM requests WHERE webhook_uuid = $2 ORDER BY send_at LIMIT 1"
    ))
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(hook.clone())
    .execute(&app.db.read)
    .await
    .unwrap();
    assert_eq!(copied.rows_affected(), 1);
    let got = rx
        .wait_until("the request behind the cursor", |got| {
            got.iter().any(|r| r.header("x-planado-delivery-attempt") == Some("99"))
        })
        .await;
    let before = got.iter().position(|r| r.header("x-planado-delivery-attempt") == Some("99")).unwrap();
    assert!(
        before < BACKLOG - 100,
        "sent while the backlog drained, not after it: {before} of {BACKLOG} deliveries came first"
    );
}

/// On SQLite a commit hands its new requests straight to the engine. When
/// a create fails in a busy group commit, the creates that shared its
/// savepoint are undone and run again: what the undone run handed over
/// must never be sent. Every stored client's event arrives once, under the
/// event uuid in the outbox, and nothing of the failed or undone creates.
async fn creates_undone_in_a_busy_group_commit_deliver_nothing(app: TestApp) {
    let rx = Receiver::start().await;
    app.webhook(&rx.url, &["client_created"]).await;
    // One delivery first, so that the engine's list of webhooks has this
    // one and it takes the hand-offs of the burst (it takes none for a
    // webhook it has not read yet).
    app.create("clients", json!({"first_name": "first"})).await;
    rx.wait_for(1).await;
    let creates = (0..60).map(|i| {
        let external_id = if i % 3 == 0 { "dup".to_string() } else { format!("own-{i}") };
        let body = json!({"first_name": format!("C{i}"), "external_id": external_id});
        let app = &app;
        async move { app.post("/v2/clients", body).await }
    });
    let replies = futures::future::join_all(creates).await;
    let stored: std::collections::HashSet<String> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.body["client_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored.len(), 41, "40 own external_ids and one \"dup\"");
    rx.wait_for(42).await;
    // Anything sent twice, or undone and sent anyway, would arrive meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.received();
    assert_eq!(got.len(), 42, "one delivery per stored client");
    let delivered: std::collections::HashSet<String> =
        got[1..].iter().map(|r| r.body["client"]["uuid"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(delivered, stored);
    for r in &got {
        let uuid = r.body["client"]["uuid"].as_str().unwrap();
        let outbox: Vec<String> =
            fieldhook::storage::sql::query_scalar("SELECT uuid FROM events WHERE entity_uuid = $1")
                .bind(uuid)
                .fetch_all(&app.db.read)
                .await
                .unwrap();
        assert_eq!(outbox, vec![r.event_uuid()], "the event delivered is the one stored");
    }
}

/// What [`concurrency_receiver`] saw: each body, and the most requests it
/// was answering at once.
#[derive(Default)]
pub struct Seen {
    bodies: std::sync::Mutex<Vec<Value>>,
    current: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Seen {
    /// Waits (up to a minute) until every one of `sites` has arrived as a
    /// `site_created` body, and a moment more for anything sent twice; then
    /// asserts that each arrived exactly once, and that the requests open at
    /// once never exceeded the in-flight bound of 16 but did exceed one (slow
    /// answers and a long backlog: the bound is not just respected but used).
    /// `whence` ends the message of a broken bound.
    pub async fn assert_each_site_once_within_the_bound(
        &self,
        sites: &std::collections::HashSet<String>,
        whence: &str,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.bodies.lock().unwrap().len() < sites.len() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Anything sent twice would arrive within this pause.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bodies = self.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), sites.len(), "every event exactly once");
        let delivered: std::collections::HashSet<String> =
            bodies.iter().map(|b| b["site"]["uuid"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(&delivered, sites);
        let peak = self.peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!(peak <= 16, "{peak} requests were in flight to one webhook at once{whence}");
        assert!(peak > 1, "requests went out one at a time");
    }
}

/// A receiver that takes `delay` to answer 200 and counts how many
/// requests it is answering at the same time.
pub async fn concurrency_receiver(delay: Duration) -> (String, std::sync::Arc<Seen>) {
    use std::sync::atomic::Ordering::SeqCst;
    let seen = std::sync::Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let state = seen.clone();
    let app = axum::Router::new().fallback(
        move |axum::extract::State(seen): axum::extract::State<std::sync::Arc<Seen>>, body: axum::body::Bytes| async move {
            let now = seen.current.fetch_add(1, SeqCst) + 1;
            seen.peak.fetch_max(now, SeqCst);
            tokio::time::sleep(delay).await;
            seen.bodies.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            seen.current.fetch_sub(1, SeqCst);
            axum::http::StatusCode::OK
        },
    );
    let app = app.with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn the_test_event_and_deleting_a_webhook(app: TestApp) {
    let rx = Receiver::start().await;
    let hook = app.webhook(&rx.url, &["job_created"]).await;
    let r = app.post(&format!("/v2/webhooks/{hook}/test"), json!({})).await;
    assert_eq!(r.status, 202);
    assert!(r.body["request_uuid"].is_string());
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].body["event_type"], "webhook_test");
    assert_eq!(got[0].body["webhook"]["uuid"], hook);
    assert_eq!(got[0].body["webhook"]["version"], 0);
    // Deleting drops what was scheduled.
    app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    app.create("jobs", json!({})).await;
    assert_eq!(app.delete(&format!("/v2/webhooks/{hook}")).await.status, 204);
    assert_eq!(app.get(&format!("/v2/webhooks/{hook}")).await.status, 404);
    let pending: i64 =
        fieldhook::storage::sql::query_scalar("SELECT COUNT(*) FROM requests WHERE status = 'scheduled'")
            .fetch_one(&app.db.read)
            .await
            .unwrap();
    assert_eq!(pending, 0);
    let types = app.get("/v2/event_types").await.body;
    let names: Vec<_> = types["event_types"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 18);
    assert!(names.contains(&"job_report_ready") && !names.contains(&"webhook_test"));
}

async fn webhook_urls_and_event_types_are_validated(app: TestApp) {
    for (body, field) in [
        (json!({"url": "ftp://x.io", "event_types": ["job_created"]}), "url"),
        (json!({"url": "https://x.io/h", "event_types": []}), "event_types"),
        (json!({"url": "https://x.io/h", "event_types": ["job_exploded"]}), "event_types"),
        (json!({"url": "https://x.io/h", "event_types": ["job_created"], "ordering": "random"}), "ordering"),
        (json!({"url": "https://x.io/h", "event_types": ["job_created"], "secret": "x".repeat(201)}), "secret"),
        (json!({"url": "https://x.io/h", "event_types": ["job_created"], "secret": "pässwörd"}), "secret"),
        (json!({"url": format!("https://x.io/{}", "a".repeat(2000)), "event_types": ["job_created"]}), "url"),
    ] {
        let r = app.post("/v2/webhooks", body.clone()).await;
        assert_eq!(r.status, 422, "{body}");
        assert!(r.body["errors"][field].is_array(), "{body}: {}", r.body);
    }
    let reader = app.key_with(&["webhooks:read"]).await;
    let r = app
        .send(
            reqwest::Method::POST,
            "/v2/webhooks",
            Some(&reader),
            Some(json!({"url": "https://x.io", "event_types": ["job_created"]})),
        )
        .await;
    assert_eq!(r.status, 403);
    let hook = app.webhook("https://hooks.example.com/x", &["job_created"]).await;
    let r =
        app.patch(&format!("/v2/webhooks/{hook}"), json!({"event_types": ["job_updated"], "ordering": "entity"})).await;
    assert_eq!(r.status, 200);
    let w = app.get(&format!("/v2/webhooks/{hook}")).await.body["webhook"].clone();
    assert_eq!(w["event_types"], json!(["job_updated"]));
    assert_eq!(w["ordering"], "entity");
    assert_eq!(app.get("/v2/webhooks").await.body["webhooks"].as_array().unwrap().len(), 1);
}

/// With private targets refused, a webhook cannot be aimed at this machine,
/// neither when created nor by a name that resolves to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_at_creation_and_at_send_time() {
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let app =
        spawn_with(Backend::Sqlite, url, dir, |s| Settings { allow_private_targets: Some("false".into()), ..s }).await;
    let r = app.post("/v2/webhooks", json!({"url": "http://127.0.0.1:9/hook", "event_types": ["job_created"]})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["url"].is_array());
    // A public-looking name that resolves to loopback is caught when sending.
    let hook = app.webhook("http://localtest.me:9/hook", &["job_created"]).await;
    let hook2 = app.webhook("http://127.0.0.1.nip.io:9/hook", &["job_created"]).await;
    app.create("jobs", json!({})).await;
    for h in [hook, hook2] {
        let log = app.wait_for_log(&h, "the refused attempt", |l| l.iter().any(|r| r["status"] == "sent")).await;
        let sent = log.iter().find(|r| r["status"] == "sent").unwrap();
        // Without internet the name may not resolve at all: either way no
        // connection to a private address was made.
        let kind = sent["error_type"].as_str().unwrap();
        assert!(kind == "forbidden address" || kind == "dns failure", "{kind}");
    }
}

/// A receiver that hangs gives `timeout` once the delivery timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out() {
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let app = spawn_with(Backend::Sqlite, url, dir, |s| Settings { delivery_timeout: Some("300ms".into()), ..s }).await;
    let rx = Receiver::start().await;
    rx.answer_with(|_| Answer::Hang);
    let hook = app.webhook(&rx.url, &["job_created"]).await;
    app.create("jobs", json!({})).await;
    let log = app.wait_for_log(&hook, "the timeout", |l| l.iter().any(|r| r["status"] == "sent")).await;
    let sent = log.iter().find(|r| r["status"] == "sent").unwrap();
    assert_eq!(sent["error_type"], "timeout");
    assert!(sent["request_time_ms"].as_i64().unwrap() >= 250);
}

/// The sender keeps connections alive, so it must cope with receivers that
/// close them: after every answer (`Connection: close`), or silently a
/// moment after answering. Every event arrives at its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_close_connections_get_every_event_at_the_first_attempt() {
    let Some(app) = crate::helpers::spawn_app(Backend::Sqlite).await else { return };
    let polite = Receiver::start().await;
    polite.answer_with(|_| Answer::WithHeader(200, "connection", "close".into()));
    let polite_hook = app.webhook(&polite.url, &["job_created"]).await;
    let (abrupt_url, abrupt_count) = closing_receiver().await;
    let abrupt_hook = app.webhook(&abrupt_url, &["job_created"]).await;
    for _ in 0..6 {
        app.create("jobs", json!({})).await;
        // Long enough for the abrupt receiver to have closed the last one.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    polite.wait_for(6).await;
    for hook in [polite_hook, abrupt_hook] {
        let log = app
            .wait_for_log(&hook, "six successes", |l| l.iter().filter(|r| r["http_response_code"] == 200).count() == 6)
            .await;
        assert!(log.iter().all(|r| r["attempt_no"] == 1 && r["error_type"].is_null()), "{log:#?}");
    }
    assert_eq!(abrupt_count.load(std::sync::atomic::Ordering::SeqCst), 6);
}

/// A raw HTTP/1.1 receiver that answers 200 without `Connection: close`
/// and closes the connection 20 ms later; returns its URL and a count.
async fn closing_receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as many body bytes as Content-Length says.
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    (url, count)
}

/// A long answer is logged up to 16 KiB, and the connection it came on is
/// not reused half-read: the next event is delivered normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_is_cut_at_16_kib_and_the_next_delivery_works() {
    let Some(app) = crate::helpers::spawn_app(Backend::Sqlite).await else { return };
    let rx = Receiver::start().await;
    rx.script(vec![Answer::Body(200, "x".repeat(100_000))], Answer::Status(200));
    let hook = app.webhook(&rx.url, &["job_created"]).await;
    app.create("jobs", json!({})).await;
    app.wait_for_log(&hook, "the long answer", |l| l.iter().any(|r| r["status"] == "sent")).await;
    app.create("jobs", json!({})).await;
    let log = app
        .wait_for_log(&hook, "both answers", |l| l.iter().filter(|r| r["http_response_code"] == 200).count() == 2)
        .await;
    let long = log.iter().find(|r| r["http_response_body"].as_str().is_some_and(|b| b.len() > 2)).unwrap();
    assert_eq!(long["http_response_body"].as_str().unwrap().len(), 16 * 1024);
    assert!(log.iter().all(|r| r["error_type"].is_null()), "{log:#?}");
}

/// An https webhook whose server does not speak TLS fails as `tls failure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_is_a_tls_failure() {
    let Some(app) = crate::helpers::spawn_app(Backend::Sqlite).await else { return };
    let plain = Receiver::start().await;
    let hook = app.webhook(&plain.url.replacen("http://", "https://", 1), &["job_created"]).await;
    app.create("jobs", json!({})).await;
    let log = app.wait_for_log(&hook, "the tls failure", |l| l.iter().any(|r| r["status"] == "sent")).await;
    let sent = log.iter().find(|r| r["status"] == "sent").unwrap();
    assert_eq!(sent["error_type"], "tls failure", "{sent:#}");
    assert_eq!(sent["http_response_code"], Value::Null);
    assert!(plain.received().is_empty());
}

/// PostgreSQL's engine reads the webhooks at each pass, then claims for
/// each: a pause acknowledged in between must still stop the claim, or an
/// event created after the pause goes out (the occasional failure of
/// the_backlog_gauges_count_held_retrying_and_due_requests: one of the
/// paused webhook's three requests had been sent). The claim reads the
/// status again under the webhook's row lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_from_a_list_read_before_a_pause_takes_nothing() {
    let Some((url, dir)) = fresh_database(Backend::Postgres).await else { return };
    // No engine of its own: the claims are this test's.
    let app = spawn_with(Backend::Postgres, url, dir, |s| Settings { role: Some("api".into()), ..s }).await;
    let hook = app.webhook("https://example.com/hook", &["client_created"]).await;
    let before_pause = listed_targets(&app).await;
    app.post(&format!("/v2/webhooks/{hook}/pause"), json!({})).await;
    app.create("clients", json!({"first_name": "after the pause"})).await;
    assert!(claim_for(&app, &hook, before_pause).await.is_empty(), "a request created after the pause was claimed");
    app.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await;
    assert_eq!(claim_for(&app, &hook, listed_targets(&app).await).await.len(), 1, "resumed, the request is claimed");
}

/// PostgreSQL's claim is one simple query that runs a statement each
/// connection prepares for itself, on the first claim that finds it missing.
/// A connection that has lost it (`DEALLOCATE`) prepares it again, both
/// forms (from the head of the claim order, and after a position) work, and
/// each claim commits its leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_claim_prepares_its_statement_where_it_is_missing() {
    use fieldhook::storage::deliveries;
    let Some((url, dir)) = fresh_database(Backend::Postgres).await else { return };
    let app = spawn_with(Backend::Postgres, url, dir, |s| Settings { role: Some("api".into()), ..s }).await;
    let hook = app.webhook("https://example.com/hook", &["client_created"]).await;
    for name in ["first", "second", "third"] {
        app.create("clients", json!({"first_name": name})).await;
    }
    let targets = listed_targets(&app).await;
    let target = targets.iter().find(|t| t.uuid.to_string() == hook).expect("the webhook is listed");
    let now = fieldhook::clock::Clock::now(&app.clock);
    let lease = Duration::from_secs(60);
    // One connection throughout.
    let mut conn = app.db.read.acquire().await.unwrap();
    let mut claimed = Vec::new();
    let mut from = None;
    for round in 0..3 {
        if round == 2 {
            // The form from the head, prepared by the first claim, dropped
            // (by name: sqlx's own statements on the connection stay).
            conn.execute_raw("DEALLOCATE fieldhook_claim").await.unwrap();
        }
        let (due, end) =
            deliveries::claim(&mut conn, target, 1, 16, now, false, lease, "one-node", from).await.unwrap();
        assert_eq!(due.len(), 1, "claim {round}: {due:?}");
        claimed.push(due[0].request);
        // The second claim starts after the first's position; the third from the head.
        from = if round == 0 { end } else { None };
    }
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 3, "each claim took a request of its own");
    // Committed: another connection sees the three leases.
    let leased: i64 = fieldhook::storage::sql::query_scalar("SELECT COUNT(*) FROM requests WHERE claimed_by = $1")
        .bind("one-node")
        .fetch_one(&app.db.read)
        .await
        .unwrap();
    assert_eq!(leased, 3);
}

/// A result is recorded once: recording the same request's attempt again (a
/// node whose lease ran out, say, records what another has recorded) changes
/// nothing and counts nothing. PostgreSQL finds the requests that await
/// their result by `outcome IS NULL`, which must mean `status =
/// 'scheduled'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_is_recorded_once() {
    use fieldhook::storage::deliveries;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((url, dir)) = fresh_database(backend).await else { continue };
        // No engine of its own: the claim and the records are this test's.
        let app = spawn_with(backend, url, dir, |s| Settings { role: Some("api".into()), ..s }).await;
        let hook = app.webhook("https://example.com/hook", &["client_created"]).await;
        app.create("clients", json!({"first_name": "once"})).await;
        let due = claim_for(&app, &hook, listed_targets(&app).await).await;
        assert_eq!(due.len(), 1, "{backend:?}");
        let now = fieldhook::clock::Clock::now(&app.clock);
        let record = |code: u16| {
            let attempt = answered(due[0].clone(), code, now);
            let policy = test_policy();
            app.db.committer.write(move |conn| {
                Box::pin(async move { deliveries::record(conn, &mut [attempt], &policy, now).await })
            })
        };
        assert_eq!(record(200).await.unwrap().attempts, 1, "{backend:?}: the first result is recorded");
        let again = record(500).await.unwrap();
        assert_eq!((again.attempts, again.retries), (0, 0), "{backend:?}: the second changes nothing");
        let log = app.wait_for_log(&hook, "the recorded request", |l| l.len() == 1).await;
        assert_eq!(log[0]["status"], "sent", "{backend:?}");
        assert_eq!(log[0]["http_response_code"], 200, "{backend:?}");
    }
}

/// Failures recorded together, answered in any order, are retried in the
/// order of their events, all due at one moment: the next claim takes one
/// job's versions in turn. (Each drawing its own jitter, they came back
/// shuffled, and a receiver replicating by version refused most of them
/// again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_recorded_together_are_retried_in_the_order_of_their_events() {
    use fieldhook::storage::deliveries;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((url, dir)) = fresh_database(backend).await else { continue };
        // No engine of its own: the claims and the records are this test's.
        let app = spawn_with(backend, url, dir, |s| Settings { role: Some("api".into()), ..s }).await;
        let hook = app.webhook("https://example.com/hook", &["job_created", "job_updated"]).await;
        let job = app.create("jobs", json!({"description": "v1"})).await;
        for v in 2..=10 {
            app.patch(&format!("/v2/jobs/{job}"), json!({"description": format!("v{v}")})).await;
        }
        let versions = |due: &[deliveries::Due]| -> Vec<i64> { due.iter().map(|d| d.entity_version).collect() };
        let mut due = claim_for(&app, &hook, listed_targets(&app).await).await;
        assert_eq!(versions(&due), (1..=10).collect::<Vec<_>>(), "{backend:?}: the first claim");
        // The answers came back newest first, all of them 500.
        due.reverse();
        let now = fieldhook::clock::Clock::now(&app.clock);
        let mut attempts: Vec<_> = due.into_iter().map(|due| answered(due, 500, now)).collect();
        let mut policy = test_policy();
        policy.jitter = 0.5;
        let recorded = app
            .db
            .committer
            .write(move |conn| Box::pin(async move { deliveries::record(conn, &mut attempts, &policy, now).await }))
            .await
            .unwrap();
        assert_eq!(recorded.retries, 10, "{backend:?}");
        let scheduled = app.requests(&hook, Some("scheduled")).await;
        let send_at: std::collections::HashSet<&str> =
            scheduled.iter().map(|r| r["send_at"].as_str().unwrap()).collect();
        assert_eq!(send_at.len(), 1, "{backend:?}: one moment for all ten: {send_at:?}");
        // Past the delay (10 s, ±50 %).
        app.advance(Duration::from_secs(16));
        let again = claim_for(&app, &hook, listed_targets(&app).await).await;
        assert!(again.iter().all(|d| d.attempt_no == 2), "{backend:?}");
        assert_eq!(versions(&again), (1..=10).collect::<Vec<_>>(), "{backend:?}: the retries, in version order");
    }
}

/// An attempt of `due` answered with `code` at `now`, as the engine records it.
fn answered(
    due: fieldhook::storage::deliveries::Due,
    code: u16,
    now: chrono::DateTime<chrono::Utc>,
) -> fieldhook::storage::deliveries::Attempt {
    fieldhook::storage::deliveries::Attempt {
        due,
        probe: false,
        sent_at: now,
        elapsed_ms: 1,
        response_code: Some(code),
        response_headers: None,
        response_body: None,
        error_type: None,
        error_description: None,
        retry_after: None,
    }
}

/// A retry policy for tests that run the engine's storage steps themselves.
fn test_policy() -> fieldhook::domain::webhook::RetryPolicy {
    fieldhook::domain::webhook::RetryPolicy {
        schedule: vec![Duration::from_secs(10)],
        jitter: 0.0,
        suspend_min_failures: 10,
        suspend_after: Duration::from_secs(3600),
        probe_interval: Duration::from_secs(60),
    }
}

/// The webhooks the engine would serve now, as a dispatch pass reads them.
async fn listed_targets(app: &TestApp) -> Vec<std::sync::Arc<fieldhook::storage::deliveries::Target>> {
    fieldhook::storage::deliveries::targets(&mut app.db.read.acquire().await.unwrap()).await.unwrap()
}

/// A claim of up to 10 due requests of `hook`, as the engine makes it, from
/// the list of webhooks `targets`.
async fn claim_for(
    app: &TestApp,
    hook: &str,
    targets: Vec<std::sync::Arc<fieldhook::storage::deliveries::Target>>,
) -> Vec<fieldhook::storage::deliveries::Due> {
    let target = targets.iter().find(|t| t.uuid.to_string() == hook).expect("the webhook is listed");
    let mut conn = app.db.read.acquire().await.unwrap();
    let now = fieldhook::clock::Clock::now(&app.clock);
    let lease = Duration::from_secs(60);
    fieldhook::storage::deliveries::claim(&mut conn, target, 10, 16, now, false, lease, "test", None).await.unwrap().0
}
