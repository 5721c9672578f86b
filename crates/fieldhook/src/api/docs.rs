//! The OpenAPI 3.1 document: the `/v2` paths come from the handlers'
//! annotations (so it cannot drift from the router); this module adds the
//! outbound side — the webhook payloads as OpenAPI 3.1 `webhooks`, with an
//! example per event type — and serves it with a bundled Swagger UI.

use crate::domain::client::Client;
use crate::domain::common::{Address, Contact, ContactType, Geolocation, RefOutput};
use crate::domain::event::{Context, Event, EventType, Source};
use crate::domain::job::{
    Assignee, Job, JobTypeRef, ReportField, Resolution, ScheduledDuration, Status, Timestamps, WorkerRef,
};
use crate::domain::site::Site;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::OpenApi;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

/// The body of every webhook request (webhooks.md, "The body"): exactly one
/// of the resource keys is present.
#[derive(Serialize, ToSchema)]
pub struct WebhookPayload {
    /// Unique per event; the same on every attempt and for every webhook.
    pub event_uuid: Uuid,
    pub event_type: String,
    pub context: Context,
    /// For `job_*` events: the job at the event's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// For `client_*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Client>,
    /// For `site_*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<Site>,
    /// For `webhook_test`: the webhook itself, version 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub webhook: Option<Value>,
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("valid example time").with_timezone(&Utc)
}

fn example_client() -> Client {
    Client {
        uuid: Uuid::from_u128(0x0193_4b4e_21c0_7a4e_9d2f_4a11_c0ff_ee01),
        external_id: Some("crm-42".into()),
        organization: true,
        organization_name: Some("Acme Bakery".into()),
        first_name: None,
        middle_name: None,
        last_name: None,
        name: "Acme Bakery".into(),
        site_address: None,
        contacts: vec![Contact {
            name: Some("Owner".into()),
            value: Some("owner@acme.example".into()),
            kind: ContactType::Email,
        }],
        version: 3,
        created_at: at("2026-11-20T08:00:00+00:00"),
        updated_at: at("2026-11-22T10:02:41+00:00"),
    }
}

fn example_site() -> Site {
    let client = example_client();
    Site {
        uuid: Uuid::from_u128(0x0193_4b4e_21c0_7a4e_9d2f_4a11_c0ff_ee02),
        external_id: Some("site-7".into()),
        name: "Bakery, back entrance".into(),
        description: None,
        address: Some(Address {
            formatted: Some("12 Mill Lane".into()),
            geolocation: Some(Geolocation { latitude: 51.5, longitude: -0.12 }),
            ..Address::default()
        }),
        contacts: Vec::new(),
        client: Some(RefOutput { uuid: client.uuid, external_id: client.external_id }),
        version: 1,
        created_at: at("2026-11-20T08:05:00+00:00"),
        updated_at: at("2026-11-20T08:05:00+00:00"),
    }
}

