//! A seeded stream of changes through the server's API: creates, PATCHes of
//! several fields at once, removals, no-op PATCHes, and job lifecycle
//! actions and reports, across clients, sites and jobs. Picks favour the
//! resource touched last, so that one resource's versions follow each other
//! closely and are in flight together — where reordering bites.

use crate::harness::TestServer;
use fieldhook_mirror::Kind;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// What a run did.
#[derive(Debug, Default)]
pub struct Done {
    /// Operations per kind of operation.
    pub operations: BTreeMap<&'static str, usize>,
    /// Resources removed, in order.
    pub removed: Vec<(Kind, Uuid)>,
}

/// The live resources the workload knows, and who refers to whom (a
/// referenced client or site cannot be removed: 409).
struct World {
    rng: StdRng,
    worker: Uuid,
    team: Uuid,
    clients: Vec<Uuid>,
    sites: Vec<Uuid>,
    jobs: Vec<Uuid>,
    site_client: HashMap<Uuid, Option<Uuid>>,
    job_refs: HashMap<Uuid, (Option<Uuid>, Option<Uuid>)>,
    organizations: HashMap<Uuid, bool>,
    serial: u64,
    done: Done,
}

const WORDS: &[&str] = &["Acme", "Bakery", "Mill", "Harbour", "North", "Oven", "Boiler", "Pump", "Depot", "Yard"];

/// Runs `operations` changes against `server`, seeded by `seed`.
pub async fn run(server: &TestServer, operations: usize, seed: u64) -> Done {
    let worker = server.create("users", json!({"email": "tia@acme.example", "first_name": "Tia"})).await;
    let team = server.create("teams", json!({"name": "Night shift", "worker_uuids": [worker]})).await;
    server.create("job_types", json!({"code": "repair", "name": "Repair"})).await;
    let mut world = World {
        rng: StdRng::seed_from_u64(seed),
        worker,
        team,
        clients: Vec::new(),
        sites: Vec::new(),
        jobs: Vec::new(),
        site_client: HashMap::new(),
        job_refs: HashMap::new(),
        organizations: HashMap::new(),
        serial: 0,
        done: Done::default(),
    };
    for _ in 0..operations {
        world.step(server).await;
    }
    world.done
}

/// Asserts the answer's status, naming the operation.
fn expect(what: &str, status: u16, reply: &crate::harness::Reply) {
    assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
}

impl World {
    fn count(&mut self, operation: &'static str) {
        *self.done.operations.entry(operation).or_default() += 1;
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn word(&mut self) -> &'static str {
        WORDS.choose(&mut self.rng).expect("words")
    }

    fn unique(&mut self, prefix: &str) -> String {
        self.serial += 1;
        format!("{prefix}-{}", self.serial)
    }

    fn contacts(&mut self) -> Value {
        let n = self.rng.random_range(0..3);
        let contacts: Vec<Value> = (0..n)
            .map(|i| {
                if self.chance(50) {
                    json!({"name": self.word(), "value": format!("+1555{:06}", self.rng.random_range(0..1_000_000)), "type": "phone"})
                } else {
                    json!({"name": null, "value": format!("{}{i}@example.com", self.word().to_lowercase()), "type": "email"})
                }
            })
            .collect();
        Value::Array(contacts)
    }

    fn address(&mut self) -> Value {
        let lat = f64::from(self.rng.random_range(-8_999_999..9_000_000)) / 100_000.0;
        let lon = f64::from(self.rng.random_range(-17_999_999..18_000_000)) / 100_000.0;
        json!({
            "formatted": format!("{} {} Lane", self.rng.random_range(1..200), self.word()),
            "apartment": if self.chance(30) { json!(format!("{}", self.rng.random_range(1..40))) } else { Value::Null },
            "geolocation": {"latitude": lat, "longitude": lon},
        })
    }

    fn timestamp(&mut self) -> String {
        format!(
            "2026-12-{:02}T{:02}:{:02}:00+00:00",
            self.rng.random_range(1..29),
            self.rng.random_range(6..20),
            self.rng.random_range(0..4) * 15
        )
    }

