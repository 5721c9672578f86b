//! Authentication, scopes, accounts and API keys, the rate limit.

use crate::helpers::{Backend, TestApp, fresh_database, spawn_with};
use reqwest::Method;
use serde_json::json;

crate::on_both_backends!(
    missing_malformed_unknown_and_revoked_keys_are_401,
    a_key_without_the_scope_is_403_and_write_implies_read,
    another_accounts_resource_is_404,
    a_key_cannot_grant_more_than_its_creator,
    keys_are_listed_without_secrets_and_revoked,
);

async fn missing_malformed_unknown_and_revoked_keys_are_401(app: TestApp) {
    let bogus = format!("fh_{}", "A".repeat(64));
    for key in [None, Some("nonsense"), Some(bogus.as_str())] {
        let r = app.send(Method::GET, "/v2/clients", key, None).await;
        assert_eq!(r.status, 401, "{key:?}");
        assert_eq!(r.body["code"], "unauthorized");
    }
    let raw =
        app.http.get(format!("{}/v2/clients", app.base)).header("Authorization", "Basic abc").send().await.unwrap();
    assert_eq!(raw.status(), 401);
    // A tampered secret of a real key.
    let mut tampered = app.key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(app.send(Method::GET, "/v2/clients", Some(&tampered), None).await.status, 401);

    let key = app.key_with(&["clients:read"]).await;
    assert_eq!(app.send(Method::GET, "/v2/clients", Some(&key), None).await.status, 200);
    let list = app.get("/v2/api_keys").await.body;
    let uuid = list["api_keys"].as_array().unwrap().iter().find(|k| k["name"] == "scoped").unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.delete(&format!("/v2/api_keys/{uuid}")).await.status, 204);
    assert_eq!(app.send(Method::GET, "/v2/clients", Some(&key), None).await.status, 401);
}

async fn a_key_without_the_scope_is_403_and_write_implies_read(app: TestApp) {
    let reader = app.key_with(&["clients:read"]).await;
    let r = app.send(Method::POST, "/v2/clients", Some(&reader), Some(json!({"first_name": "A"}))).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "forbidden");
    assert_eq!(app.outbox_total().await, 0);
    let writer = app.key_with(&["jobs:write"]).await;
    assert_eq!(app.send(Method::GET, "/v2/jobs", Some(&writer), None).await.status, 200);
    assert_eq!(app.send(Method::POST, "/v2/job_types", Some(&writer), Some(json!({"code": "x"}))).await.status, 201);
    assert_eq!(app.send(Method::GET, "/v2/sites", Some(&writer), None).await.status, 403);
    assert_eq!(app.send(Method::GET, "/v2/users", Some(&writer), None).await.status, 403);
    assert_eq!(app.send(Method::GET, "/v2/api_keys", Some(&writer), None).await.status, 403);
}

async fn another_accounts_resource_is_404(app: TestApp) {
    let other = app.new_account("other").await;
    let client = app.create("clients", json!({"first_name": "Mine", "external_id": "shared-id"})).await;
    let user = app.create("users", json!({"email": "me@acme.io"})).await;
    for path in [format!("/v2/clients/{client}"), "/v2/clients/shared-id".into(), format!("/v2/users/{user}")] {
        let r = app.send(Method::GET, &path, Some(&other), None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.body["code"], "not_found");
        let r = app.send(Method::DELETE, &path, Some(&other), None).await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r =
        app.send(Method::PATCH, &format!("/v2/clients/{client}"), Some(&other), Some(json!({"first_name": "X"}))).await;
    // For the other account the id is unknown: PATCH upserts a client of its own.
    assert_eq!(r.status, 201);
    assert_eq!(app.get(&format!("/v2/clients/{client}")).await.body["client"]["first_name"], "Mine");
    let list = app.send(Method::GET, "/v2/clients", Some(&other), None).await.body;
    assert_eq!(list["clients"].as_array().unwrap().len(), 1);
    assert_ne!(list["clients"][0]["uuid"], client);
    // References across accounts do not resolve.
    let r = app.send(Method::POST, "/v2/jobs", Some(&other), Some(json!({"client": {"uuid": client}}))).await;
    assert_eq!(r.status, 422);
    // The external_id is per account: the other account may use it too.
    let r = app
        .send(Method::POST, "/v2/clients", Some(&other), Some(json!({"first_name": "B", "external_id": "shared-id"})))
        .await;
    assert_eq!(r.status, 201);
}

async fn a_key_cannot_grant_more_than_its_creator(app: TestApp) {
    let manager = app.key_with(&["api_keys:write", "jobs:read"]).await;
    let r = app
        .send(Method::POST, "/v2/api_keys", Some(&manager), Some(json!({"name": "x", "scopes": ["jobs:write"]})))
        .await;
    assert_eq!(r.status, 403);
    let r = app.send(Method::POST, "/v2/api_keys", Some(&manager), Some(json!({"name": "x", "scopes": ["*"]}))).await;
    assert_eq!(r.status, 403);
    let r = app
        .send(Method::POST, "/v2/api_keys", Some(&manager), Some(json!({"name": "x", "scopes": ["jobs:read"]})))
        .await;
    assert_eq!(r.status, 201);
    assert!(r.body["api_key_uuid"].is_string());
    let r = app.post("/v2/api_keys", json!({"name": "x", "scopes": ["jobs:delete"]})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["scopes"].is_array());
}

async fn keys_are_listed_without_secrets_and_revoked(app: TestApp) {
    let r = app.post("/v2/api_keys", json!({"name": "billing", "scopes": ["jobs:read"]})).await;
    let secret = r.body["api_key"].as_str().unwrap().to_string();
    let list = app.get("/v2/api_keys").await;
    assert_eq!(list.status, 200);
    let text = list.body.to_string();
    assert!(!text.contains(&secret));
    assert!(
        list.body["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "billing" && k["scopes"] == json!(["jobs:read"]))
    );
    assert_eq!(app.delete(&format!("/v2/api_keys/{}", uuid::Uuid::now_v7())).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let (url, dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let app =
        spawn_with(Backend::Sqlite, url, dir, |s| fieldhook::config::Settings { rate_limit: Some("2".into()), ..s })
            .await;
    let mut limited = None;
    for _ in 0..10 {
        let r = app.get("/v2/clients").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("a burst of 10 exceeds 2/s with a burst of 4");
    assert_eq!(r.body["code"], "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Another key has its own bucket.
    let other = app.new_account("other").await;
    assert_eq!(app.send(Method::GET, "/v2/clients", Some(&other), None).await.status, 200);
}
