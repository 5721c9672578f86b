//! The real `fieldhook` binary: its commands, its first start, the SQLite
//! lock, its configuration errors, and durability across SIGKILL.

use crate::helpers::{Backend, fresh_database};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fieldhook"));
    c.env_remove("FIELDHOOK_DATABASE_URL").env("FIELDHOOK_RATE_LIMIT", "0").env("FIELDHOOK_LOG", "warn");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `fieldhook serve` child process, killed when dropped.
pub struct Served {
    pub child: Child,
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(db: &str) -> Served {
    serve_with(db, &[]).await
}

/// Starts `fieldhook serve` on `db` with extra environment settings and
/// waits until it is ready.
pub async fn serve_with(db: &str, env: &[(&str, &str)]) -> Served {
    let port = free_port();
    let served = Served {
        child: bin()
            .envs(env.iter().copied())
            .args(["serve", "--database-url", db, "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("FH_DEBUG").is_some() { Stdio::inherit() } else { Stdio::piped() })
            .spawn()
            .unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{}/readyz", served.base)).send().await.is_ok_and(|r| r.status() == 200) {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fieldhook serve did not become ready");
}

fn stderr_of(mut served: Served) -> String {
    let _ = served.child.kill();
    let out = std::mem::replace(&mut served.child, bin().arg("--version").spawn().unwrap());
    let output = out.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn run_json(args: &[&str]) -> Value {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test]
async fn account_and_api_key_commands_print_working_keys() {
    let (db, _dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let account = run_json(&["account", "create", "--name", "Acme", "--database-url", &db]);
    let account_uuid = account["account_uuid"].as_str().unwrap();
    let key = run_json(&[
        "api-key",
        "create",
        "--account",
        account_uuid,
        "--name",
        "crm",
        "--scopes",
        "jobs:write,clients:read",
        "--database-url",
        &db,
    ]);
    assert!(key["api_key_uuid"].is_string());
    let served = serve(&db).await;
    let http = reqwest::Client::new();
    let owner = account["api_key"].as_str().unwrap();
    let crm = key["api_key"].as_str().unwrap();
    let r = http
        .post(format!("{}/v2/clients", served.base))
        .bearer_auth(owner)
        .json(&json!({"first_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http.get(format!("{}/v2/clients", served.base)).bearer_auth(crm).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{}/v2/clients", served.base))
        .bearer_auth(crm)
        .json(&json!({"first_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let bad = bin()
        .args([
            "api-key",
            "create",
            "--account",
            account_uuid,
            "--name",
            "x",
            "--scopes",
            "jobs:fly",
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jobs:fly"));
}

#[tokio::test]
async fn first_start_prints_the_owner_key_once_and_a_second_server_is_refused() {
    let (db, _dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let first = serve(&db).await;
    // A second server on the same file refuses to start, saying why.
    let second = bin().args(["serve", "--database-url", &db, "--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("another fieldhook server is already using"), "{msg}");
    let base = first.base.clone();
    let log = stderr_of(first);
    let key = log.split_whitespace().find(|w| w.starts_with("fh_")).expect("owner key printed on stderr").to_string();
    assert!(log.contains("default"));
    let again = serve(&db).await;
    let r = reqwest::Client::new().get(format!("{}/v2/clients", again.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), 200, "the printed key works ({base})");
    let log = stderr_of(again);
    assert!(!log.contains("fh_"), "the key is printed only once: {log}");
}

#[test]
fn help_lists_every_setting_with_variable_and_default() {
    let out = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, var, default) in [
        ("--database-url", "FIELDHOOK_DATABASE_URL", "sqlite://fieldhook.db"),
        ("--listen", "FIELDHOOK_LISTEN", "127.0.0.1:7400"),
        ("--retry-schedule", "FIELDHOOK_RETRY_SCHEDULE", "15s,30s,1m"),
        ("--rate-limit", "FIELDHOOK_RATE_LIMIT", "100"),
        ("--request-retention", "FIELDHOOK_REQUEST_RETENTION", "30d"),
        ("--log-format", "FIELDHOOK_LOG_FORMAT", "text"),
    ] {
        assert!(help.contains(flag) && help.contains(var) && help.contains(default), "{flag} {var} {default}:\n{help}");
    }
}

#[test]
fn a_bad_setting_stops_the_start_naming_it() {
    let out = bin().args(["serve", "--delivery-timeout", "forever"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIELDHOOK_DELIVERY_TIMEOUT"));
    let out = bin().args(["migrate"]).env("FIELDHOOK_DATABASE_URL", "mysql://x").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIELDHOOK_DATABASE_URL"));
}

/// Everything the API acknowledged survives `kill -9` and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let (db, _dir) = fresh_database(Backend::Sqlite).await.unwrap();
    let account = run_json(&["account", "create", "--name", "Acme", "--database-url", &db]);
    let key = account["api_key"].as_str().unwrap().to_string();
    let mut served = serve(&db).await;
    let http = reqwest::Client::new();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..400 {
        let req = http
            .post(format!("{}/v2/clients", served.base))
            .bearer_auth(&key)
            .json(&json!({"first_name": format!("c{i}")}));
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.ok()?;
            if r.status() != 201 {
                return None;
            }
            let v: Value = r.json().await.ok()?;
            acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            v["client_uuid"].as_str().map(str::to_string)
        }));
    }
    // SIGKILL while requests are still streaming in.
    while acks.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    served.child.kill().unwrap();
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Some(uuid) = t.await.unwrap() {
            acknowledged.push(uuid);
        }
    }
    let _ = served.child.wait();
    assert!(!acknowledged.is_empty());
    let again = serve(&db).await;
    for uuid in &acknowledged {
        let r = http.get(format!("{}/v2/clients/{uuid}", again.base)).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status(), 200, "acknowledged client {uuid} was lost");
        let h: Value = http
            .get(format!("{}/v2/clients/{uuid}/history", again.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(h["history"][0]["event_type"], "client_created", "its event was lost");
    }
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused() {
    let (db, _dir) = fresh_database(Backend::Sqlite).await.unwrap();
    run_json(&["account", "create", "--name", "Acme", "--database-url", &db]);
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&format!("{db}?mode=rw")).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let out = bin().args(["migrate", "--database-url", &db]).output().unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("newer than this fieldhook binary"), "{msg}");
}
