//! Bad input: every answer is JSON with a code, names the problem, and
//! changes nothing.

use crate::helpers::{TestApp, reply};
use serde_json::{Value, json};

crate::on_both_backends!(
    malformed_json_is_400_wrong_type_415_huge_413,
    unknown_paths_and_methods_answer_in_json,
    every_validation_rule_names_its_field,
);

async fn malformed_json_is_400_wrong_type_415_huge_413(app: TestApp) {
    let url = format!("{}/v2/clients", app.base);
    let send = |body: Vec<u8>, content_type: &'static str| {
        let req = app.http.post(&url).bearer_auth(&app.key).header("content-type", content_type).body(body);
        async move { reply(req.send().await.unwrap()).await }
    };
    let r = send(b"{\"first_name\": ".to_vec(), "application/json").await;
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("invalid_json")));
    let r = send(vec![0xff, 0xfe, 0x00], "application/json").await;
    assert_eq!(r.status, 400);
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let r = send(deep.into_bytes(), "application/json").await;
    assert_eq!(r.status, 400);
    let r = send(b"first_name=Ada".to_vec(), "application/x-www-form-urlencoded").await;
    assert_eq!((r.status, r.body["code"].as_str()), (415, Some("unsupported_media_type")));
    let huge = format!("{{\"first_name\": \"{}\"}}", "a".repeat(1024 * 1024 + 10));
    let r = send(huge.into_bytes(), "application/json").await;
    assert_eq!((r.status, r.body["code"].as_str()), (413, Some("payload_too_large")));
    let r = send(b"[1, 2]".to_vec(), "application/json").await;
    assert_eq!((r.status, r.body["code"].as_str()), (422, Some("validation_failed")));
    let r = send(b"{\"schedule_at\": \"2026-01-01T00:00:00Z\"}".to_vec(), "application/json; charset=utf-8").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["errors"]["schedule_at"], json!(["is not a known field"]));
    assert!(r.body["message"].as_str().unwrap().contains("schedule_at"));
    assert_eq!(app.outbox_total().await, 0, "nothing was written");
    assert_eq!(app.get("/v2/clients").await.body["clients"], json!([]));
}

async fn unknown_paths_and_methods_answer_in_json(app: TestApp) {
    let r = app.get("/v2/nothing-here").await;
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("not_found")));
    let r = app.send(reqwest::Method::PUT, "/v2/clients", Some(&app.key), Some(json!({}))).await;
    assert_eq!((r.status, r.body["code"].as_str()), (405, Some("method_not_allowed")));
    let r = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    let r = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 200);
}

/// (resource, body, field that must be named)
fn invalid_bodies() -> Vec<(&'static str, Value, &'static str)> {
    let long = |n: usize| "x".repeat(n);
    vec![
        ("clients", json!({}), "first_name"),
        ("clients", json!({"first_name": long(51)}), "first_name"),
        ("clients", json!({"last_name": long(51)}), "last_name"),
        ("clients", json!({"organization": true}), "organization_name"),
        ("clients", json!({"organization": true, "organization_name": long(5001)}), "organization_name"),
        ("clients", json!({"first_name": "A", "external_id": long(501)}), "external_id"),
        ("clients", json!({"first_name": "A", "site_address": {"formatted": long(1001)}}), "site_address.formatted"),
        (
            "clients",
            json!({"first_name": "A", "site_address": {"geolocation": {"latitude": 91, "longitude": 0}}}),
            "site_address.geolocation.latitude",
        ),
        (
            "clients",
            json!({"first_name": "A", "site_address": {"geolocation": {"latitude": 0, "longitude": -181}}}),
            "site_address.geolocation.longitude",
        ),
        (
            "clients",
            json!({"first_name": "A", "contacts": [{"type": "email", "value": "not-an-email"}]}),
            "contacts[0].value",
        ),
        ("clients", json!({"first_name": "A", "contacts": [{"type": "phone"}]}), "contacts[0].value"),
        (
            "clients",
            json!({"first_name": "A", "contacts": [{"type": "phone", "value": long(201)}]}),
            "contacts[0].value",
        ),
        ("clients", json!({"first_name": "A", "contacts": [{"type": "fax", "value": "1"}]}), "contacts[0].type"),
        (
            "clients",
            json!({"first_name": "A", "contacts": vec![json!({"type": "phone", "value": "1"}); 21]}),
            "contacts",
        ),
        ("clients", json!({"first_name": "A", "name": "read-only"}), "name"),
        ("sites", json!({}), "name"),
        ("sites", json!({"name": long(301)}), "name"),
        ("sites", json!({"name": "S", "description": long(1001)}), "description"),
        ("sites", json!({"name": "S", "client": {}}), "client"),
        ("jobs", json!({"scheduled_duration": {"minutes": 0}}), "scheduled_duration.minutes"),
        ("jobs", json!({"scheduled_duration": {"minutes": 100001}}), "scheduled_duration.minutes"),
        ("jobs", json!({"scheduled_duration": {"minutes": "ten"}}), "scheduled_duration.minutes"),
        ("jobs", json!({"scheduled_at": "tomorrow"}), "scheduled_at"),
        ("jobs", json!({"description": long(15001)}), "description"),
        ("jobs", json!({"external_order_id": long(501)}), "external_order_id"),
        ("jobs", json!({"assignee": {"worker": {}}}), "assignee.worker.uuid"),
        ("jobs", json!({"status": "finished"}), "status"),
        ("users", json!({}), "email"),
        ("users", json!({"email": "nope"}), "email"),
        ("teams", json!({}), "name"),
        ("job_types", json!({}), "code"),
        ("job_types", json!({"code": long(101)}), "code"),
    ]
}

async fn every_validation_rule_names_its_field(app: TestApp) {
    for (plural, body, field) in invalid_bodies() {
        let r = app.post(&format!("/v2/{plural}"), body.clone()).await;
        assert_eq!(r.status, 422, "{plural} {body}: {:?}", r.body);
        assert_eq!(r.body["code"], "validation_failed", "{plural} {body}");
        assert!(r.body["errors"][field].is_array(), "{plural} {body} should name {field}, got {}", r.body);
        assert!(r.body["message"].as_str().unwrap().contains(field), "{plural}: message names the field: {}", r.body);
    }
    assert_eq!(app.outbox_total().await, 0);
    // The limits themselves are allowed.
    let ok = app
        .post(
            "/v2/clients",
            json!({"first_name": "x".repeat(50), "external_id": "e".repeat(500),
        "contacts": vec![json!({"type": "email", "value": "a@b.io"}); 20]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
}