fn example_job(event: EventType) -> Job {
    let site = example_site();
    let (status, version) = match event {
        EventType::JobCreated | EventType::JobAssigned => (Status::Scheduled, 1),
        EventType::JobPublished => (Status::Published, 2),
        EventType::JobEnRoute => (Status::EnRoute, 3),
        EventType::JobStarted | EventType::JobResumed => (Status::Started, 4),
        EventType::JobSuspended => (Status::Suspended, 5),
        EventType::JobFinished | EventType::JobReportReady => (Status::Finished, 6),
        EventType::JobCanceled => (Status::Canceled, 6),
        _ => (Status::Started, 7),
    };
    let mut timestamps = Timestamps::default();
    if version >= 3 {
        timestamps.en_route_at = Some(at("2026-11-22T09:30:00+00:00"));
    }
    if version >= 4 && status != Status::Canceled {
        timestamps.started_at = Some(at("2026-11-22T09:58:03+00:00"));
    }
    if status == Status::Suspended {
        timestamps.suspended_at = Some(at("2026-11-22T10:01:00+00:00"));
    }
    let finished = status == Status::Finished;
    if finished {
        timestamps.finished_at = Some(at("2026-11-22T10:02:30+00:00"));
    }
    if status == Status::Canceled {
        timestamps.canceled_at = Some(at("2026-11-22T10:02:30+00:00"));
    }
    Job {
        uuid: Uuid::from_u128(0x0193_4b4e_21c0_7a4e_9d2f_4a11_c0ff_ee03),
        serial_no: 1042,
        external_id: Some("deal-9001".into()),
        external_order_id: Some("order-77".into()),
        status,
        job_type: Some(JobTypeRef {
            uuid: Uuid::from_u128(0x0193_4b4e_21c0_7a4e_9d2f_4a11_c0ff_ee04),
            code: "repair".into(),
        }),
        description: Some("Oven does not heat".into()),
        scheduled_at: Some(at("2026-11-22T09:00:00+00:00")),
        scheduled_duration: Some(ScheduledDuration { minutes: 90 }),
        assignee: Some(Assignee::Worker(WorkerRef {
            uuid: Uuid::from_u128(0x0193_4b4e_21c0_7a4e_9d2f_4a11_c0ff_ee05),
            email: "tech@acme.example".into(),
        })),
        client: site.client.clone(),
        site: Some(RefOutput { uuid: site.uuid, external_id: site.external_id.clone() }),
        address: site.address.clone(),
        contacts: Vec::new(),
        timestamps,
        resolution: finished.then(|| Resolution { successful: true, comment: Some("Replaced the thermostat".into()) }),
        report_fields: if event == EventType::JobReportReady {
            vec![ReportField { name: "parts".into(), value: Some("thermostat T-200".into()) }]
        } else {
            Vec::new()
        },
        version,
        created_at: at("2026-11-21T16:00:00+00:00"),
        updated_at: at("2026-11-22T10:02:41+00:00"),
    }
}

/// An example body of `event`.
pub fn example(event: EventType) -> Value {
    let mut ctx = Context::api(at("2026-11-22T10:02:41+00:00"));
    let body = match event.resource() {
        "job" => {
            if matches!(event, EventType::JobEnRoute | EventType::JobStarted | EventType::JobFinished) {
                ctx.source = Source::Mobile;
                ctx.happened_at = at("2026-11-22T09:58:03+00:00");
                ctx.device_uuid = Some(Uuid::from_u128(0x0193_4b4e_21c0_7a4e_9d2f_4a11_c0ff_ee06));
            }
            let job = example_job(event);
            Event::new(event, "job", job.uuid, job.version, &ctx, &job)
        }
        "client" => {
            let c = example_client();
            Event::new(event, "client", c.uuid, c.version, &ctx, &c)
        }
        "site" => {
            let s = example_site();
            Event::new(event, "site", s.uuid, s.version, &ctx, &s)
        }
        _ => Event::new(event, "webhook", Uuid::nil(), 0, &ctx, &json!({"uuid": Uuid::nil(), "version": 0})),
    };
    serde_json::from_str(&body.expect("examples serialise").body).expect("valid JSON")
}

/// What a create requires beyond its body's schema: its input type also
/// serves the PATCH, where every field may be left out. Each field named
/// here must be present, a string with something besides whitespace, and
/// the domain's `required` check answers 422 without it.
const CREATE_REQUIRES: &[(&str, &[&str])] = &[
    ("/v2/sites", &["name"]),
    ("/v2/teams", &["name"]),
    ("/v2/job_types", &["code"]),
    ("/v2/users", &["email"]),
    ("/v2/webhooks", &["url"]),
];

