//! The job lifecycle (api.md, "Lifecycle", "Assignee notification") and
//! its webhooks.

use crate::helpers::{Backend, TestApp, fresh_database, spawn_with};
use crate::receiver::Receiver;
use fieldhook::config::Settings;
use serde_json::{Value, json};
use std::time::Duration;

crate::on_both_backends!(
    every_status_and_action_pair_follows_the_lifecycle_table,
    action_context_comes_from_the_device,
    reports_and_assignee_changes_follow_the_rules,
    billing_crm_and_full_listeners_get_exactly_their_events,
    notifications_are_kept_per_user_and_can_be_suppressed,
);

const STATUSES: &[&str] =
    &["posted", "scheduled", "published", "en_route", "started", "suspended", "finished", "canceled"];

/// api.md's table, restated here so that the test checks the code against
/// the spec rather than against itself: action → (allowed from, to, event,
/// timestamp).
fn spec(action: &str) -> (Vec<&'static str>, &'static str, &'static str, Option<&'static str>) {
    match action {
        "publish" => (vec!["scheduled"], "published", "job_published", None),
        "en_route" => (vec!["published"], "en_route", "job_en_route", Some("en_route_at")),
        "start" => (vec!["published", "en_route"], "started", "job_started", Some("started_at")),
        "suspend" => (vec!["started"], "suspended", "job_suspended", Some("suspended_at")),
        "resume" => (vec!["suspended"], "started", "job_resumed", None),
        "finish" => (vec!["started", "suspended"], "finished", "job_finished", Some("finished_at")),
        "cancel" => (
            vec!["posted", "scheduled", "published", "en_route", "started", "suspended"],
            "canceled",
            "job_canceled",
            Some("canceled_at"),
        ),
        _ => unreachable!(),
    }
}

fn body_for(action: &str) -> Value {
    if action == "finish" { json!({"resolution": {"successful": true, "comment": "done"}}) } else { json!({}) }
}

/// Creates a job and walks it to `status`.
async fn job_in(app: &TestApp, worker: &str, status: &str) -> String {
    let scheduled = json!({"scheduled_at": "2026-12-01T09:00:00+00:00", "assignee": {"worker": {"uuid": worker}}});
    let (create, path): (Value, &[&str]) = match status {
        "posted" => (json!({}), &[]),
        "scheduled" => (scheduled, &[]),
        "published" => (scheduled, &["publish"]),
        "en_route" => (scheduled, &["publish", "en_route"]),
        "started" => (scheduled, &["publish", "start"]),
        "suspended" => (scheduled, &["publish", "start", "suspend"]),
        "finished" => (scheduled, &["publish", "start", "finish"]),
        "canceled" => (json!({}), &["cancel"]),
        _ => unreachable!(),
    };
    let job = app.create("jobs", create).await;
    for action in path {
        let r = app.post(&format!("/v2/jobs/{job}/{action}"), body_for(action)).await;
        assert_eq!(r.status, 200, "{action}: {:?}", r.body);
    }
    assert_eq!(app.get(&format!("/v2/jobs/{job}")).await.body["job"]["status"], status);
    job
}

async fn every_status_and_action_pair_follows_the_lifecycle_table(app: TestApp) {
    let worker = app.create("users", json!({"email": "w@acme.io"})).await;
    for action in ["publish", "en_route", "start", "suspend", "resume", "finish", "cancel"] {
        let (from, to, event, stamp) = spec(action);
        for status in STATUSES {
            let job = job_in(&app, &worker, status).await;
            let before = app.get(&format!("/v2/jobs/{job}")).await.body["job"].clone();
            let events_before = app.outbox(&job).await;
            let r = app.post(&format!("/v2/jobs/{job}/{action}"), body_for(action)).await;
            if from.contains(status) {
                assert_eq!(r.status, 200, "{action} from {status}: {:?}", r.body);
                let after = &r.body["job"];
                assert_eq!(after["status"], to, "{action} from {status}");
                let version = before["version"].as_i64().unwrap() + 1;
                assert_eq!(after["version"], version);
                if let Some(stamp) = stamp {
                    assert!(after["timestamps"][stamp].is_string(), "{action} sets {stamp}");
                }
                assert_eq!(
                    app.get(&format!("/v2/jobs/{job}")).await.body["job"],
                    *after,
                    "the answer is the stored job"
                );
                let new_events: Vec<(String, i64)> = app.outbox(&job).await[events_before.len()..].to_vec();
                let mut types: Vec<&str> = new_events.iter().map(|(t, _)| t.as_str()).collect();
                types.sort();
                let mut expected = vec!["job_updated", event];
                expected.sort();
                assert_eq!(types, expected, "{action} from {status}");
                assert!(new_events.iter().all(|(_, v)| *v == version), "same version for both events");
            } else {
                assert_eq!(r.status, 422, "{action} from {status}: {:?}", r.body);
                assert_eq!(r.body["code"], "invalid_transition");
                assert!(r.body["message"].as_str().unwrap().contains(status), "names the status: {}", r.body);
                assert_eq!(app.get(&format!("/v2/jobs/{job}")).await.body["job"], before, "nothing changed");
                assert_eq!(app.outbox(&job).await, events_before, "no event");
            }
        }
    }
    let job = job_in(&app, &worker, "posted").await;
    assert_eq!(app.post(&format!("/v2/jobs/{job}/explode"), json!({})).await.status, 404);
}

