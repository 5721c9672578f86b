//! Wiring: a [`Mirror`] is built from a [`Config`] and a bound listener and
//! runs until a shutdown future resolves — the binary and the tests start it
//! the same way. Running it serves the webhook endpoint and two background
//! loops: the catch-up at start (as soon as there are credentials), and the
//! gap watcher, which catches up resources whose gap outlasted the gap
//! timeout.

use crate::catch_up::{CatchUp, CatchUpError, CatchUpReport, Gaps};
use crate::config::Config;
use crate::replica::Replica;
use crate::server_api::ServerApi;
use crate::stats::{Stats, StatsSnapshot};
use anyhow::Context;
use fieldhook_receiver::Verifier;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What the webhook handler and the background loops share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) verifier: Verifier,
    pub(crate) replica: Replica,
    pub(crate) api: Arc<ServerApi>,
    pub(crate) catch_up: CatchUp,
    pub(crate) gaps: Gaps,
    pub(crate) stats: Arc<Stats>,
}

/// A mirror ready to run: replica open, listener bound.
#[derive(Debug)]
pub struct Mirror {
    listener: TcpListener,
    shared: Arc<Shared>,
    gap_timeout: Duration,
}

/// A handle on a running (or built) mirror: its replica, counters and
/// catch-up, for embedders and tests.
#[derive(Debug, Clone)]
pub struct MirrorHandle {
    shared: Arc<Shared>,
}

impl Mirror {
    /// Opens the replica and sets up verification and the API client.
    ///
    /// # Errors
    ///
    /// A configuration that cannot work (no secret to verify with, a
    /// malformed signing secret) or a replica that cannot be opened, with a
    /// message naming the setting.
    pub async fn build(config: &Config, listener: TcpListener) -> anyhow::Result<Mirror> {
        let mut verifier = Verifier::builder();
        if let Some(secret) = &config.signing_secret {
            verifier = verifier.signing_secret(secret.expose());
        }
        if let Some(secret) = &config.planado_secret {
            verifier = verifier.planado_secret(secret.expose());
        }
        let verifier = verifier.build().context("FIELDHOOK_MIRROR_SIGNING_SECRET / FIELDHOOK_MIRROR_PLANADO_SECRET")?;
        let replica = Replica::open(&config.database)
            .await
            .with_context(|| format!("FIELDHOOK_MIRROR_DATABASE: cannot open {}", config.database.display()))?;
        let api = Arc::new(
            ServerApi::new(&config.server_url, config.api_key.clone()).context("cannot set up the HTTP client")?,
        );
        let stats = Arc::new(Stats::default());
        let catch_up = CatchUp::new(replica.clone(), api.clone(), stats.clone());
        let shared = Arc::new(Shared { verifier, replica, api, catch_up, gaps: Gaps::default(), stats });
        Ok(Mirror { listener, shared, gap_timeout: config.gap_timeout })
    }

    /// Where the webhook endpoint listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// A handle that outlives [`run_until`](Self::run_until)'s move.
    pub fn handle(&self) -> MirrorHandle {
        MirrorHandle { shared: self.shared.clone() }
    }

    /// Serves deliveries and runs the catch-up loops until `shutdown`
    /// resolves; then lets the deliveries in flight finish.
    ///
    /// # Errors
    ///
    /// When the listener fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "fieldhook-mirror is listening on POST /webhook");
        let mut background = JoinSet::new();
        background.spawn(catch_up_at_start(self.shared.clone()));
        background.spawn(watch_gaps(self.shared.clone(), self.gap_timeout));
        let app = crate::webhook::router(self.shared.clone());
        let served = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        // Catch-up writes are one transaction per version: stopping midway
        // loses nothing, the next start continues.
        background.shutdown().await;
        tracing::info!("fieldhook-mirror stopped");
        served.context("the webhook listener failed")
    }
}

impl MirrorHandle {
    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.shared.replica
    }

    /// What the mirror did so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Catches the whole account up now (see [`CatchUp::all`]).
    ///
    /// # Errors
    ///
    /// As [`CatchUp::all`].
    pub async fn catch_up(&self) -> Result<CatchUpReport, CatchUpError> {
        self.shared.catch_up.all().await
    }
}

/// The first catch-up: whatever changed while the mirror was away. Without
/// an API key it waits for the first delivery's token; a failure (server
/// unreachable) is retried with a growing pause.
async fn catch_up_at_start(shared: Arc<Shared>) {
    let mut pause = Duration::from_millis(500);
    loop {
        if !shared.api.has_credentials() {
            tracing::info!("no API key: the start-up catch-up waits for a delivery's X-Planado-Api-Token");
            shared.api.credentials().await;
        }
        match shared.catch_up.all().await {
            Ok(report) => {
                tracing::info!(resources_read = report.resources_read, applied = report.applied, "caught up at start");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "the start-up catch-up failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Fills gaps that fieldhook's retries did not fill within `timeout` (the
/// missing delivery may be hours away on the default retry schedule, or
/// have run out of retries for good).
async fn watch_gaps(shared: Arc<Shared>, timeout: Duration) {
    // Looking a few times per timeout bounds how late a gap is noticed,
    // without spinning on a short timeout.
    let tick = (timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        for (kind, uuid) in shared.gaps.take_overdue(timeout) {
            shared.stats.gap_catch_up();
            match shared.catch_up.entity(kind, uuid).await {
                Ok(applied) => {
                    tracing::info!(%kind, %uuid, applied, "a gap outlasted the gap timeout: filled from history")
                }
                Err(e) => {
                    tracing::warn!(%kind, %uuid, error = %e, "could not fill a gap from history; will try again");
                    shared.gaps.opened(kind, uuid);
                }
            }
        }
    }
}