/// States the rules of the request bodies that the derived schemas cannot,
/// so that a client generated from the document sends what the API
/// accepts: what each create requires ([`CREATE_REQUIRES`]; a webhook also
/// needs at least one event type), and the names that event types and
/// scopes take, from the lists the validation itself reads.
///
/// It edits the document as JSON, since utoipa's types cannot read back
/// schemas such as a bare `{"required": [...]}`; so it comes last, and the
/// JSON it returns is what `/v2/openapi.json` serves.
pub fn with_input_rules(doc: OpenApi) -> Value {
    let mut v = serde_json::to_value(&doc).expect("the document serialises");
    for (path, fields) in CREATE_REQUIRES {
        let each: Vec<Value> = fields.iter().map(|f| non_blank(f)).collect();
        require_on_create(&mut v, path, json!({"allOf": each}));
    }
    require_on_create(
        &mut v,
        "/v2/webhooks",
        json!({"required": ["event_types"], "properties": {"event_types": {"type": "array", "minItems": 1}}}),
    );
    // A client is an organization with its name, or a person with at least
    // one of three names (`ClientInput::create`).
    require_on_create(
        &mut v,
        "/v2/clients",
        json!({"anyOf": [
            {"allOf": [{"required": ["organization"], "properties": {"organization": {"const": true}}},
                non_blank("organization_name")]},
            {"allOf": [
                {"properties": {"organization": {"enum": [false, null]}}},
                {"anyOf": [non_blank("first_name"), non_blank("middle_name"), non_blank("last_name")]},
            ]},
        ]}),
    );
    let event_types: Vec<&str> = EventType::ALL.iter().filter(|e| e.subscribable()).map(|e| e.name()).collect();
    let scopes: Vec<&str> = std::iter::once("*").chain(crate::domain::scope::ALL_SCOPES.iter().copied()).collect();
    let schemas = &mut v["components"]["schemas"];
    schemas["WebhookInput"]["properties"]["event_types"]["items"]["enum"] = json!(event_types);
    schemas["ApiKeyInput"]["properties"]["scopes"]["items"]["enum"] = json!(scopes);
    schemas["ApiKeyInput"]["properties"]["scopes"]["minItems"] = json!(1);
    v
}

/// The JSON body of `POST path` in `doc` must also satisfy `rule`.
fn require_on_create(doc: &mut Value, path: &str, rule: Value) {
    let body = &mut doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert!(body.is_object(), "{path} has a POST with a JSON body");
    *body = json!({"allOf": [body.take(), rule]});
}

/// `field` is present, a string with something besides whitespace.
fn non_blank(field: &str) -> Value {
    json!({"required": [field], "properties": {field: {"type": "string", "pattern": r"\S"}}})
}

/// Adds the `webhooks` section (OpenAPI 3.1): one entry per event type.
pub fn with_webhooks(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("WebhookPayload".into(), WebhookPayload::schema());
    let mut nested = Vec::new();
    <WebhookPayload as ToSchema>::schemas(&mut nested);
    for (name, schema) in nested {
        components.schemas.entry(name).or_insert(schema);
    }
    let mut webhooks = serde_json::Map::new();
    for event in EventType::ALL.iter().copied().filter(|e| e.subscribable() || *e == EventType::WebhookTest) {
        webhooks.insert(
            event.name().to_string(),
            json!({
                "post": {
                    "summary": event.description(),
                    "description": "Sent with `X-Planado-Delivery-Attempt`, `X-Planado-Secret` (when set), \
                        `X-Planado-Api-Token`, and the Standard Webhooks headers `webhook-id`, \
                        `webhook-timestamp`, `webhook-signature`. Answer 2xx within the timeout.",
                    "operationId": event.name(),
                    "tags": ["webhook payloads"],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/WebhookPayload"},
                            "example": example(event),
                        }},
                    },
                    "responses": {
                        "2XX": {"description": "Delivered."},
                        "default": {"description": "Retried later (410 suspends the webhook)."},
                    },
                }
            }),
        );
    }
    doc.extensions.get_or_insert_with(Default::default).insert("webhooks".into(), Value::Object(webhooks));
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_an_example_with_its_resource() {
        for event in EventType::ALL.iter().copied().filter(|e| e.subscribable()) {
            let e = example(event);
            assert_eq!(e["event_type"], event.name());
            assert!(e[event.resource()].is_object(), "{}", event.name());
        }
    }
}