    /// One of `list`, the last-touched one half the time; it moves to the
    /// end (it is the last touched now).
    fn pick(&mut self, kind: Kind) -> Option<Uuid> {
        let recent = self.chance(50);
        let len = self.list(kind).len();
        if len == 0 {
            return None;
        }
        let at = if recent { len - 1 } else { self.rng.random_range(0..len) };
        let list = self.list(kind);
        let uuid = list.remove(at);
        list.push(uuid);
        Some(uuid)
    }

    fn list(&mut self, kind: Kind) -> &mut Vec<Uuid> {
        match kind {
            Kind::Client => &mut self.clients,
            Kind::Site => &mut self.sites,
            Kind::Job => &mut self.jobs,
        }
    }

    /// A reference to a random live resource of `kind`, or null.
    fn reference(&mut self, kind: Kind, percent: u32) -> Option<Uuid> {
        if !self.chance(percent) {
            return None;
        }
        let list = self.list(kind).clone();
        list.choose(&mut self.rng).copied()
    }

    fn referenced(&self, kind: Kind, uuid: Uuid) -> bool {
        match kind {
            Kind::Client => {
                self.site_client.values().any(|c| *c == Some(uuid))
                    || self.job_refs.values().any(|(c, _)| *c == Some(uuid))
            }
            Kind::Site => self.job_refs.values().any(|(_, s)| *s == Some(uuid)),
            Kind::Job => false,
        }
    }

