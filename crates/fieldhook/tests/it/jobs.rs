//! Jobs: serial numbers, posted/scheduled, references, filters, events.

use crate::helpers::TestApp;
use serde_json::json;

crate::on_both_backends!(
    jobs_get_serial_numbers_and_a_status_from_time_and_assignee,
    job_references_resolve_and_a_missing_one_is_named,
    an_omitted_address_is_copied_from_the_site,
    assigning_emits_job_assigned_with_the_same_version,
    every_job_filter_narrows_the_list,
);

async fn jobs_get_serial_numbers_and_a_status_from_time_and_assignee(app: TestApp) {
    let worker = app.create("users", json!({"email": "tech@acme.io", "first_name": "T"})).await;
    let a = app.create("jobs", json!({"description": "fix the boiler"})).await;
    let b = app
        .create(
            "jobs",
            json!({"scheduled_at": "2026-12-01T09:00:00+00:00", "assignee": {"worker": {"uuid": worker}},
            "scheduled_duration": {"minutes": 90}}),
        )
        .await;
    let ja = app.get(&format!("/v2/jobs/{a}")).await.body["job"].clone();
    let jb = app.get(&format!("/v2/jobs/{b}")).await.body["job"].clone();
    assert_eq!(ja["serial_no"], 1);
    assert_eq!(jb["serial_no"], 2);
    assert_eq!(ja["status"], "posted");
    assert_eq!(jb["status"], "scheduled");
    assert_eq!(jb["assignee"], json!({"worker": {"uuid": worker, "email": "tech@acme.io"}}));
    assert_eq!(jb["scheduled_at"], "2026-12-01T09:00:00+00:00");
    assert_eq!(jb["scheduled_duration"], json!({"minutes": 90}));
    assert_eq!(
        jb["timestamps"],
        json!({"en_route_at": null, "started_at": null, "suspended_at": null, "finished_at": null, "canceled_at": null})
    );
    assert_eq!(jb["resolution"], json!(null));
    // Unscheduling puts it back to posted.
    app.patch(&format!("/v2/jobs/{b}"), json!({"scheduled_at": null})).await;
    assert_eq!(app.get(&format!("/v2/jobs/{b}")).await.body["job"]["status"], "posted");
    // A refused create does not use up a serial number.
    let r = app.post("/v2/jobs", json!({"scheduled_duration": {"minutes": 0}})).await;
    assert_eq!(r.status, 422);
    let c = app.create("jobs", json!({})).await;
    assert_eq!(app.get(&format!("/v2/jobs/{c}")).await.body["job"]["serial_no"], 3);
}

async fn job_references_resolve_and_a_missing_one_is_named(app: TestApp) {
    let t = app.create("job_types", json!({"code": "repair", "name": "Repair"})).await;
    let team_member = app.create("users", json!({"email": "m@acme.io"})).await;
    let team = app.create("teams", json!({"name": "North", "worker_uuids": [team_member]})).await;
    let client = app.create("clients", json!({"first_name": "Ada", "external_id": "c1"})).await;
    let job = app
        .create(
            "jobs",
            json!({"job_type": {"code": "repair"}, "assignee": {"team": {"uuid": team}},
            "client": {"external_id": "c1"}, "external_order_id": "ord-1"}),
        )
        .await;
    let j = app.get(&format!("/v2/jobs/{job}")).await.body["job"].clone();
    assert_eq!(j["type"], json!({"uuid": t, "code": "repair"}));
    assert_eq!(j["assignee"], json!({"team": {"uuid": team, "name": "North"}}));
    assert_eq!(j["client"], json!({"uuid": client, "external_id": "c1"}));
    let missing = uuid::Uuid::now_v7();
    for (body, field) in [
        (json!({"job_type": {"code": "nope"}}), "job_type"),
        (json!({"assignee": {"worker": {"uuid": missing}}}), "assignee.worker.uuid"),
        (json!({"assignee": {"team": {"uuid": missing}}}), "assignee.team.uuid"),
        (json!({"client": {"uuid": missing}}), "client"),
        (json!({"site": {"external_id": "nope"}}), "site"),
    ] {
        let r = app.post("/v2/jobs", body.clone()).await;
        assert_eq!(r.status, 422, "{body}");
        assert!(r.body["errors"][field].is_array(), "{body} should name {field}: {:?}", r.body);
    }
}

