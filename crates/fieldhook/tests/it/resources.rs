//! Clients and sites: create, get by uuid and external_id, list pages and
//! filters, PATCH with versions, upsert, DELETE and its 409s, history.

use crate::helpers::TestApp;
use serde_json::json;

crate::on_both_backends!(
    a_client_is_found_by_uuid_and_by_external_id,
    patch_bumps_the_version_once_per_real_change,
    a_stale_version_is_a_conflict_and_changes_nothing,
    patch_on_an_unknown_external_id_creates_the_client,
    a_removed_client_leaves_lists_frees_its_external_id_and_keeps_its_history,
    a_client_in_use_cannot_be_removed,
    lists_are_paginated_newest_first_and_stable,
    lists_filter_by_updated_at_and_sites_by_client,
    a_taken_external_id_is_refused_by_name,
    a_site_references_a_client_by_either_id,
    history_pages_keep_a_version_together,
    a_failed_create_in_a_busy_group_commit_rolls_back_only_itself,
);

async fn a_client_is_found_by_uuid_and_by_external_id(app: TestApp) {
    let uuid =
        app.create("clients", json!({"first_name": "Ada", "last_name": "Lovelace", "external_id": "crm-1"})).await;
    for id in [uuid.as_str(), "crm-1"] {
        let r = app.get(&format!("/v2/clients/{id}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["client"]["uuid"], uuid);
        assert_eq!(r.body["client"]["name"], "Ada Lovelace");
        assert_eq!(r.body["client"]["version"], 1);
        assert_eq!(r.body["client"]["external_id"], "crm-1");
    }
    assert_eq!(app.get("/v2/clients/crm-2").await.status, 404);
    assert_eq!(app.get(&format!("/v2/clients/{}", uuid::Uuid::now_v7())).await.status, 404);
}

async fn patch_bumps_the_version_once_per_real_change(app: TestApp) {
    let uuid = app.create("clients", json!({"first_name": "Ada"})).await;
    let r = app.patch(&format!("/v2/clients/{uuid}"), json!({"last_name": "Byron"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["client_uuid"], uuid);
    let c = app.get(&format!("/v2/clients/{uuid}")).await.body;
    assert_eq!(c["client"]["version"], 2);
    assert_eq!(c["client"]["name"], "Ada Byron");

    // The same values again: no new version, no event.
    let r = app.patch(&format!("/v2/clients/{uuid}"), json!({"last_name": "Byron", "first_name": "Ada"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get(&format!("/v2/clients/{uuid}")).await.body["client"]["version"], 2);
    assert_eq!(app.outbox(&uuid).await, vec![("client_created".to_string(), 1), ("client_updated".to_string(), 2)]);
}

async fn a_stale_version_is_a_conflict_and_changes_nothing(app: TestApp) {
    let uuid = app.create("clients", json!({"first_name": "Ada"})).await;
    app.patch(&format!("/v2/clients/{uuid}"), json!({"last_name": "B"})).await;
    let r = app.patch(&format!("/v2/clients/{uuid}"), json!({"last_name": "C", "version": 1})).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["code"], "conflict");
    let c = app.get(&format!("/v2/clients/{uuid}")).await.body;
    assert_eq!(c["client"]["last_name"], "B");
    assert_eq!(app.outbox(&uuid).await.len(), 2);
    // The current version goes through.
    let r = app.patch(&format!("/v2/clients/{uuid}"), json!({"last_name": "C", "version": 2})).await;
    assert_eq!(r.status, 200);
}

async fn patch_on_an_unknown_external_id_creates_the_client(app: TestApp) {
    let r = app.patch("/v2/clients/erp-77", json!({"organization": true, "organization_name": "Acme"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let uuid = r.body["client_uuid"].as_str().unwrap().to_string();
    let c = app.get("/v2/clients/erp-77").await.body;
    assert_eq!(c["client"]["uuid"], uuid);
    assert_eq!(c["client"]["name"], "Acme");
    assert_eq!(app.outbox(&uuid).await, vec![("client_created".to_string(), 1)]);
    // Second time it is an update.
    let r = app.patch("/v2/clients/erp-77", json!({"organization_name": "Acme Ltd"})).await;
    assert_eq!(r.status, 200);
    // Sites upsert the same way.
    let r = app.patch("/v2/sites/site-9", json!({"name": "Depot"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

async fn a_removed_client_leaves_lists_frees_its_external_id_and_keeps_its_history(app: TestApp) {
    let uuid = app.create("clients", json!({"first_name": "Ada", "external_id": "x1"})).await;
    let r = app.delete("/v2/clients/x1").await;
    assert_eq!(r.status, 204);
    assert_eq!(app.get(&format!("/v2/clients/{uuid}")).await.status, 404);
    assert_eq!(app.get("/v2/clients").await.body["clients"], json!([]));
    assert_eq!(app.delete(&format!("/v2/clients/{uuid}")).await.status, 404);
    let h = app.get(&format!("/v2/clients/{uuid}/history")).await;
    assert_eq!(h.status, 200);
    let types: Vec<_> = h.body["history"].as_array().unwrap().iter().map(|e| e["event_type"].clone()).collect();
    assert_eq!(types, vec![json!("client_created"), json!("client_removed")]);
    assert_eq!(h.body["history"][1]["version"], 2);
    assert_eq!(h.body["history"][1]["client"]["version"], 2);
    // The external_id is free again.
    let again = app.create("clients", json!({"first_name": "Ada", "external_id": "x1"})).await;
    assert_ne!(again, uuid);
}

async fn a_client_in_use_cannot_be_removed(app: TestApp) {
    let client = app.create("clients", json!({"first_name": "Ada"})).await;
    let site = app.create("sites", json!({"name": "Home", "client": {"uuid": client}})).await;
    let r = app.delete(&format!("/v2/clients/{client}")).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["code"], "conflict");
    let job = app.create("jobs", json!({"site": {"uuid": site}})).await;
    assert_eq!(app.delete(&format!("/v2/sites/{site}")).await.status, 409);
    assert_eq!(app.delete(&format!("/v2/jobs/{job}")).await.status, 204);
    assert_eq!(app.delete(&format!("/v2/sites/{site}")).await.status, 204);
    assert_eq!(app.delete(&format!("/v2/clients/{client}")).await.status, 204);
    let job2 = app.create("clients", json!({"first_name": "Bo"})).await;
    app.create("jobs", json!({"client": {"uuid": job2}})).await;
    assert_eq!(app.delete(&format!("/v2/clients/{job2}")).await.status, 409);
}

async fn lists_are_paginated_newest_first_and_stable(app: TestApp) {
    let mut uuids = Vec::new();
    for i in 0..7 {
        uuids.push(app.create("clients", json!({"first_name": format!("C{i}")})).await);
    }
    uuids.reverse();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v2/clients?limit=3&after={a}"),
            None => "/v2/clients?limit=3".to_string(),
        };
        let page = app.get(&path).await.body["clients"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        for c in &page {
            seen.push(c["uuid"].as_str().unwrap().to_string());
        }
        after = Some(seen.last().unwrap().clone());
    }
    assert_eq!(seen, uuids);
    // Removing an item does not disturb the pages after it.
    app.delete(&format!("/v2/clients/{}", uuids[1])).await;
    let page = app.get(&format!("/v2/clients?limit=2&after={}", uuids[0])).await.body;
    assert_eq!(page["clients"][0]["uuid"], uuids[2]);
    for bad in ["limit=0", "limit=101", "limit=x", "after=nope", "colour=red"] {
        let r = app.get(&format!("/v2/clients?{bad}")).await;
        assert_eq!(r.status, 422, "{bad}: {:?}", r.body);
        assert_eq!(r.body["code"], "validation_failed");
    }
}

async fn lists_filter_by_updated_at_and_sites_by_client(app: TestApp) {
    let old = app.create("clients", json!({"first_name": "Old"})).await;
    app.clock.advance(std::time::Duration::from_secs(3600));
    let cut = chrono::Utc::now() + chrono::TimeDelta::minutes(30);
    let cut = cut.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let new = app.create("clients", json!({"first_name": "New"})).await;
    let after = app.get(&format!("/v2/clients?updated_at[after]={cut}")).await.body;
    assert_eq!(after["clients"].as_array().unwrap().len(), 1);
    assert_eq!(after["clients"][0]["uuid"], new);
    let before = app.get(&format!("/v2/clients?updated_at[before]={cut}")).await.body;
    assert_eq!(before["clients"][0]["uuid"], old);
    assert_eq!(before["clients"].as_array().unwrap().len(), 1);

    let s1 = app.create("sites", json!({"name": "A", "client": {"uuid": old}})).await;
    app.create("sites", json!({"name": "B", "client": {"uuid": new}})).await;
    let sites = app.get(&format!("/v2/sites?client_uuid={old}")).await.body;
    assert_eq!(sites["sites"].as_array().unwrap().len(), 1);
    assert_eq!(sites["sites"][0]["uuid"], s1);
}

async fn a_taken_external_id_is_refused_by_name(app: TestApp) {
    app.create("clients", json!({"first_name": "A", "external_id": "dup"})).await;
    let r = app.post("/v2/clients", json!({"first_name": "B", "external_id": "dup"})).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["errors"]["external_id"], json!(["is used by another entity"]));
    let other = app.create("clients", json!({"first_name": "C"})).await;
    let r = app.patch(&format!("/v2/clients/{other}"), json!({"external_id": "dup"})).await;
    assert_eq!(r.status, 422);
    assert_eq!(app.outbox(&other).await.len(), 1, "a refused change writes no event");
    // Another resource type may use the same external_id.
    app.create("sites", json!({"name": "S", "external_id": "dup"})).await;
}

async fn a_site_references_a_client_by_either_id(app: TestApp) {
    let client = app.create("clients", json!({"first_name": "Ada", "external_id": "c-9"})).await;
    let site = app
        .create(
            "sites",
            json!({"name": "Home", "client": {"external_id": "c-9"},
        "address": {"formatted": "1 Main St", "geolocation": {"latitude": 51.5, "longitude": -0.1}}}),
        )
        .await;
    let s = app.get(&format!("/v2/sites/{site}")).await.body;
    assert_eq!(s["site"]["client"], json!({"uuid": client, "external_id": "c-9"}));
    assert_eq!(s["site"]["address"]["geolocation"]["latitude"], 51.5);
    let r = app.post("/v2/sites", json!({"name": "X", "client": {"uuid": uuid::Uuid::now_v7()}})).await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["client"].is_array(), "{:?}", r.body);
    let r = app.patch(&format!("/v2/sites/{site}"), json!({"client": null})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get(&format!("/v2/sites/{site}")).await.body["site"]["client"], json!(null));
}

async fn history_pages_keep_a_version_together(app: TestApp) {
    let user = app.create("users", json!({"email": "w@acme.io"})).await;
    // version 1 has two events: job_created and job_assigned.
    let job = app.create("jobs", json!({"assignee": {"worker": {"uuid": user}}})).await;
    for i in 0..3 {
        app.patch(&format!("/v2/jobs/{job}"), json!({"description": format!("d{i}")})).await;
    }
    let page = app.get(&format!("/v2/jobs/{job}/history?limit=1")).await.body;
    let entries = page["history"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "both events of version 1: {entries:?}");
    assert!(entries.iter().all(|e| e["version"] == 1));
    assert_eq!(entries[0]["event_type"], "job_created");
    assert_eq!(entries[1]["event_type"], "job_assigned");
    assert_eq!(entries[0]["job"]["version"], 1);
    let rest = app.get(&format!("/v2/jobs/{job}/history?after=1")).await.body;
    let versions: Vec<_> = rest["history"].as_array().unwrap().iter().map(|e| e["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, vec![2, 3, 4]);
    assert!(app.get(&format!("/v2/jobs/{job}/history?after=4")).await.body["history"].as_array().unwrap().is_empty());
}

/// Creates that arrive together share a group commit, and a savepoint: when
/// one fails (a taken external_id) the others are undone and run again, so
/// every other create is stored with its event and the failed ones left
/// nothing behind.
async fn a_failed_create_in_a_busy_group_commit_rolls_back_only_itself(app: TestApp) {
    let requests = (0..60).map(|i| {
        let external_id = if i % 3 == 0 { "dup".to_string() } else { format!("own-{i}") };
        let body = json!({"first_name": format!("C{i}"), "external_id": external_id});
        let app = &app;
        async move { (i, app.post("/v2/clients", body).await) }
    });
    let replies = futures::future::join_all(requests).await;
    let mut created = Vec::new();
    for (i, r) in &replies {
        if i % 3 != 0 {
            assert_eq!(r.status, 201, "create {i}: {:?}", r.body);
            created.push(r.body["client_uuid"].as_str().unwrap().to_string());
        }
    }
    let dups: Vec<_> = replies.iter().filter(|(i, _)| i % 3 == 0).map(|(_, r)| r).collect();
    assert_eq!(dups.iter().filter(|r| r.status == 201).count(), 1, "exactly one create takes \"dup\"");
    for r in dups.iter().filter(|r| r.status != 201) {
        assert_eq!(r.status, 422, "{:?}", r.body);
        assert!(r.body["errors"]["external_id"].is_array(), "{:?}", r.body);
    }
    created.push(dups.iter().find(|r| r.status == 201).unwrap().body["client_uuid"].as_str().unwrap().to_string());
    for uuid in &created {
        let r = app.get(&format!("/v2/clients/{uuid}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["client"]["version"], 1);
    }
    assert_eq!(app.get("/v2/clients?limit=100").await.body["clients"].as_array().unwrap().len(), 41);
    assert_eq!(app.outbox_total().await, 41, "one client_created per stored client, none for the failed ones");
}
