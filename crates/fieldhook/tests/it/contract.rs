//! The API contract: the OpenAPI document covers every route of the spec
//! and every route it lists is served; real answers validate against their
//! schemas, and requests are accepted exactly when the document's schemas
//! allow them; `/docs` is served; `/metrics` moves while delivering.

use crate::helpers::TestApp;
use crate::receiver::{Answer, Receiver};
use serde_json::{Value, json};
use std::time::Duration;

crate::on_both_backends!(openapi_answers_validate_against_their_schemas);

/// Every operation of api.md and webhooks.md, as (method, path template).
const SPEC_OPERATIONS: &[(&str, &str)] = &[
    ("post", "/v2/api_keys"),
    ("get", "/v2/api_keys"),
    ("delete", "/v2/api_keys/{uuid}"),
    ("post", "/v2/clients"),
    ("get", "/v2/clients"),
    ("get", "/v2/clients/{id}"),
    ("patch", "/v2/clients/{id}"),
    ("delete", "/v2/clients/{id}"),
    ("get", "/v2/clients/{id}/history"),
    ("post", "/v2/sites"),
    ("get", "/v2/sites"),
    ("get", "/v2/sites/{id}"),
    ("patch", "/v2/sites/{id}"),
    ("delete", "/v2/sites/{id}"),
    ("get", "/v2/sites/{id}/history"),
    ("post", "/v2/jobs"),
    ("get", "/v2/jobs"),
    ("get", "/v2/jobs/{id}"),
    ("patch", "/v2/jobs/{id}"),
    ("delete", "/v2/jobs/{id}"),
    ("get", "/v2/jobs/{id}/history"),
    ("post", "/v2/jobs/{id}/{action}"),
    ("put", "/v2/jobs/{id}/report"),
    ("post", "/v2/users"),
    ("get", "/v2/users"),
    ("get", "/v2/users/{uuid}"),
    ("patch", "/v2/users/{uuid}"),
    ("delete", "/v2/users/{uuid}"),
    ("get", "/v2/users/{uuid}/notifications"),
    ("post", "/v2/teams"),
    ("get", "/v2/teams"),
    ("get", "/v2/teams/{uuid}"),
    ("patch", "/v2/teams/{uuid}"),
    ("delete", "/v2/teams/{uuid}"),
    ("post", "/v2/job_types"),
    ("get", "/v2/job_types"),
    ("get", "/v2/event_types"),
    ("post", "/v2/webhooks"),
    ("get", "/v2/webhooks"),
    ("get", "/v2/webhooks/{uuid}"),
    ("patch", "/v2/webhooks/{uuid}"),
    ("delete", "/v2/webhooks/{uuid}"),
    ("post", "/v2/webhooks/{uuid}/pause"),
    ("post", "/v2/webhooks/{uuid}/resume"),
    ("post", "/v2/webhooks/{uuid}/test"),
    ("get", "/v2/webhooks/{uuid}/requests"),
    ("get", "/v2/webhooks/{uuid}/requests/{request_uuid}"),
    ("post", "/v2/webhooks/{uuid}/requests/{request_uuid}/resend"),
];