async fn action_context_comes_from_the_device(app: TestApp) {
    let rx = Receiver::start().await;
    app.webhook(&rx.url, &["job_started"]).await;
    let worker = app.create("users", json!({"email": "tech@acme.io"})).await;
    let job = job_in(&app, &worker, "published").await;
    let device = uuid::Uuid::new_v4();
    let r = app
        .post(
            &format!("/v2/jobs/{job}/start"),
            json!({"happened_at": "2026-11-22T09:58:03+00:00", "device_uuid": device, "user_uuid": worker}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["job"]["timestamps"]["started_at"], "2026-11-22T09:58:03+00:00");
    let got = rx.wait_for(1).await;
    let ctx = &got[0].body["context"];
    assert_eq!(ctx["source"], "mobile");
    assert_eq!(ctx["happened_at"], "2026-11-22T09:58:03+00:00");
    assert_eq!(ctx["device_uuid"], device.to_string());
    assert_eq!(ctx["user_uuid"], worker);
    assert_eq!(ctx["user_email"], "tech@acme.io");
    assert_ne!(ctx["created_at"], ctx["happened_at"]);
    let r = app.post(&format!("/v2/jobs/{job}/suspend"), json!({"user_uuid": uuid::Uuid::now_v7()})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["user_uuid"].is_array());
    let r = app.post(&format!("/v2/jobs/{job}/suspend"), json!({"happend_at": "2026-11-22T09:58:03+00:00"})).await;
    assert_eq!(r.status, 422, "a typo is refused");
}

async fn reports_and_assignee_changes_follow_the_rules(app: TestApp) {
    let worker = app.create("users", json!({"email": "w@acme.io"})).await;
    let other = app.create("users", json!({"email": "o@acme.io"})).await;
    let started = job_in(&app, &worker, "started").await;
    let r = app.patch(&format!("/v2/jobs/{started}"), json!({"assignee": {"worker": {"uuid": other}}})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["assignee"].is_array());
    let r = app
        .send(
            reqwest::Method::PUT,
            &format!("/v2/jobs/{started}/report"),
            Some(&app.key),
            Some(json!({"report_fields": []})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["code"], "invalid_transition");
    let r = app.post(&format!("/v2/jobs/{started}/finish"), json!({})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["resolution"].is_array());
    let r = app
        .post(
            &format!("/v2/jobs/{started}/finish"),
            json!({"resolution": {"successful": false, "comment": "no parts"}, "report_fields": [{"name": "parts", "value": "none"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["job"]["resolution"], json!({"successful": false, "comment": "no parts"}));
    let last: Vec<String> = app.outbox(&started).await.into_iter().rev().take(3).map(|(t, _)| t).collect();
    assert!(last.contains(&"job_finished".to_string()) && last.contains(&"job_report_ready".to_string()));
    let fields = json!({"report_fields": [{"name": "parts", "value": "ordered"}, {"name": "hours", "value": "2"}]});
    let r = app.send(reqwest::Method::PUT, &format!("/v2/jobs/{started}/report"), Some(&app.key), Some(fields)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["job"]["report_fields"][1]["name"], "hours");
    let events = app.outbox(&started).await;
    let version = r.body["job"]["version"].as_i64().unwrap();
    let at_version: Vec<&str> = events.iter().filter(|(_, v)| *v == version).map(|(t, _)| t.as_str()).collect();
    assert_eq!(at_version, vec!["job_updated", "job_report_ready"]);
}

async fn billing_crm_and_full_listeners_get_exactly_their_events(app: TestApp) {
    let billing = Receiver::start().await;
    let crm = Receiver::start().await;
    let everything = Receiver::start().await;
    app.webhook(&billing.url, &["job_finished"]).await;
    app.webhook(&crm.url, &["job_created", "job_assigned"]).await;
    app.webhook_with(json!({"url": everything.url, "event_types": ["job_updated"], "ordering": "entity"})).await;
    let worker = app.create("users", json!({"email": "w@acme.io"})).await;
    let finished = job_in(&app, &worker, "finished").await;
    let canceled = job_in(&app, &worker, "canceled").await;
    let got = billing.wait_for(1).await;
    assert_eq!(got[0].body["job"]["uuid"], finished);
    let crm_got = crm.wait_for(3).await;
    // Two creations, one assignment (the finished job was created assigned).
    let mut kinds: Vec<(String, String)> = crm_got
        .iter()
        .map(|r| {
            (r.body["event_type"].as_str().unwrap().to_string(), r.body["job"]["uuid"].as_str().unwrap().to_string())
        })
        .collect();
    kinds.sort();
    let mut expected = vec![
        ("job_assigned".to_string(), finished.clone()),
        ("job_created".to_string(), canceled.clone()),
        ("job_created".to_string(), finished.clone()),
    ];
    expected.sort();
    assert_eq!(kinds, expected);
    // job_updated: every change after creation, in the history's order.
    let history = app.get(&format!("/v2/jobs/{finished}/history?limit=100")).await.body["history"].clone();
    let updates: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "job_updated")
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    let seen = everything
        .wait_until("every update of the finished job", |r| {
            r.iter().filter(|x| x.body["job"]["uuid"] == finished.as_str()).count() >= updates.len()
        })
        .await;
    let seen: Vec<i64> = seen
        .iter()
        .filter(|x| x.body["job"]["uuid"] == finished.as_str())
        .map(|x| x.body["job"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, updates);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(billing.received().len(), 1, "billing saw only the finished job");
    assert_eq!(crm.received().len(), 3);
}

async fn notifications_are_kept_per_user_and_can_be_suppressed(app: TestApp) {
    let w = app.create("users", json!({"email": "w@acme.io"})).await;
    let m1 = app.create("users", json!({"email": "m1@acme.io"})).await;
    let m2 = app.create("users", json!({"email": "m2@acme.io"})).await;
    let team = app.create("teams", json!({"name": "T", "worker_uuids": [m1, m2]})).await;
    let notes = |user: String| {
        let app = &app;
        async move {
            app.get(&format!("/v2/users/{user}/notifications")).await.body["notifications"].as_array().unwrap().clone()
        }
    };
    let job = app.create("jobs", json!({"assignee": {"worker": {"uuid": w}}})).await;
    let n = notes(w.clone()).await;
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["job_uuid"], job);
    assert_eq!(n[0]["kind"], "assigned");
    app.patch(&format!("/v2/jobs/{job}"), json!({"scheduled_at": "2026-12-02T08:00:00+00:00"})).await;
    assert_eq!(notes(w.clone()).await[0]["kind"], "rescheduled");
    app.patch(&format!("/v2/jobs/{job}"), json!({"description": "no notice for this"})).await;
    assert_eq!(notes(w.clone()).await.len(), 2);
    app.patch(&format!("/v2/jobs/{job}"), json!({"assignee": {"team": {"uuid": team}}})).await;
    assert_eq!(notes(m1.clone()).await.len(), 1);
    assert_eq!(notes(m2.clone()).await.len(), 1);
    // The header turns it off.
    let r = app
        .http
        .post(format!("{}/v2/jobs", app.base))
        .bearer_auth(&app.key)
        .header("X-Planado-Notify-Assignees", "false")
        .json(&json!({"assignee": {"worker": {"uuid": w}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(notes(w.clone()).await.len(), 2);
    assert_eq!(app.get(&format!("/v2/users/{}/notifications", uuid::Uuid::now_v7())).await.status, 404);
}

/// Notifications reach the push gateway through the delivery engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_push_gateway() {
    let gateway = Receiver::start().await;
    gateway.script(vec![crate::receiver::Answer::Status(503)], crate::receiver::Answer::Status(200));
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let push = gateway.url.clone();
    let app = spawn_with(Backend::Sqlite, url, dir, |s| Settings { push_url: Some(push), ..s }).await;
    let w = app.create("users", json!({"email": "w@acme.io"})).await;
    let job = app.create("jobs", json!({"assignee": {"worker": {"uuid": w}}})).await;
    gateway.wait_for(1).await;
    // The first push failed: it is retried like any webhook request.
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.advance(Duration::from_secs(20));
    let got = gateway.wait_for(2).await;
    assert_eq!(got[0].event_uuid(), got[1].event_uuid());
    let n = &got[1].body["notification"];
    assert_eq!(n["user_uuid"], w);
    assert_eq!(n["user_email"], "w@acme.io");
    assert_eq!(n["job_uuid"], job);
    assert_eq!(n["kind"], "assigned");
    assert_eq!(got[1].body["event_type"], "assignee_notification");
    // The gateway's webhook is internal: it does not show in the API, and
    // the API cannot pause, resume or delete it.
    assert_eq!(app.get("/v2/webhooks").await.body["webhooks"], json!([]));
    let push: String = fieldhook::storage::sql::query_scalar("SELECT uuid FROM webhooks WHERE kind = 'push'")
        .fetch_one(&app.db.read)
        .await
        .unwrap();
    for action in ["pause", "resume"] {
        assert_eq!(app.post(&format!("/v2/webhooks/{push}/{action}"), json!({})).await.status, 404, "{action}");
    }
    assert_eq!(app.get(&format!("/v2/webhooks/{push}")).await.status, 404);
    assert_eq!(app.delete(&format!("/v2/webhooks/{push}")).await.status, 404);
}