    async fn step(&mut self, server: &TestServer) {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..10 => self.create_client(server).await,
            10..22 => self.update_client(server).await,
            22..26 => self.remove(server, Kind::Client).await,
            26..35 => self.create_site(server).await,
            35..46 => self.update_site(server).await,
            46..50 => self.remove(server, Kind::Site).await,
            50..62 => self.create_job(server).await,
            62..76 => self.update_job(server).await,
            76..90 => self.job_action(server).await,
            90..93 => self.report(server).await,
            93..98 => self.remove(server, Kind::Job).await,
            _ => self.no_op(server).await,
        }
    }

    async fn create_client(&mut self, server: &TestServer) {
        let organization = self.chance(50);
        let mut body = if organization {
            json!({"organization": true, "organization_name": format!("{} {}", self.word(), self.word())})
        } else {
            json!({"first_name": self.word(), "last_name": self.word()})
        };
        if self.chance(50) {
            body["external_id"] = json!(self.unique("crm"));
        }
        body["contacts"] = self.contacts();
        if self.chance(50) {
            body["site_address"] = self.address();
        }
        let uuid = server.create("clients", body).await;
        self.clients.push(uuid);
        self.organizations.insert(uuid, organization);
        self.count("client created");
    }

    async fn update_client(&mut self, server: &TestServer) {
        let Some(uuid) = self.pick(Kind::Client) else { return self.create_client(server).await };
        let mut patch = json!({});
        if self.organizations[&uuid] {
            patch["organization_name"] = json!(format!("{} {} Ltd", self.word(), self.word()));
        } else {
            patch["first_name"] = json!(self.word());
            patch["middle_name"] = if self.chance(50) { json!(self.word()) } else { Value::Null };
        }
        if self.chance(60) {
            patch["contacts"] = self.contacts();
        }
        if self.chance(50) {
            patch["site_address"] = if self.chance(80) { self.address() } else { Value::Null };
        }
        if self.chance(30) {
            patch["external_id"] = if self.chance(70) { json!(self.unique("crm")) } else { Value::Null };
        }
        let reply = server.send(reqwest::Method::PATCH, &format!("/v2/clients/{uuid}"), Some(patch)).await;
        expect("updating a client", 200, &reply);
        self.count("client updated");
    }

    async fn create_site(&mut self, server: &TestServer) {
        let client = self.reference(Kind::Client, 70);
        let mut body = json!({"name": format!("{} {}", self.word(), self.word()), "contacts": self.contacts()});
        if let Some(client) = client {
            body["client"] = json!({"uuid": client});
        }
        if self.chance(70) {
            body["address"] = self.address();
        }
        if self.chance(40) {
            body["description"] = json!(format!("Gate code {}", self.rng.random_range(1000..9999)));
        }
        let uuid = server.create("sites", body).await;
        self.sites.push(uuid);
        self.site_client.insert(uuid, client);
        self.count("site created");
    }

    async fn update_site(&mut self, server: &TestServer) {
        let Some(uuid) = self.pick(Kind::Site) else { return self.create_site(server).await };
        let mut patch = json!({"name": format!("{} {}", self.word(), self.word())});
        if self.chance(50) {
            patch["description"] = if self.chance(70) { json!(self.word()) } else { Value::Null };
        }
        if self.chance(50) {
            patch["address"] = self.address();
        }
        if self.chance(40) {
            patch["contacts"] = self.contacts();
        }
        let mut client = self.site_client[&uuid];
        if self.chance(30) {
            client = self.reference(Kind::Client, 70);
            patch["client"] = client.map_or(Value::Null, |c| json!({"uuid": c}));
        }
        let reply = server.send(reqwest::Method::PATCH, &format!("/v2/sites/{uuid}"), Some(patch)).await;
        expect("updating a site", 200, &reply);
        self.site_client.insert(uuid, client);
        self.count("site updated");
    }

    async fn create_job(&mut self, server: &TestServer) {
        let client = self.reference(Kind::Client, 60);
        let site = self.reference(Kind::Site, 50);
        let mut body = json!({"description": format!("{} does not work", self.word()), "contacts": self.contacts()});
        if let Some(client) = client {
            body["client"] = json!({"uuid": client});
        }
        if let Some(site) = site {
            body["site"] = json!({"uuid": site});
        }
        if self.chance(60) {
            body["scheduled_at"] = json!(self.timestamp());
            body["scheduled_duration"] = json!({"minutes": self.rng.random_range(1..8) * 30});
            body["assignee"] = if self.chance(70) {
                json!({"worker": {"uuid": self.worker}})
            } else {
                json!({"team": {"uuid": self.team}})
            };
        }
        if self.chance(40) {
            body["job_type"] = json!({"code": "repair"});
        }
        if self.chance(30) {
            body["external_order_id"] = json!(self.unique("order"));
        }
        let uuid = server.create("jobs", body).await;
        self.jobs.push(uuid);
        self.job_refs.insert(uuid, (client, site));
        self.count("job created");
    }

    async fn job_status(&self, server: &TestServer, uuid: Uuid) -> String {
        let reply = server.get(&format!("/v2/jobs/{uuid}")).await;
        expect("reading a job", 200, &reply);
        reply.body["job"]["status"].as_str().unwrap().to_string()
    }

    async fn update_job(&mut self, server: &TestServer) {
        let Some(uuid) = self.pick(Kind::Job) else { return self.create_job(server).await };
        let status = self.job_status(server, uuid).await;
        let mut patch = json!({"description": format!("{} {} is broken", self.word(), self.word())});
        if self.chance(50) {
            patch["scheduled_at"] = json!(self.timestamp());
        }
        if self.chance(40) {
            patch["scheduled_duration"] = json!({"minutes": self.rng.random_range(1..8) * 15});
        }
        if self.chance(40) {
            patch["contacts"] = self.contacts();
        }
        if self.chance(30) {
            patch["address"] = self.address();
        }
        if self.chance(20) {
            patch["external_order_id"] = json!(self.unique("order"));
        }
        // Assignees may change only before the work has started (api.md).
        if matches!(status.as_str(), "posted" | "scheduled") && self.chance(40) {
            patch["assignee"] = if self.chance(50) {
                json!({"worker": {"uuid": self.worker}})
            } else {
                json!({"team": {"uuid": self.team}})
            };
        }
        let (mut client, mut site) = self.job_refs[&uuid];
        if self.chance(25) {
            client = self.reference(Kind::Client, 70);
            patch["client"] = client.map_or(Value::Null, |c| json!({"uuid": c}));
        }
        if self.chance(25) {
            site = self.reference(Kind::Site, 70);
            patch["site"] = site.map_or(Value::Null, |s| json!({"uuid": s}));
        }
        let reply = server.send(reqwest::Method::PATCH, &format!("/v2/jobs/{uuid}"), Some(patch)).await;
        expect("updating a job", 200, &reply);
        self.job_refs.insert(uuid, (client, site));
        self.count("job updated");
    }

    async fn job_action(&mut self, server: &TestServer) {
        let Some(uuid) = self.pick(Kind::Job) else { return self.create_job(server).await };
        let status = self.job_status(server, uuid).await;
        // api.md's lifecycle table, from the current status; cancel is kept
        // rare so that jobs live long enough to be finished.
        let mut actions: Vec<&str> = match status.as_str() {
            "scheduled" => vec!["publish"],
            "published" => vec!["en_route", "start"],
            "en_route" => vec!["start"],
            "started" => vec!["suspend", "finish", "finish"],
            "suspended" => vec!["resume", "finish"],
            _ => vec![],
        };
        if !matches!(status.as_str(), "finished" | "canceled") && self.chance(10) {
            actions = vec!["cancel"];
        }
        let Some(action) = actions.choose(&mut self.rng).copied() else {
            // Posted (no time or assignee yet): schedule it, which moves it
            // to `scheduled`. Finished or canceled: just reword it.
            let patch = if status == "posted" {
                json!({"scheduled_at": self.timestamp(), "assignee": {"worker": {"uuid": self.worker}}})
            } else {
                json!({"description": format!("{} after the fact", self.word())})
            };
            let reply = server.send(reqwest::Method::PATCH, &format!("/v2/jobs/{uuid}"), Some(patch)).await;
            expect(&format!("patching a {status} job"), 200, &reply);
            self.count("job updated");
            return;
        };
        let body = if action == "finish" {
            let mut body = json!({"resolution": {"successful": self.chance(80), "comment": self.word()}});
            if self.chance(50) {
                body["report_fields"] =
                    json!([{"name": "Meter", "value": format!("{}", self.rng.random_range(0..9999))}]);
            }
            body
        } else {
            json!({})
        };
        let reply = server.post(&format!("/v2/jobs/{uuid}/{action}"), body).await;
        expect(&format!("{action} from {status}"), 200, &reply);
        self.count("job lifecycle action");
    }

    async fn report(&mut self, server: &TestServer) {
        let Some(uuid) = self.pick(Kind::Job) else { return self.create_job(server).await };
        if self.job_status(server, uuid).await != "finished" {
            return self.job_action(server).await;
        }
        let fields = json!({"report_fields": [
            {"name": "Parts", "value": self.word()},
            {"name": "Hours", "value": format!("{}", self.rng.random_range(1..9))},
        ]});
        let reply = server.send(reqwest::Method::PUT, &format!("/v2/jobs/{uuid}/report"), Some(fields)).await;
        expect("reporting on a finished job", 200, &reply);
        self.count("job report");
    }

    async fn remove(&mut self, server: &TestServer, kind: Kind) {
        let candidates: Vec<Uuid> =
            self.list(kind).clone().into_iter().filter(|u| !self.referenced(kind, *u)).collect();
        let Some(uuid) = candidates.choose(&mut self.rng).copied() else { return };
        let reply = server.send(reqwest::Method::DELETE, &format!("/v2/{}/{uuid}", kind.plural()), None).await;
        expect(&format!("removing a {kind}"), 204, &reply);
        self.list(kind).retain(|u| *u != uuid);
        self.site_client.remove(&uuid);
        self.job_refs.remove(&uuid);
        self.done.removed.push((kind, uuid));
        self.count(match kind {
            Kind::Client => "client removed",
            Kind::Site => "site removed",
            Kind::Job => "job removed",
        });
    }

    /// A PATCH that changes nothing: no version, no event (api.md) — the
    /// replica must not expect one.
    async fn no_op(&mut self, server: &TestServer) {
        let Some(uuid) = self.pick(Kind::Site) else { return self.create_site(server).await };
        let current = server.get(&format!("/v2/sites/{uuid}")).await;
        expect("reading a site", 200, &current);
        let name = current.body["site"]["name"].clone();
        let reply =
            server.send(reqwest::Method::PATCH, &format!("/v2/sites/{uuid}"), Some(json!({"name": name}))).await;
        expect("a PATCH that changes nothing", 200, &reply);
        let after = server.get(&format!("/v2/sites/{uuid}")).await;
        assert_eq!(after.body["site"]["version"], current.body["site"]["version"], "a no-op PATCH kept the version");
        self.count("no-op patch");
    }
}
