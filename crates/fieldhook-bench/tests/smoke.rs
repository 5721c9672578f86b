//! The benchmark itself, end to end: the real bench binary against the real
//! server binary (the debug build beside it), every phase but memory and
//! PostgreSQL, shortened. Speed is not asserted (the machine is shared);
//! what is asserted is that the tool measures and reports what
//! docs/benchmarks.md says it does.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The fieldhook binary of the same build, beside the bench's own.
fn server_binary() -> Option<PathBuf> {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_fieldhook-bench"));
    let server = bench.with_file_name("fieldhook");
    server.exists().then_some(server)
}

#[test]
fn a_short_run_reports_every_figure_with_its_share_of_the_ceiling() {
    let Some(server) = server_binary() else {
        // `cargo test -p fieldhook-bench` alone does not build the server.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the fieldhook binary is not built beside the bench, and CI must run this test"
        );
        eprintln!("!!! SKIPPED: build the fieldhook binary first (cargo build -p fieldhook)");
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("bench.json");
    let run = Command::new(env!("CARGO_BIN_EXE_fieldhook-bench"))
        .args(["--bin", server.to_str().unwrap(), "--phases", "api,drain,e2e,latency"])
        .args(["--seconds", "1", "--ceiling-tries", "1", "--drain-events", "2000", "--latency-rate", "200"])
        .arg("--out")
        .arg(&json)
        .output()
        .expect("the bench runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1, "{report}");
    let rows = report["rows"].as_array().unwrap();
    let find = |backend: &str, metric: &str| -> &Value {
        rows.iter()
            .find(|r| r["backend"] == backend && r["metric"] == metric)
            .unwrap_or_else(|| panic!("no row {backend} / {metric} in {report}"))
    };
    let ceiling = find("loopback", "ceiling: plain keep-alive client");
    assert!(ceiling["value"].as_f64().unwrap() > 0.0);
    for metric in ["drain rate", "drain rate, 64 in flight", "end-to-end deliveries"] {
        let r = find("sqlite", metric);
        let (value, share) = (r["value"].as_f64().unwrap(), r["ratio_of_ceiling"].as_f64().unwrap());
        assert!(value > 0.0 && share > 0.0, "{metric}: {r}");
    }
    for metric in [
        "api job creates",
        "api job reads",
        "latency p99 at 1000/s",
        "cpu per 1000 deliveries (drain)",
        "peak rss (all phases)",
    ] {
        assert!(find("sqlite", metric)["value"].as_f64().unwrap() >= 0.0, "{metric}");
    }
    // The drain delivered its whole backlog, each event once.
    assert!(stderr.contains("drained 2000 in"), "{stderr}");
}