async fn document(app: &TestApp) -> Value {
    let r = app.send(reqwest::Method::GET, "/v2/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_the_router_agree_with_the_spec() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await.unwrap();
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_string(), path.clone()));
            }
        }
    }
    let mut spec: Vec<(String, String)> = SPEC_OPERATIONS.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    spec.sort();
    documented.sort();
    assert_eq!(documented, spec, "the document lists exactly the operations of the spec");
    // Every documented operation is served: without a key it is a 401, not
    // the router's 404 or 405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{uuid}", &uuid::Uuid::now_v7().to_string())
            .replace("{request_uuid}", &uuid::Uuid::now_v7().to_string())
            .replace("{action}", "start");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = app.send(m, &concrete, None, None).await;
        assert_eq!(r.status, 401, "{method} {path} → {}", r.status);
    }
    // Every operation needs a key, and says so.
    for (method, path) in &documented {
        assert!(paths[path][method]["security"].is_array(), "{method} {path} has a security requirement");
    }
    // The outbound side: one webhook per event type, each with an example.
    let hooks = doc["webhooks"].as_object().expect("OpenAPI 3.1 webhooks");
    assert_eq!(hooks.len(), 19, "18 event types and the test event");
    for (name, item) in hooks {
        let example = &item["post"]["requestBody"]["content"]["application/json"]["example"];
        assert_eq!(example["event_type"], name.as_str());
    }
    // Human-readable documentation, bundled (no CDN).
    let page = app.http.get(format!("{}/docs/", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"));
    assert!(!html.contains("unpkg.com") && !html.contains("cdn.jsdelivr"));
}

/// Validates `body` against `#/components/schemas/<name>` of `doc`.
fn assert_valid(doc: &Value, name: &str, body: &Value) {
    let validator =
        validator(&json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"]}));
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{name} does not describe {body}: {errors:?}");
}

/// Whether `body` satisfies the JSON request body of `method path` in `doc`.
fn body_fits(doc: &Value, method: &str, path: &str, body: &Value) -> bool {
    let schema = &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} documents a JSON body");
    validator(&json!({"allOf": [schema], "components": doc["components"]})).is_valid(body)
}

/// Whether `value` satisfies the query parameter `name` of `GET path` in `doc`.
fn param_fits(doc: &Value, path: &str, name: &str, value: &Value) -> bool {
    let params = doc["paths"][path]["get"]["parameters"].as_array().expect("parameters");
    let schema = &params.iter().find(|p| p["name"] == name).expect("the parameter is documented")["schema"];
    validator(schema).is_valid(value)
}

/// A validator of `schema` (JSON Schema 2020-12, as in OpenAPI 3.1).
fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .unwrap_or_else(|e| panic!("{schema} is not a valid schema: {e}"))
}

