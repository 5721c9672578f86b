//! `fieldhook-bench`: measures fieldhook on this machine over loopback and
//! compares it, in the same run, with the machine's own limit — a plain
//! keep-alive HTTP client posting to a minimal receiver.
//!
//! Everything runs here: the receiver and the load generators in this
//! process, the server as a child process (the real release binary), so its
//! CPU time and peak memory can be read from /proc. On a 2-core machine the
//! load generator, the receiver and the server share the cores; the ceiling
//! is measured under the same handicap (client and receiver in one
//! process), which is what makes the ratios fair.

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::Parser;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Throughput, latency and memory of fieldhook against the loopback ceiling")]
struct Args {
    /// The fieldhook binary to measure (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/fieldhook")]
    bin: String,
    /// PostgreSQL URL to measure as well (a fresh schema is used).
    #[arg(long, env = "FIELDHOOK_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// Events that pile up before the drain.
    #[arg(long, default_value_t = 200_000)]
    drain_events: usize,
    /// Webhooks in the end-to-end phase.
    #[arg(long, default_value_t = 4)]
    webhooks: usize,
    /// Length of each timed phase, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections of the load generators.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Pending requests for the memory phase (events × 10 webhooks).
    #[arg(long, default_value_t = 1_000_000)]
    pending: usize,
    /// Run only the memory phase (peak RSS with `--pending` requests).
    #[arg(long)]
    memory_only: bool,
    /// Measure the ceiling, then PostgreSQL only (with `--postgres`), for
    /// profiling it: the SQLite phases are skipped.
    #[arg(long, requires = "postgres")]
    postgres_only: bool,
    /// The phases to run, for profiling one at a time (the ceiling always
    /// runs, as the ratios need it).
    #[arg(long, value_delimiter = ',', default_value = "api,drain,e2e,latency,memory")]
    phases: Vec<Phase>,
    /// Events per second of the latency phase's run near saturation; by
    /// default 80 % of the events per second of the end-to-end phase.
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "docs/benchmarks.json")]
    out: String,
    /// How many times the ceiling and the SQLite phases are measured, each
    /// time on a fresh database. The table then gives each figure's median
    /// over the runs (for a share of the ceiling: the median of the runs'
    /// shares, each against its own run's ceiling) and its range. On a
    /// shared machine one run's share can be off by a fifth either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// How many times each run measures the hyper ceiling, keeping the
    /// fastest: the machine's limit is the best it reaches, and on some
    /// hosts one measurement lands well below it (docs/benchmarks.md,
    /// thirteenth round).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    ceiling_tries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Api,
    Drain,
    E2e,
    Latency,
    Memory,
}

/// A minimal receiver: answers 200 at once and counts. When tracking, it
/// notes the arrival time of each job uuid (for latency).
struct Receiver {
    count: AtomicU64,
    track: AtomicBool,
    arrivals: Mutex<HashMap<String, Instant>>,
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    r.count.fetch_add(1, Ordering::Relaxed);
    if r.track.load(Ordering::Relaxed)
        && let Some(uuid) = job_uuid(&body)
    {
        r.arrivals.lock().unwrap().entry(uuid).or_insert(now);
    }
    StatusCode::OK
}

/// The job uuid of a webhook body, without a full parse.
fn job_uuid(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"job\":{\"uuid\":\"")? + 15;
    text.get(at..at + 36).map(str::to_string)
}

async fn start_receiver() -> anyhow::Result<(String, Arc<Receiver>)> {
    let receiver =
        Arc::new(Receiver { count: AtomicU64::new(0), track: AtomicBool::new(false), arrivals: Mutex::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new().fallback(receive).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, receiver))
}

/// A `fieldhook serve` child process.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the server has used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the ")" of the command name: utime is the 12th, stime the 13th.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Peak resident memory in MB (VmHWM).
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `fieldhook serve` child process; `in_flight` sets
/// `FIELDHOOK_MAX_IN_FLIGHT_PER_WEBHOOK` (by default the spec's 16).
async fn start_server(bin: &str, db: &str, in_flight: Option<usize>) -> anyhow::Result<Server> {
    let port = free_port();
    let mut command = Command::new(bin);
    if let Some(n) = in_flight {
        command.env("FIELDHOOK_MAX_IN_FLIGHT_PER_WEBHOOK", n.to_string());
    }
    let child = command
        .args(["serve", "--database-url", db, "--listen", &format!("127.0.0.1:{port}")])
        .env("FIELDHOOK_RATE_LIMIT", "0")
        .env("FIELDHOOK_ALLOW_PRIVATE_TARGETS", "true")
        .env("FIELDHOOK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {bin} (build it with cargo build --release)"))?;
    let server = Server { child, base: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{}/readyz", server.base)).send().await.is_ok_and(|r| r.status() == 200) {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server did not become ready")
}

