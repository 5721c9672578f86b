//! Property test: random bytes and random JSON thrown at every create
//! endpoint never get a 5xx, and the server keeps answering.

use crate::helpers::{Backend, spawn_app};
use proptest::prelude::*;
use serde_json::{Map, Value};

const ENDPOINTS: &[&str] =
    &["/v2/clients", "/v2/sites", "/v2/jobs", "/v2/users", "/v2/teams", "/v2/job_types", "/v2/api_keys"];

/// Field names the endpoints know, so that random objects reach validation
/// and not only the unknown-field check.
const FIELDS: &[&str] = &[
    "external_id",
    "organization",
    "organization_name",
    "first_name",
    "last_name",
    "site_address",
    "contacts",
    "name",
    "description",
    "address",
    "client",
    "site",
    "job_type",
    "assignee",
    "scheduled_at",
    "scheduled_duration",
    "minutes",
    "worker",
    "team",
    "uuid",
    "code",
    "email",
    "role",
    "worker_uuids",
    "geolocation",
    "latitude",
    "longitude",
    "type",
    "value",
    "version",
    "scopes",
    "formatted",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("2026-11-22T10:15:00+00:00".into())),
        Just(Value::String(uuid::Uuid::now_v7().to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn random_input_to_create_endpoints_never_gets_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(spawn_app(Backend::Sqlite)).unwrap();
    let config = ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(endpoint in prop::sample::select(ENDPOINTS), body in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..200))| {
        rt.block_on(async {
            let url = format!("{}{}", app.base, endpoint);
            let json = app.http.post(&url).bearer_auth(&app.key).header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap()).send().await.unwrap();
            prop_assert!(json.status().as_u16() < 500, "{endpoint} {body}: {}", json.status());
            let raw = app.http.post(&url).bearer_auth(&app.key).header("content-type", "application/json")
                .body(bytes.clone()).send().await.unwrap();
            prop_assert!(raw.status().as_u16() < 500, "{endpoint} {bytes:?}: {}", raw.status());
            let patched = app.http.patch(format!("{}/v2/clients/fuzz-target", app.base)).bearer_auth(&app.key)
                .header("content-type", "application/json").body(serde_json::to_vec(&body).unwrap()).send().await.unwrap();
            prop_assert!(patched.status().as_u16() < 500, "PATCH {body}: {}", patched.status());
            Ok(())
        })?;
    });
    let health = rt.block_on(app.http.get(format!("{}/healthz", app.base)).send()).unwrap();
    assert_eq!(health.status(), 200);
}