/// What the document says a request must be is what the API accepts: each
/// body below is judged by the schema and by the server, and the two agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_what_the_api_requires_of_a_request() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await.unwrap();
    let doc = document(&app).await;
    let rx = Receiver::start().await;
    let cases: Vec<(&str, Value, bool)> = vec![
        // What each create requires (its input type also serves the PATCH).
        ("/v2/sites", json!({}), false),
        ("/v2/sites", json!({"name": null}), false),
        ("/v2/sites", json!({"name": "  "}), false),
        ("/v2/sites", json!({"name": "Depot"}), true),
        ("/v2/sites", json!({"name": "x".repeat(301)}), false),
        ("/v2/teams", json!({}), false),
        ("/v2/teams", json!({"name": "Night shift"}), true),
        ("/v2/job_types", json!({"name": "Repair"}), false),
        ("/v2/job_types", json!({"code": "repair"}), true),
        ("/v2/users", json!({"first_name": "Ann"}), false),
        ("/v2/users", json!({"email": "ann@"}), false),
        ("/v2/users", json!({"email": "ann@acme.io"}), true),
        ("/v2/webhooks", json!({"url": rx.url}), false),
        ("/v2/webhooks", json!({"url": rx.url, "event_types": []}), false),
        ("/v2/webhooks", json!({"url": rx.url, "event_types": ["job_made"]}), false),
        ("/v2/webhooks", json!({"url": "ftp://acme.io/", "event_types": ["job_created"]}), false),
        ("/v2/webhooks", json!({"url": rx.url, "event_types": ["job_created"], "secret": "tab\there"}), false),
        ("/v2/webhooks", json!({"url": rx.url, "event_types": ["job_created"]}), true),
        // A client is an organization with its name or a person with a name.
        ("/v2/clients", json!({}), false),
        ("/v2/clients", json!({"organization": false, "organization_name": "Acme"}), false),
        ("/v2/clients", json!({"organization": true, "first_name": "Ann"}), false),
        ("/v2/clients", json!({"organization": true, "organization_name": "Acme"}), true),
        ("/v2/clients", json!({"last_name": "Li"}), true),
        // Scopes are named from the list the validation reads.
        ("/v2/api_keys", json!({"name": "crm", "scopes": []}), false),
        ("/v2/api_keys", json!({"name": "crm", "scopes": ["jobs:rw"]}), false),
        ("/v2/api_keys", json!({"name": " ", "scopes": ["jobs:read"]}), false),
        ("/v2/api_keys", json!({"name": "crm", "scopes": ["jobs:read", "webhooks:write"]}), true),
    ];
    for (path, body, fits) in cases {
        assert_eq!(body_fits(&doc, "post", path, &body), fits, "the schema of POST {path} on {body}");
        let r = app.post(path, body.clone()).await;
        assert_eq!(r.status, if fits { 201 } else { 422 }, "POST {path} {body}: {}", r.body);
    }
    // A site keeps a name: PATCH cannot clear it.
    let site = app.create("sites", json!({"name": "Depot"})).await;
    assert!(!body_fits(&doc, "patch", "/v2/sites/{id}", &json!({"name": null})));
    assert_eq!(app.patch(&format!("/v2/sites/{site}"), json!({"name": null})).await.status, 422);
    assert!(body_fits(&doc, "patch", "/v2/sites/{id}", &json!({"description": "by the gate"})));
    assert_eq!(app.patch(&format!("/v2/sites/{site}"), json!({"description": "by the gate"})).await.status, 200);
    // A job action's body may be null, as its schema allows.
    let job = app.create("jobs", json!({"description": "fit a boiler"})).await;
    assert!(body_fits(&doc, "post", "/v2/jobs/{id}/{action}", &Value::Null));
    let r = app
        .send(reqwest::Method::POST, &format!("/v2/jobs/{job}/cancel"), Some(app.key.as_str()), Some(Value::Null))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Query parameters: what the document allows is what is accepted.
    for (n, status) in [(0, 422), (1, 200), (100, 200), (101, 422)] {
        assert_eq!(param_fits(&doc, "/v2/jobs", "limit", &json!(n)), status == 200, "the schema of limit={n}");
        assert_eq!(app.get(&format!("/v2/jobs?limit={n}")).await.status, status, "limit={n}");
    }
    let hook = app.webhook(&rx.url, &["job_created"]).await;
    for (filter, status) in [("failed", 200), ("scheduled", 200), ("sent", 422)] {
        let path = "/v2/webhooks/{uuid}/requests";
        assert_eq!(param_fits(&doc, path, "filter", &json!(filter)), status == 200, "the schema of filter={filter}");
        let r = app.get(&format!("/v2/webhooks/{hook}/requests?filter={filter}")).await;
        assert_eq!(r.status, status, "filter={filter}");
    }
    // A person without a name is refused with a message that reads once.
    let r = app.post("/v2/clients", json!({})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["message"], "first_name (or middle_name, or last_name) is required for a person");
}