fn create_account(bin: &str, db: &str) -> anyhow::Result<String> {
    let out = Command::new(bin).args(["account", "create", "--name", "bench", "--database-url", db]).output()?;
    if !out.status.success() {
        bail!("account create failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["api_key"].as_str().context("api_key")?.to_string())
}

/// A request of a load generator: method, path and JSON body (empty for a GET).
struct Call {
    method: hyper::Method,
    path: String,
    body: bytes::Bytes,
}

impl Call {
    /// The HTTP request, for the server at `host` with the `auth` header.
    fn request(
        self,
        host: &hyper::header::HeaderValue,
        auth: &hyper::header::HeaderValue,
    ) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
        let mut request = hyper::Request::new(http_body_util::Full::new(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.path.parse().expect("a valid path");
        let h = request.headers_mut();
        h.insert(hyper::header::HOST, host.clone());
        h.insert(hyper::header::AUTHORIZATION, auth.clone());
        h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        request
    }
}

/// Runs `concurrency` workers, each on one keep-alive connection to the
/// server of `api`, issuing the calls `make` builds until `total` are done or
/// `duration` passes; returns the number answered 2xx and the time taken.
///
/// The load generators use hyper's bare connections, like the ceiling: the
/// load generator shares the 2 cores with the server, and a heavier client
/// (reqwest's layers cost about twice hyper's per request here) would take
/// CPU from the server it measures.
async fn blast<F>(
    api: &Api,
    concurrency: usize,
    total: Option<usize>,
    duration: Option<Duration>,
    make: F,
) -> (usize, Duration)
where
    F: Fn(usize) -> Call + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let auth = hyper::header::HeaderValue::from_str(&format!("Bearer {}", api.key)).expect("a header-safe key");
    let host = hyper::header::HeaderValue::from_str(&api.addr).expect("a header-safe address");
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (make, next, done) = (make.clone(), next.clone(), done.clone());
        let (addr, auth, host) = (api.addr.clone(), auth.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if total.is_some_and(|t| i >= t) || deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                if conn.is_none() {
                    conn = connect(&addr).await.ok();
                }
                let Some(send) = conn.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let request = make(i).request(&host, &auth);
                let ok = match send.send_request(request).await {
                    Ok(r) => {
                        let status = r.status();
                        r.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    conn = None;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (done.load(Ordering::Relaxed) as usize, started.elapsed())
}

/// One keep-alive HTTP/1.1 connection (hyper's connection API).
async fn connect(
    addr: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn wait_count(r: &Receiver, target: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    while r.count.load(Ordering::Relaxed) < target && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

#[derive(Debug, Serialize)]
struct Row {
    backend: String,
    metric: String,
    value: f64,
    unit: String,
    /// Share of the loopback ceiling measured in the same run.
    ratio_of_ceiling: Option<f64>,
    target: String,
    /// With several runs: the lowest and the highest of their values, and
    /// of their shares of the ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_range: Option<[f64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_range: Option<[f64; 2]>,
}

fn row(backend: &str, metric: &str, value: f64, unit: &str, ceiling: Option<f64>, target: &str) -> Row {
    Row {
        backend: backend.into(),
        metric: metric.into(),
        // Two decimals, four for small figures (CPU seconds per 1,000).
        value: if value.abs() >= 1.0 { (value * 100.0).round() / 100.0 } else { (value * 10000.0).round() / 10000.0 },
        unit: unit.into(),
        ratio_of_ceiling: ceiling.map(|c| (value / c * 1000.0).round() / 1000.0),
        target: target.into(),
        value_range: None,
        ratio_range: None,
    }
}

/// One row per figure of several runs: the median of the runs' values and
/// of their shares of the ceiling, with the range of each.
fn median_rows(runs: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = runs.first() else { return Vec::new() };
    let median_and_range = |mut values: Vec<f64>| -> Option<(f64, [f64; 2])> {
        values.sort_by(f64::total_cmp);
        let (lowest, highest) = (*values.first()?, *values.last()?);
        let mid = values.len() / 2;
        let median = if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] };
        Some((median, [lowest, highest]))
    };
    first
        .iter()
        .map(|r| {
            let same: Vec<&Row> = runs
                .iter()
                .filter_map(|rows| rows.iter().find(|x| x.backend == r.backend && x.metric == r.metric))
                .collect();
            let (value, value_range) =
                median_and_range(same.iter().map(|x| x.value).collect()).expect("the first run has the row");
            let ratio = median_and_range(same.iter().filter_map(|x| x.ratio_of_ceiling).collect());
            let several = runs.len() > 1;
            Row {
                backend: r.backend.clone(),
                metric: r.metric.clone(),
                value,
                unit: r.unit.clone(),
                ratio_of_ceiling: ratio.map(|(median, _)| median),
                target: r.target.clone(),
                value_range: several.then_some(value_range),
                ratio_range: ratio.filter(|_| several).map(|(_, range)| range),
            }
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Api {
    http: reqwest::Client,
    base: String,
    /// host:port of the server, for the load generators.
    addr: String,
    key: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.key).json(&body).send().await?;
        if !r.status().is_success() {
            bail!("POST {path}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(r.json().await.unwrap_or(Value::Null))
    }

    async fn webhook(&self, url: &str, paused: bool) -> anyhow::Result<String> {
        let v = self.post("/v2/webhooks", json!({"url": url, "event_types": ["job_created"]})).await?;
        let uuid = v["webhook_uuid"].as_str().context("webhook_uuid")?.to_string();
        if paused {
            self.post(&format!("/v2/webhooks/{uuid}/pause"), json!({})).await?;
        }
        Ok(uuid)
    }

    /// Deletes a phase's webhook once the phase is over. Merely paused, it
    /// would still get a request for every later event (held, not sent):
    /// until the sixth round the end-to-end phase wrote five requests per
    /// event for its four webhooks, the drain's paused one included.
    async fn remove_webhook(&self, uuid: &str) -> anyhow::Result<()> {
        let r = self.http.delete(format!("{}/v2/webhooks/{uuid}", self.base)).bearer_auth(&self.key).send().await?;
        if !r.status().is_success() {
            bail!("DELETE webhook {uuid}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Job creates for [`blast`].
    fn create_job(&self) -> impl Fn(usize) -> Call + Send + Sync + 'static {
        |i| Call {
            method: hyper::Method::POST,
            path: "/v2/jobs".into(),
            body: format!(r#"{{"description":"bench job {i}","external_order_id":"bench"}}"#).into(),
        }
    }
}

/// Measures one backend; `db` is a fresh database URL.
async fn measure(args: &Args, backend: &str, db: &str, ceiling: f64, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let key = create_account(&args.bin, db)?;
    let server = start_server(&args.bin, db, None).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
    let api = Api { http, base: server.base.clone(), addr: server.addr(), key };
    let (url, receiver) = start_receiver().await?;

    let run = |p: Phase| args.phases.contains(&p);
    if run(Phase::Api) {
        api_throughput(args, backend, &api, rows).await?;
    }
    if run(Phase::Drain) {
        drain(args, backend, &api, &server, &receiver, &url, ceiling, "", rows).await?;
    }
    // The latency phase's rate near saturation follows from the end-to-end
    // figure; without that phase it is 1,000/s as well.
    let mut e2e = 0.0;
    if run(Phase::E2e) {
        e2e = end_to_end(args, backend, &api, &receiver, &url, ceiling, rows).await?;
    }
    if run(Phase::Latency) {
        latency(args, backend, &api, &receiver, &url, e2e, rows).await?;
    }
    rows.push(row(backend, "peak rss (all phases)", server.peak_rss_mb(), "MB", None, ""));
    drop(server);
    // The drain again, with as many POSTs in flight as the ceiling's client
    // has connections: the default lets one webhook have 16, a quarter of
    // them, and on loopback a round trip's wait then leaves the machine
    // partly idle. SQLite only: on PostgreSQL the database, not the
    // connections, sets the pace, and piling up the backlog again would
    // take minutes.
    if run(Phase::Drain) && backend == "sqlite" {
        let server = start_server(&args.bin, db, Some(args.concurrency)).await?;
        let api = Api { base: server.base.clone(), addr: server.addr(), ..api };
        let label = format!(", {} in flight", args.concurrency);
        drain(args, backend, &api, &server, &receiver, &url, ceiling, &label, rows).await?;
    }
    Ok(())
}

/// Durable job creates, then reads (no webhooks yet).
async fn api_throughput(args: &Args, backend: &str, api: &Api, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let secs = Duration::from_secs(args.seconds);
    let (created, took) = blast(api, args.concurrency, None, Some(secs), api.create_job()).await;
    let creates = created as f64 / took.as_secs_f64();
    rows.push(row(backend, "api job creates", creates, "creates/s", None, ">= 10000/s on SQLite"));
    let some_job = api.post("/v2/jobs", json!({})).await?["job_uuid"].as_str().unwrap_or_default().to_string();
    let path = format!("/v2/jobs/{some_job}");
    let (read, took) = blast(api, args.concurrency, None, Some(secs), move |_| Call {
        method: hyper::Method::GET,
        path: path.clone(),
        body: bytes::Bytes::new(),
    })
    .await;
    rows.push(row(backend, "api job reads", read as f64 / took.as_secs_f64(), "reads/s", None, ""));
    eprintln!("[{backend}] api: {creates:.0} creates/s, {:.0} reads/s", read as f64 / took.as_secs_f64());
    Ok(())
}

/// Events pile up for a paused webhook, then it is resumed.
#[allow(clippy::too_many_arguments)]
async fn drain(
    args: &Args,
    backend: &str,
    api: &Api,
    server: &Server,
    receiver: &Receiver,
    url: &str,
    ceiling: f64,
    label: &str,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let hook = api.webhook(url, true).await?;
    let (piled, took) = blast(api, args.concurrency, Some(args.drain_events), None, api.create_job()).await;
    eprintln!("[{backend}] piled up {piled} events in {took:.1?}");
    let before = receiver.count.load(Ordering::Relaxed);
    let cpu_before = server.cpu_seconds();
    api.post(&format!("/v2/webhooks/{hook}/resume"), json!({})).await?;
    let drained = wait_count(receiver, before + piled as u64, Duration::from_secs(600)).await;
    let delivered = receiver.count.load(Ordering::Relaxed) - before;
    let cpu = server.cpu_seconds() - cpu_before;
    let drain_rate = delivered as f64 / drained.as_secs_f64();
    rows.push(row(
        backend,
        &format!("drain rate{label}"),
        drain_rate,
        "deliveries/s",
        Some(ceiling),
        ">= 50% of ceiling",
    ));
    rows.push(row(
        backend,
        &format!("cpu per 1000 deliveries (drain{label})"),
        cpu / (delivered as f64 / 1000.0),
        "cpu-seconds",
        None,
        "",
    ));
    eprintln!("[{backend}] drained {delivered}{label} in {drained:.1?}: {drain_rate:.0}/s, {cpu:.1} cpu-s");
    api.remove_webhook(&hook).await?;
    Ok(())
}

/// Creates at full speed fan out to `--webhooks` webhooks; returns the
/// deliveries per second.
async fn end_to_end(
    args: &Args,
    backend: &str,
    api: &Api,
    receiver: &Receiver,
    url: &str,
    ceiling: f64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<f64> {
    let secs = Duration::from_secs(args.seconds);
    let mut hooks = Vec::new();
    for _ in 0..args.webhooks {
        hooks.push(api.webhook(url, false).await?);
    }
    let before = receiver.count.load(Ordering::Relaxed);
    let started = Instant::now();
    let (created, creating) = blast(api, args.concurrency, None, Some(secs), api.create_job()).await;
    let delivered_meanwhile = receiver.count.load(Ordering::Relaxed) - before;
    let expected = before + (created * args.webhooks) as u64;
    wait_count(receiver, expected, Duration::from_secs(300)).await;
    let took = started.elapsed();
    let e2e = (receiver.count.load(Ordering::Relaxed) - before) as f64 / took.as_secs_f64();
    rows.push(row(backend, "end-to-end deliveries", e2e, "deliveries/s", Some(ceiling), ">= 25% of ceiling"));
    eprintln!(
        "[{backend}] end to end with {} webhooks: {e2e:.0} deliveries/s ({created} events in {creating:.1?}, \
         {delivered_meanwhile} deliveries meanwhile, the last after {took:.1?})",
        args.webhooks
    );
    for h in hooks {
        api.remove_webhook(&h).await?;
    }
    Ok(e2e)
}

/// Latency from the API's 2xx to the receiver, one webhook, paced.
async fn latency(
    args: &Args,
    backend: &str,
    api: &Api,
    receiver: &Arc<Receiver>,
    url: &str,
    e2e: f64,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let secs = Duration::from_secs(args.seconds);
    let hook = api.webhook(url, false).await?;
    let near = args.latency_rate.unwrap_or((e2e / args.webhooks as f64 * 0.8).max(1000.0));
    for (label, rate) in [("1000/s", 1000.0), ("near saturation", near)] {
        let lat = paced_latency(api, receiver, rate, secs).await?;
        rows.push(row(backend, &format!("latency p50 at {label}"), lat.0, "ms", None, ""));
        rows.push(row(
            backend,
            &format!("latency p99 at {label}"),
            lat.1,
            "ms",
            None,
            if label == "1000/s" { "<= 5 ms" } else { "" },
        ));
        rows.push(row(backend, &format!("latency max at {label}"), lat.2, "ms", None, ""));
        eprintln!("[{backend}] latency at {rate:.0}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", lat.0, lat.1, lat.2);
    }
    api.remove_webhook(&hook).await?;
    Ok(())
}

/// Creates jobs at `rate` per second for `secs`; returns p50, p99, max in ms.
///
/// The creates go out over hyper's bare keep-alive connections, like the
/// other load generators: a tick every 1/`rate` s is handed, round robin,
/// to one of 64 workers, each with a connection of its own. (Until the
/// sixth round this phase used reqwest with a task per create; near
/// saturation, that client took the CPU the server needed to keep up.)
async fn paced_latency(
    api: &Api,
    receiver: &Arc<Receiver>,
    rate: f64,
    secs: Duration,
) -> anyhow::Result<(f64, f64, f64)> {
    use http_body_util::BodyExt;
    const WORKERS: usize = 64;
    receiver.arrivals.lock().unwrap().clear();
    receiver.track.store(true, Ordering::Relaxed);
    let acks: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let auth = hyper::header::HeaderValue::from_str(&format!("Bearer {}", api.key))?;
    let host = hyper::header::HeaderValue::from_str(&api.addr)?;
    let mut ticks = Vec::with_capacity(WORKERS);
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        ticks.push(tx);
        let mut send = connect(&api.addr).await?;
        let (acks, auth, host) = (acks.clone(), auth.clone(), host.clone());
        workers.push(tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let call = Call {
                    method: hyper::Method::POST,
                    path: "/v2/jobs".into(),
                    body: bytes::Bytes::from_static(br#"{"description":"latency"}"#),
                };
                let Ok(response) = send.send_request(call.request(&host, &auth)).await else { return };
                let at = Instant::now();
                let Ok(body) = response.into_body().collect().await else { return };
                if let Ok(v) = serde_json::from_slice::<Value>(&body.to_bytes())
                    && let Some(u) = v["job_uuid"].as_str()
                {
                    acks.lock().unwrap().insert(u.to_string(), at);
                }
            }
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < secs {
        let due = started + interval.mul_f64(n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let _ = ticks[n as usize % WORKERS].send(());
        n += 1;
    }
    drop(ticks);
    for w in workers {
        let _ = w.await;
    }
    let expect = acks.lock().unwrap().len();
    let wait_started = Instant::now();
    while receiver.arrivals.lock().unwrap().len() < expect && wait_started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    receiver.track.store(false, Ordering::Relaxed);
    let arrivals = receiver.arrivals.lock().unwrap();
    let mut ms: Vec<f64> = acks
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(u, ack)| arrivals.get(u).map(|a| a.saturating_duration_since(*ack).as_secs_f64() * 1000.0))
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99), ms.last().copied().unwrap_or(f64::NAN)))
}

/// Peak RSS of a fresh server holding `pending` requests (10 paused webhooks).
async fn memory(args: &Args, backend: &str, db: &str, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let key = create_account(&args.bin, db)?;
    let server = start_server(&args.bin, db, None).await?;
    let api = Api { http: reqwest::Client::new(), base: server.base.clone(), addr: server.addr(), key };
    for _ in 0..10 {
        api.webhook("http://127.0.0.1:9/never", true).await?;
    }
    let (created, took) = blast(&api, args.concurrency, Some(args.pending / 10), None, api.create_job()).await;
    eprintln!("[{backend}] {} pending requests written in {took:.1?}", created * 10);
    // Let the engine look at its queue a few times with the backlog in place.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rows.push(row(
        backend,
        &format!("peak rss with {} pending requests", created * 10),
        server.peak_rss_mb(),
        "MB",
        None,
        "<= 300 MB",
    ));
    Ok(())
}

/// A fresh PostgreSQL schema URL.
async fn fresh_schema(base: &str) -> anyhow::Result<String> {
    let schema = format!("bench_{}", std::process::id());
    let status = Command::new("psql")
        .args([
            base,
            "-qc",
            &format!(
                "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ),
        ])
        .status()?;
    if !status.success() {
        bail!("could not create schema {schema} (psql)");
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Drops the schema [`fresh_schema`] made (a failure is only reported).
fn drop_schema(base: &str) {
    let schema = format!("bench_{}", std::process::id());
    let dropped = Command::new("psql")
        .args([base, "-qc", &format!("SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .status();
    if !dropped.is_ok_and(|s| s.success()) {
        eprintln!("could not drop schema {schema}");
    }
}

/// A ~1 KB JSON body, the size of a job's webhook.
fn ceiling_body() -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(
        &json!({"event_uuid": "x", "event_type": "job_created", "job": {"description": "x".repeat(900)}}),
    )?)
}

/// Runs `concurrency` copies of `worker` (given the deadline and the counter
/// to bump per 2xx) for `seconds`; returns the 2xx answers per second.
async fn rate_of<F, Fut>(concurrency: usize, seconds: u64, worker: F) -> anyhow::Result<f64>
where
    F: Fn(Instant, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..concurrency).map(|_| tokio::spawn(worker(deadline, done.clone()))).collect();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The loopback ceiling with reqwest, the usual Rust HTTP client.
async fn reqwest_ceiling(args: &Args) -> anyhow::Result<f64> {
    let (url, _receiver) = start_receiver().await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
    let body = bytes::Bytes::from(ceiling_body()?);
    rate_of(args.concurrency, args.seconds, |deadline, done| {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            while Instant::now() < deadline {
                let sent = http.post(&url).header("content-type", "application/json").body(body.clone()).send().await;
                if let Ok(r) = sent
                    && r.status().is_success()
                    && r.bytes().await.is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }
    })
    .await
}

/// The loopback ceiling with hyper's bare HTTP/1.1 connections (what
/// fieldhook delivers with): one keep-alive connection per worker.
async fn hyper_ceiling(args: &Args) -> anyhow::Result<f64> {
    use http_body_util::{BodyExt, Full};
    let (url, _receiver) = start_receiver().await?;
    let addr = url.trim_start_matches("http://").trim_end_matches("/hook").to_string();
    let body = bytes::Bytes::from(ceiling_body()?);
    rate_of(args.concurrency, args.seconds, |deadline, done| {
        let (addr, body) = (addr.clone(), body.clone());
        async move {
            let mut send = connect(&addr).await?;
            while Instant::now() < deadline {
                let request = hyper::Request::post("/hook")
                    .header("host", &addr)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))?;
                let response = send.send_request(request).await?;
                if response.status().is_success() {
                    response.into_body().collect().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }
    })
    .await
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name"))?.split(':').nth(1).map(|s| s.trim().to_string()))
        .unwrap_or_default();
    json!({"cores": cores, "memory_gb": mem_gb, "cpu": cpu})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = machine();
    eprintln!("machine: {machine}");
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    // --memory-only skips the ceiling and the timed phases altogether.
    let timed_runs = if args.memory_only { 0 } else { args.runs };
    for run in 0..timed_runs {
        if args.runs > 1 {
            eprintln!("run {} of {}", run + 1, args.runs);
        }
        let mut rows = Vec::new();
        // The ceiling is the faster of two plain keep-alive clients, so that
        // fieldhook's lean client does not flatter its own ratios.
        let with_reqwest = reqwest_ceiling(&args).await?;
        let mut tries = Vec::new();
        for _ in 0..args.ceiling_tries {
            tries.push(hyper_ceiling(&args).await?);
        }
        let with_hyper = tries.iter().copied().fold(0.0, f64::max);
        let ceiling = with_reqwest.max(with_hyper);
        let tries: Vec<String> = tries.iter().map(|t| format!("{t:.0}")).collect();
        eprintln!("ceiling: {ceiling:.0} POSTs/s (reqwest {with_reqwest:.0}, hyper {})", tries.join(", "));
        rows.push(row("loopback", "ceiling: plain keep-alive client", ceiling, "posts/s", Some(ceiling), ""));
        rows.push(row("loopback", "reqwest keep-alive client", with_reqwest, "posts/s", Some(ceiling), ""));
        rows.push(row("loopback", "hyper keep-alive connections", with_hyper, "posts/s", Some(ceiling), ""));
        let file = dir.path().join(format!("bench-{run}.db"));
        if !args.postgres_only {
            measure(&args, "sqlite", &format!("sqlite://{}", file.display()), ceiling, &mut rows).await?;
        }
        // Each run starts from an empty database; the last one's is not
        // needed any more (it holds hundreds of thousands of rows).
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        runs.push(rows);
    }
    let mut rows = median_rows(&runs);
    if args.memory_only || (args.phases.contains(&Phase::Memory) && !args.postgres_only) {
        let mem_db = format!("sqlite://{}", dir.path().join("memory.db").display());
        memory(&args, "sqlite", &mem_db, &mut rows).await?;
    }
    if let (Some(pg), false) = (&args.postgres, args.memory_only) {
        let ceiling = rows[0].value;
        let url = fresh_schema(pg).await?;
        let measured = measure(&args, "postgres", &url, ceiling, &mut rows).await;
        // The schema holds hundreds of thousands of rows: not left behind.
        drop_schema(pg);
        measured?;
    }

    let several_runs = runs.len() > 1;
    if several_runs {
        println!("medians of {} runs; the ranges are the lowest and highest run", runs.len());
    }
    println!("{:<10} {:<48} {:>12} {:<14} {:>9}  target", "backend", "metric", "value", "unit", "ceiling");
    for r in &rows {
        let mut ratio = r.ratio_of_ceiling.map_or(String::new(), |x| format!("{:.1} %", x * 100.0));
        if let Some([lowest, highest]) = r.ratio_range {
            ratio = format!("{ratio} ({:.1}–{:.1})", lowest * 100.0, highest * 100.0);
        }
        // CPU-seconds per 1,000 deliveries are hundredths: two decimals
        // would print 0.01 for anything from 0.005 to 0.015.
        let decimals = if r.value.abs() < 1.0 { 4 } else { 2 };
        println!(
            "{:<10} {:<48} {:>12.*} {:<14} {:>9}  {}",
            r.backend, r.metric, decimals, r.value, r.unit, ratio, r.target
        );
    }
    let mut report =
        json!({"machine": machine, "seconds_per_phase": args.seconds, "concurrency": args.concurrency, "rows": rows});
    if several_runs {
        report["runs"] = json!(runs);
    }
    if let Some(parent) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("report written to {}", args.out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ceiling: f64, drain: f64) -> Vec<Row> {
        vec![
            row("loopback", "ceiling", ceiling, "posts/s", Some(ceiling), ""),
            row("sqlite", "drain rate", drain, "deliveries/s", Some(ceiling), ""),
            row("sqlite", "peak rss", 50.0, "MB", None, ""),
        ]
    }

    #[test]
    fn several_runs_give_medians_of_values_and_of_shares_with_their_ranges() {
        // Shares 40 %, 25 %, 50 %: the median share is the middle run's own
        // share, not the median drain over the median ceiling (30 %).
        let rows = median_rows(&[run(100.0, 40.0), run(120.0, 30.0), run(80.0, 40.0)]);
        let drain = &rows[1];
        assert_eq!(drain.value, 40.0);
        assert_eq!(drain.value_range, Some([30.0, 40.0]));
        assert_eq!(drain.ratio_of_ceiling, Some(0.4));
        assert_eq!(drain.ratio_range, Some([0.25, 0.5]));
        assert_eq!(rows[2].ratio_range, None, "a figure without a share has no share range");
        // An even number of runs: the mean of the middle two.
        let rows = median_rows(&[run(100.0, 40.0), run(100.0, 30.0)]);
        assert_eq!(rows[1].value, 35.0);
        assert_eq!(rows[1].ratio_of_ceiling, Some(0.35));
    }

    #[test]
    fn one_run_is_reported_as_it_was_measured() {
        let rows = median_rows(&[run(100.0, 40.0)]);
        assert_eq!(rows[1].value, 40.0);
        assert_eq!(rows[1].ratio_of_ceiling, Some(0.4));
        assert_eq!((rows[1].value_range, rows[1].ratio_range), (None, None));
        assert!(median_rows(&[]).is_empty());
    }
}
