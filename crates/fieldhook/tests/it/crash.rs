//! Crash safety, proven with the real binary: every event whose API call
//! was acknowledged is delivered, even when the server is killed with
//! SIGKILL in the middle of delivering and restarted.

use crate::cli::{run_json, serve_with};
use crate::helpers::{Backend, fresh_database};
use crate::receiver::{Answer, Receiver};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_acknowledged_event_is_delivered_after_sigkill() {
    every_acknowledged_event_is_delivered_after_sigkill(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_acknowledged_event_is_delivered_after_sigkill() {
    every_acknowledged_event_is_delivered_after_sigkill(Backend::Postgres).await;
}

async fn every_acknowledged_event_is_delivered_after_sigkill(backend: Backend) {
    let Some((db, _dir)) = fresh_database(backend).await else { return };
    // A short delivery timeout keeps the PostgreSQL claim lease of the dead
    // process short, so that the restarted one takes its requests over soon.
    let env = [("FIELDHOOK_ALLOW_PRIVATE_TARGETS", "true"), ("FIELDHOOK_DELIVERY_TIMEOUT", "1s")];
    let account = run_json(&["account", "create", "--name", "Acme", "--database-url", &db]);
    let key = account["api_key"].as_str().unwrap().to_string();
    let rx = Receiver::start().await;
    rx.answer_with(|_| Answer::Slow(Duration::from_millis(5), 200));
    let mut server = serve_with(&db, &env).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v2/webhooks", server.base))
        .bearer_auth(&key)
        .json(&json!({"url": rx.url, "event_types": ["job_created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // 1,000 jobs from 20 concurrent clients; SIGKILL once deliveries flow.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (http, base, key, acked, next) =
            (http.clone(), server.base.clone(), key.clone(), acked.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < 1000 {
                let Ok(r) = http
                    .post(format!("{base}/v2/jobs"))
                    .bearer_auth(&key)
                    .json(&json!({"description": "x"}))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() == 201
                    && let Ok(v) = r.json::<Value>().await
                {
                    acked.lock().unwrap().push(v["job_uuid"].as_str().unwrap().to_string());
                }
            }
        }));
    }
    rx.wait_for(150).await;
    server.child.kill().unwrap();
    let _ = server.child.wait();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "only {} jobs acknowledged", acked.len());

    // Restart and find every acknowledged job's event delivered.
    let server = serve_with(&db, &env).await;
    let mut expected = HashSet::new();
    for job in &acked {
        let h: Value = http
            .get(format!("{}/v2/jobs/{job}/history", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(h["history"][0]["event_type"], "job_created", "job {job} lost its event");
        expected.insert(h["history"][0]["event_uuid"].as_str().unwrap().to_string());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = rx.received().iter().map(|r| r.event_uuid()).collect();
        let missing = expected.difference(&got).count();
        if missing == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{missing} acknowledged events never delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
