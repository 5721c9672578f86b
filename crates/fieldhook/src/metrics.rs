//! Prometheus metrics (`GET /metrics`), through the `metrics` facade and its
//! Prometheus exporter. Every name is defined here, so an operator's
//! dashboard and the code agree on one list.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// HTTP requests served, by `method`, `route` (the matched path template)
/// and `status`.
pub const HTTP_REQUESTS: &str = "fieldhook_http_requests_total";
/// HTTP request latency in seconds, by `method` and `route`.
pub const HTTP_DURATION: &str = "fieldhook_http_request_duration_seconds";
/// Events written to the outbox, by `event_type`.
pub const EVENTS: &str = "fieldhook_events_total";
/// Delivery attempts, by `outcome`: `success`, `http_3xx`, `http_4xx`,
/// `http_5xx`, or the `error_type` (`timeout`, `connection_failure`, …).
pub const DELIVERIES: &str = "fieldhook_deliveries_total";
/// Seconds from an event's commit to the receiver's 2xx on its first attempt.
pub const DELIVERY_LATENCY: &str = "fieldhook_delivery_latency_seconds";
/// Seconds one attempt took (the HTTP exchange alone).
pub const ATTEMPT_DURATION: &str = "fieldhook_delivery_attempt_duration_seconds";
/// Retries scheduled after failed attempts.
pub const RETRIES: &str = "fieldhook_retries_scheduled_total";
/// Events whose retries ran out for a webhook.
pub const EXHAUSTED: &str = "fieldhook_deliveries_exhausted_total";
/// Requests claimed by one claim of a worker.
pub const CLAIM_BATCH: &str = "fieldhook_claim_batch_size";
/// Requests handed straight from their commit to the delivery engine
/// (SQLite), with no claim.
pub const HANDED_OVER: &str = "fieldhook_requests_handed_over_total";
/// Writes (API changes, batches of delivery results, …) sharing one
/// transaction of the group committer: one fsync for all of them.
pub const COMMIT_BATCH: &str = "fieldhook_commit_batch_size";
/// Delivery attempts recorded by one write.
pub const RESULT_BATCH: &str = "fieldhook_result_batch_size";
/// Requests waiting, by `state`: `due` (send now), `retrying` (waiting for
/// their time), `held` (webhook paused or suspended).
pub const PENDING: &str = "fieldhook_pending_requests";
/// Webhooks by `status`: `active`, `paused`, `suspended`.
pub const WEBHOOKS: &str = "fieldhook_webhooks";
/// Requests this node is sending right now.
pub const IN_FLIGHT: &str = "fieldhook_requests_in_flight";

const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process-wide recorder (installed once; tests start many servers in
/// one process and share it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), &BATCH_BUCKETS))
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding
            // program's); then ours renders what it sees, which is nothing.
            let _ = metrics::set_global_recorder(recorder);
            start_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often the histograms' recorded samples are folded into their
/// buckets without a scrape.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Folds the histograms' samples into their buckets every [`UPKEEP_EVERY`].
/// The exporter keeps each sample until a scrape or an upkeep reads it, and
/// a recorder built with `build_recorder` gets no upkeep of its own: a
/// server nobody scraped grew by every HTTP request and delivery it made.
/// A thread, not a task: the recorder is the process's and outlives any
/// one runtime (the tests start many).
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new().name("fieldhook-metrics".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the metrics upkeep; histograms grow until /metrics is scraped");
    }
}

/// The outcome label of a delivery attempt; borrowed (no allocation per
/// attempt) for every answer with a status code.
pub fn outcome(code: Option<u16>, error_type: Option<&str>) -> std::borrow::Cow<'static, str> {
    match (error_type, code) {
        (Some(e), _) => e.replace(' ', "_").into(),
        (None, Some(c)) => match c / 100 {
            2 => "success",
            1 => "http_1xx",
            3 => "http_3xx",
            4 => "http_4xx",
            5 => "http_5xx",
            _ => "unknown",
        }
        .into(),
        (None, None) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    /// The process's peak resident memory, in bytes (Linux).
    fn peak_rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("Linux");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmHWM in /proc/self/status");
        kb * 1024
    }

    /// Unscraped, the histograms' samples are folded away every second:
    /// 15,000,000 samples recorded over six seconds or more raise the peak
    /// memory by about what one second's take (some 40 MB here), not by
    /// what all of them take kept (236 MB without the upkeep).
    #[test]
    fn histogram_samples_do_not_pile_up_without_a_scrape() {
        let _handle = super::handle();
        let histogram = metrics::histogram!("fieldhook_test_upkeep_seconds");
        let before = peak_rss();
        for _ in 0..60 {
            for i in 0..250_000 {
                histogram.record(f64::from(i % 100) / 1000.0);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let grown = peak_rss().saturating_sub(before);
        assert!(grown < 120 << 20, "the peak memory grew by {} MB", grown >> 20);
    }
}