async fn an_omitted_address_is_copied_from_the_site(app: TestApp) {
    let site = app.create("sites", json!({"name": "Depot", "address": {"formatted": "5 Dock Rd", "floor": "2"}})).await;
    let job = app.create("jobs", json!({"site": {"uuid": site}})).await;
    let j = app.get(&format!("/v2/jobs/{job}")).await.body["job"].clone();
    assert_eq!(j["address"]["formatted"], "5 Dock Rd");
    assert_eq!(j["site"]["uuid"], site);
    let own = app.create("jobs", json!({"site": {"uuid": site}, "address": {"formatted": "elsewhere"}})).await;
    assert_eq!(app.get(&format!("/v2/jobs/{own}")).await.body["job"]["address"]["formatted"], "elsewhere");
}

async fn assigning_emits_job_assigned_with_the_same_version(app: TestApp) {
    let w1 = app.create("users", json!({"email": "a@acme.io"})).await;
    let w2 = app.create("users", json!({"email": "b@acme.io"})).await;
    let job = app.create("jobs", json!({})).await;
    app.patch(&format!("/v2/jobs/{job}"), json!({"assignee": {"worker": {"uuid": w1}}})).await;
    app.patch(&format!("/v2/jobs/{job}"), json!({"assignee": {"worker": {"uuid": w1}}})).await;
    app.patch(&format!("/v2/jobs/{job}"), json!({"assignee": {"worker": {"uuid": w2}}})).await;
    app.patch(&format!("/v2/jobs/{job}"), json!({"assignee": null})).await;
    let events = app.outbox(&job).await;
    let expect: Vec<(String, i64)> = [
        ("job_created", 1),
        ("job_updated", 2),
        ("job_assigned", 2),
        ("job_updated", 3),
        ("job_assigned", 3),
        ("job_updated", 4),
    ]
    .iter()
    .map(|(t, v)| (t.to_string(), *v))
    .collect();
    assert_eq!(events, expect);
}

async fn every_job_filter_narrows_the_list(app: TestApp) {
    let worker = app.create("users", json!({"email": "w@acme.io"})).await;
    let member = app.create("users", json!({"email": "m@acme.io"})).await;
    let team = app.create("teams", json!({"name": "T", "worker_uuids": [member]})).await;
    let client = app.create("clients", json!({"first_name": "C"})).await;
    let site = app.create("sites", json!({"name": "S"})).await;
    let scheduled = app
        .create("jobs", json!({"scheduled_at": "2026-12-01T09:00:00+00:00", "assignee": {"worker": {"uuid": worker}}}))
        .await;
    let by_team = app.create("jobs", json!({"assignee": {"team": {"uuid": team}}, "external_order_id": "o-1"})).await;
    let by_client =
        app.create("jobs", json!({"client": {"uuid": client}, "scheduled_at": "2026-12-10T09:00:00+00:00"})).await;
    let by_site = app.create("jobs", json!({"site": {"uuid": site}})).await;
    let cases: Vec<(String, Vec<&String>)> = vec![
        (format!("/v2/jobs?assignee[worker_uuid]={worker}"), vec![&scheduled]),
        (format!("/v2/jobs?assignee[team_uuid]={team}"), vec![&by_team]),
        (format!("/v2/jobs?client_uuid={client}"), vec![&by_client]),
        (format!("/v2/jobs?site_uuid={site}"), vec![&by_site]),
        ("/v2/jobs?status[]=scheduled".into(), vec![&scheduled]),
        ("/v2/jobs?status[]=scheduled&status[]=posted".into(), vec![&by_site, &by_client, &by_team, &scheduled]),
        ("/v2/jobs?external_order_id=o-1".into(), vec![&by_team]),
        ("/v2/jobs?scheduled_at[after]=2026-12-05T00:00:00Z".into(), vec![&by_client]),
        ("/v2/jobs?scheduled_at[before]=2026-12-05T00:00:00Z".into(), vec![&scheduled]),
    ];
    for (path, expected) in cases {
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        let got: Vec<&str> = r.body["jobs"].as_array().unwrap().iter().map(|j| j["uuid"].as_str().unwrap()).collect();
        let expected: Vec<&str> = expected.into_iter().map(String::as_str).collect();
        assert_eq!(got, expected, "{path}");
    }
    let r = app.get("/v2/jobs?status[]=exploded").await;
    assert_eq!(r.status, 422);
    assert!(r.body["errors"]["status[]"].is_array());
    let r = app.get("/v2/jobs?scheduled_at[after]=yesterday").await;
    assert_eq!(r.status, 422);
}
