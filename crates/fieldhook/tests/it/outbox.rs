//! The outbox: exactly one CRUD event per change, written with the change;
//! idempotent creation.

use crate::helpers::TestApp;
use serde_json::json;

crate::on_both_backends!(
    each_change_writes_exactly_one_crud_event_with_the_full_snapshot,
    a_repeated_idempotency_key_replays_and_creates_nothing,
    concurrent_repeats_of_one_idempotency_key_create_once,
    an_event_gets_one_first_request_per_subscribed_webhook_with_uuids_in_creation_order,
);

async fn each_change_writes_exactly_one_crud_event_with_the_full_snapshot(app: TestApp) {
    let site = app.create("sites", json!({"name": "Depot"})).await;
    app.patch(&format!("/v2/sites/{site}"), json!({"description": "back door"})).await;
    app.delete(&format!("/v2/sites/{site}")).await;
    assert_eq!(
        app.outbox(&site).await,
        vec![("site_created".into(), 1), ("site_updated".into(), 2), ("site_removed".into(), 3)]
    );
    let bodies: Vec<String> =
        fieldhook::storage::sql::query_scalar("SELECT body FROM events WHERE entity_uuid = $1 ORDER BY entity_version")
            .bind(&site)
            .fetch_all(&app.db.read)
            .await
            .unwrap();
    let second: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(second["event_type"], "site_updated");
    assert_eq!(second["site"]["description"], "back door");
    assert_eq!(second["site"]["version"], 2);
    assert_eq!(second["context"]["source"], "api");
    assert!(second["event_uuid"].is_string());
    // The snapshot is what GET returned at that version.
    let job = app.create("jobs", json!({"description": "d"})).await;
    let got = app.get(&format!("/v2/jobs/{job}")).await.body["job"].clone();
    let body: String = fieldhook::storage::sql::query_scalar("SELECT body FROM events WHERE entity_uuid = $1")
        .bind(&job)
        .fetch_one(&app.db.read)
        .await
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["job"], got);
}

async fn a_repeated_idempotency_key_replays_and_creates_nothing(app: TestApp) {
    let send = |body: serde_json::Value, key: &'static str| {
        let req = app
            .http
            .post(format!("{}/v2/jobs", app.base))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { crate::helpers::reply(req.send().await.unwrap()).await }
    };
    let first = send(json!({"description": "once"}), "k-1").await;
    assert_eq!(first.status, 201);
    let again = send(json!({"description": "once"}), "k-1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(app.get("/v2/jobs").await.body["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(app.outbox_total().await, 1);
    let other = send(json!({"description": "different"}), "k-1").await;
    assert_eq!(other.status, 409);
    assert_eq!(other.body["code"], "conflict");
    // A failed request does not consume the key.
    let bad = send(json!({"scheduled_duration": {"minutes": 0}}), "k-2").await;
    assert_eq!(bad.status, 422);
    let good = send(json!({"description": "second"}), "k-2").await;
    assert_eq!(good.status, 201);
    // After 24 h the key is forgotten.
    app.clock.advance(std::time::Duration::from_secs(25 * 3600));
    let later = send(json!({"description": "once"}), "k-1").await;
    assert_eq!(later.status, 201);
    assert_ne!(later.body, first.body);
}

async fn concurrent_repeats_of_one_idempotency_key_create_once(app: TestApp) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = app
            .http
            .post(format!("{}/v2/clients", app.base))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "same")
            .json(&json!({"first_name": "Once"}));
        tasks.push(tokio::spawn(async move { crate::helpers::reply(req.send().await.unwrap()).await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201, "{:?}", r.body);
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(app.get("/v2/clients").await.body["clients"].as_array().unwrap().len(), 1);
    assert_eq!(app.outbox_total().await, 1);
}

/// The fan-out (on PostgreSQL one statement with the event, its own uuids):
/// one request per live webhook of the account subscribed to the event's
/// type, none for the others; unique v7 uuids, after every uuid made
/// before the change and before every one made after it (pruning walks the
/// requests by uuid as by creation time).
async fn an_event_gets_one_first_request_per_subscribed_webhook_with_uuids_in_creation_order(app: TestApp) {
    // Nothing listens there: the first attempts fail and wait for a retry.
    let url = "http://127.0.0.1:9/hook";
    let mut subscribed = Vec::new();
    for _ in 0..3 {
        subscribed.push(app.webhook(url, &["job_created"]).await);
    }
    subscribed.push(app.webhook(url, &["site_created", "job_created", "job_updated"]).await);
    app.webhook(url, &["job_updated"]).await;
    let removed = app.webhook(url, &["job_created"]).await;
    assert_eq!(app.delete(&format!("/v2/webhooks/{removed}")).await.status, 204);
    let other_key = app.new_account("other").await;
    let other = app
        .send(
            reqwest::Method::POST,
            "/v2/webhooks",
            Some(&other_key),
            Some(json!({"url": url, "event_types": ["job_created"]})),
        )
        .await;
    assert_eq!(other.status, 201, "{:?}", other.body);

    let before = uuid::Uuid::now_v7();
    let job = app.create("jobs", json!({"description": "fanned out"})).await;
    let after = uuid::Uuid::now_v7();
    let event: String = fieldhook::storage::sql::query_scalar("SELECT uuid FROM events WHERE entity_uuid = $1")
        .bind(&job)
        .fetch_one(&app.db.read)
        .await
        .unwrap();
    let rows = fieldhook::storage::sql::query(
        "SELECT uuid, webhook_uuid, event_type, entity_uuid, entity_version, retry_no \
         FROM requests WHERE event_uuid = $1 AND attempt_no = 1 ORDER BY uuid",
    )
    .bind(&event)
    .fetch_all(&app.db.read)
    .await
    .unwrap();
    let mut webhooks: Vec<String> = rows.iter().map(|r| r.try_get("webhook_uuid").unwrap()).collect();
    webhooks.sort();
    subscribed.sort();
    assert_eq!(webhooks, subscribed, "one first request per subscribed live webhook of the account");
    let mut uuids = Vec::new();
    for row in &rows {
        let id: String = row.try_get("uuid").unwrap();
        let id = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(id.get_version_num(), 7, "{id}");
        assert!(before < id && id < after, "{before} < {id} < {after}");
        uuids.push(id);
        assert_eq!(row.try_get::<String, _>("event_type").unwrap(), "job_created");
        assert_eq!(row.try_get::<String, _>("entity_uuid").unwrap(), job);
        assert_eq!(row.try_get::<i64, _>("entity_version").unwrap(), 1);
        assert_eq!(row.try_get::<i64, _>("retry_no").unwrap(), 0);
    }
    uuids.dedup();
    assert_eq!(uuids.len(), subscribed.len(), "request uuids are distinct");
}