async fn openapi_answers_validate_against_their_schemas(app: TestApp) {
    let doc = document(&app).await;
    let rx = Receiver::start().await;
    let user = app.create("users", json!({"email": "w@acme.io"})).await;
    let client = app
        .create(
            "clients",
            json!({"organization": true, "organization_name": "Acme", "external_id": "c1",
        "site_address": {"formatted": "1 Road", "geolocation": {"latitude": 1.0, "longitude": 2.0}},
        "contacts": [{"type": "phone", "value": "+100"}]}),
        )
        .await;
    let site = app.create("sites", json!({"name": "S", "client": {"uuid": client}})).await;
    app.create("job_types", json!({"code": "fix"})).await;
    let team = app.create("teams", json!({"name": "T", "worker_uuids": [user]})).await;
    let hook = app.webhook(&rx.url, &["job_created"]).await;
    let job = app
        .create(
            "jobs",
            json!({"site": {"uuid": site}, "job_type": {"code": "fix"}, "scheduled_at": "2026-12-01T09:00:00Z",
            "scheduled_duration": {"minutes": 30}, "assignee": {"worker": {"uuid": user}}}),
        )
        .await;
    rx.wait_for(1).await;
    let log = app.wait_for_log(&hook, "a sent request", |l| l.iter().any(|r| r["status"] == "sent")).await;
    let started = app.post(&format!("/v2/jobs/{job}/publish"), json!({})).await;

    assert_valid(&doc, "ClientEnvelope", &app.get(&format!("/v2/clients/{client}")).await.body);
    assert_valid(&doc, "ClientList", &app.get("/v2/clients").await.body);
    assert_valid(&doc, "SiteEnvelope", &app.get(&format!("/v2/sites/{site}")).await.body);
    assert_valid(&doc, "JobEnvelope", &app.get(&format!("/v2/jobs/{job}")).await.body);
    assert_valid(&doc, "JobEnvelope", &started.body);
    assert_valid(&doc, "JobList", &app.get("/v2/jobs").await.body);
    assert_valid(&doc, "HistoryPage", &app.get(&format!("/v2/jobs/{job}/history")).await.body);
    assert_valid(&doc, "UserEnvelope", &app.get(&format!("/v2/users/{user}")).await.body);
    assert_valid(&doc, "TeamEnvelope", &app.get(&format!("/v2/teams/{team}")).await.body);
    assert_valid(&doc, "JobTypeList", &app.get("/v2/job_types").await.body);
    assert_valid(&doc, "NotificationList", &app.get(&format!("/v2/users/{user}/notifications")).await.body);
    assert_valid(&doc, "WebhookEnvelope", &app.get(&format!("/v2/webhooks/{hook}")).await.body);
    assert_valid(&doc, "RequestList", &json!({"requests": log}));
    assert_valid(&doc, "EventTypeList", &app.get("/v2/event_types").await.body);
    assert_valid(&doc, "ApiKeyList", &app.get("/v2/api_keys").await.body);
    assert_valid(&doc, "WebhookPayload", &rx.received()[0].body);
    for bad in [app.get("/v2/clients/nope").await.body, app.post("/v2/clients", json!({"x": 1})).await.body] {
        assert_valid(&doc, "ErrorBody", &bad);
    }
}

fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_while_delivering_failing_and_retrying() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await.unwrap();
    let scrape = || async {
        let r = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let before = scrape().await;
    let rx = Receiver::start().await;
    rx.script(vec![Answer::Status(500)], Answer::Status(200));
    app.webhook(&rx.url, &["client_created"]).await;
    app.create("clients", json!({"first_name": "A"})).await;
    rx.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.advance(Duration::from_secs(20));
    rx.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.engine.as_ref().unwrap().refresh_gauges().await.unwrap();
    let after = scrape().await;
    let moved = |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
    assert!(moved("fieldhook_deliveries_total", "outcome=\"http_5xx\"") >= 1.0, "{after}");
    assert!(moved("fieldhook_deliveries_total", "outcome=\"success\"") >= 1.0);
    assert!(moved("fieldhook_retries_scheduled_total", "") >= 1.0);
    assert!(moved("fieldhook_events_total", "event_type=\"client_created\"") >= 1.0);
    assert!(moved("fieldhook_http_requests_total", "route=\"/v2/clients\"") >= 1.0);
    // The retry is claimed; the first attempt is claimed too, or handed
    // over by its commit (SQLite) when the engine had caught up by then.
    assert!(moved("fieldhook_claim_batch_size_count", "") >= 1.0);
    assert!(
        moved("fieldhook_claim_batch_size_count", "") + moved("fieldhook_requests_handed_over_total", "") >= 2.0,
        "{after}"
    );
    assert!(moved("fieldhook_delivery_attempt_duration_seconds_count", "") >= 2.0);
    assert!(after.contains("fieldhook_pending_requests{state=\"due\"}"));
    assert!(after.contains("fieldhook_webhooks{status=\"active\"}"));
}
