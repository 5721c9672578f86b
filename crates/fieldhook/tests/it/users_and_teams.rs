//! Users, teams and job types.

use crate::helpers::TestApp;
use serde_json::json;

crate::on_both_backends!(
    users_are_created_listed_changed_and_deleted,
    a_user_with_an_unfinished_job_cannot_be_deleted,
    teams_and_job_types_have_unique_names_and_codes,
);

async fn users_are_created_listed_changed_and_deleted(app: TestApp) {
    let u = app.create("users", json!({"email": "Tech@Acme.io", "first_name": "Tia", "role": "dispatcher"})).await;
    let got = app.get(&format!("/v2/users/{u}")).await.body["user"].clone();
    assert_eq!(got["email"], "tech@acme.io");
    assert_eq!(got["role"], "dispatcher");
    assert!(got["created_at"].is_string());
    let r = app.patch(&format!("/v2/users/{u}"), json!({"last_name": "Tan"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get(&format!("/v2/users/{u}")).await.body["user"]["last_name"], "Tan");
    assert_eq!(app.get("/v2/users").await.body["users"].as_array().unwrap().len(), 1);
    let r = app.post("/v2/users", json!({"email": "tech@acme.io"})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["email"].is_array());
    let r = app.post("/v2/users", json!({"email": "x@y.io", "role": "boss"})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["role"].is_array(), "{:?}", r.body);
    assert_eq!(app.delete(&format!("/v2/users/{u}")).await.status, 204);
    assert_eq!(app.get(&format!("/v2/users/{u}")).await.status, 404);
    assert_eq!(app.get("/v2/users/not-a-uuid").await.status, 404);
}

async fn a_user_with_an_unfinished_job_cannot_be_deleted(app: TestApp) {
    let u = app.create("users", json!({"email": "w@acme.io"})).await;
    let team = app.create("teams", json!({"name": "A", "worker_uuids": [u]})).await;
    let job = app.create("jobs", json!({"assignee": {"worker": {"uuid": u}}})).await;
    let r = app.delete(&format!("/v2/users/{u}")).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["code"], "conflict");
    app.delete(&format!("/v2/jobs/{job}")).await;
    assert_eq!(app.delete(&format!("/v2/users/{u}")).await.status, 204);
    // It left its team.
    assert_eq!(app.get(&format!("/v2/teams/{team}")).await.body["team"]["worker_uuids"], json!([]));
}

async fn teams_and_job_types_have_unique_names_and_codes(app: TestApp) {
    app.create("teams", json!({"name": "North"})).await;
    let r = app.post("/v2/teams", json!({"name": "North"})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["name"].is_array());
    let r = app.post("/v2/teams", json!({"name": "South", "worker_uuids": [uuid::Uuid::now_v7()]})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["worker_uuids"].is_array());
    app.create("job_types", json!({"code": "install"})).await;
    let r = app.post("/v2/job_types", json!({"code": "install"})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["code"].is_array());
    let list = app.get("/v2/job_types").await.body;
    assert_eq!(list["job_types"][0]["code"], "install");
    assert_eq!(app.get("/v2/teams").await.body["teams"].as_array().unwrap().len(), 1);
}
