//! Wiring: a [`Server`] is built from a [`Config`] and a bound listener, and
//! runs until a shutdown future resolves — so tests start the real server on
//! port 0 and stop it, exactly as the binary does.

use crate::api::{self, AppState, AppStateInner, auth};
use crate::clock::SharedClock;
use crate::config::{Config, LogFormat};
use crate::delivery::{DeliveryConfig, Engine};
use crate::domain::scope::Scopes;
use crate::domain::webhook::RetryPolicy;
use crate::storage::{Db, OpenOptions, accounts};
use anyhow::Context;
use rand::RngCore;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// A server ready to run: database migrated, listener bound.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    config: Config,
    /// The delivery engine, on `worker` and `all` nodes.
    engine: Option<Engine>,
}

impl Server {
    /// Opens and migrates the database, creates the `default` account on the
    /// very first start, and binds the listener.
    ///
    /// # Errors
    /// Any start-up failure, with a message that says what to fix.
    pub async fn build(config: Config, clock: SharedClock) -> anyhow::Result<Server> {
        crate::metrics::handle();
        let db = Db::open(&config.database_url, OpenOptions { exclusive: true }).await?;
        db.migrate().await?;
        bootstrap(&db, &clock).await?;
        let push_url = config.push_url.as_ref().map(|u| u.to_string());
        db.committer
            .write(move |conn| {
                Box::pin(async move { crate::storage::notifications::configure_push(conn, push_url.as_deref()).await })
            })
            .await?;
        let secret = token_secret(&db).await?;
        let tokens = auth::TokenSigner::new(secret);
        let engine = config
            .role
            .delivers()
            .then(|| Engine::new(db.clone(), clock.clone(), delivery_config(&config), tokens.clone()));
        let keys = (db.backend == crate::storage::Backend::Sqlite).then(Default::default);
        let state = AppState::new(AppStateInner {
            db,
            clock,
            limiter: auth::limiter(config.rate_limit),
            keys,
            tokens,
            allow_private_targets: config.allow_private_targets,
            push_url: config.push_url.as_ref().map(|u| u.to_string()),
        });
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("FIELDHOOK_LISTEN: cannot listen on {}", config.listen))?;
        Ok(Server { listener, state, config, engine })
    }

    /// The delivery engine, if this node delivers.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets the
    /// requests in flight finish.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), role = ?self.config.role, "fieldhook is listening");
        let stop = tokio_util::sync::CancellationToken::new();
        let delivering = self.engine.map(|engine| tokio::spawn(engine.run(stop.clone())));
        let app = api::router(self.state.clone(), self.config.role.serves_api());
        let served = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        // The API has stopped accepting: let deliveries in flight finish and
        // hand back what this node claimed.
        stop.cancel();
        if let Some(delivering) = delivering {
            let _ = delivering.await;
        }
        tracing::info!("fieldhook stopped");
        served.map_err(Into::into)
    }
}

fn delivery_config(config: &Config) -> DeliveryConfig {
    DeliveryConfig {
        timeout: config.delivery_timeout,
        policy: RetryPolicy {
            schedule: config.retry_schedule.clone(),
            jitter: config.retry_jitter,
            suspend_min_failures: config.suspend_min_failures,
            suspend_after: config.suspend_after,
            probe_interval: config.probe_interval,
        },
        max_in_flight_per_webhook: config.max_in_flight_per_webhook as usize,
        allow_private_targets: config.allow_private_targets,
        token_ttl: config.temp_token_ttl,
        retention: config.request_retention,
    }
}

/// First start on an empty database: create the `default` account and print
/// its owner key once. A settings row makes this happen once even when
/// several nodes start together on one PostgreSQL.
async fn bootstrap(db: &Db, clock: &SharedClock) -> anyhow::Result<()> {
    let now = clock.now();
    let created = db
        .committer
        .write(move |conn| {
            Box::pin(async move {
                if accounts::account_count(conn).await? > 0 {
                    return Ok(None);
                }
                let me = uuid::Uuid::new_v4().to_string();
                if accounts::setting_or_insert(conn, "bootstrapped_by", &me).await? != me {
                    return Ok(None);
                }
                let account = accounts::create_account(conn, "default", now).await?;
                let scopes = Scopes::parse(["*"]).expect("valid scope");
                let key = accounts::create_key(conn, account, "owner", &scopes, now).await?;
                Ok(Some((account, key.api_key)))
            })
        })
        .await?;
    if let Some((account, key)) = created {
        eprintln!(
            "\n=== fieldhook: first start. Created account \"default\" ({account}).\n\
             === Its owner API key (scope *) is shown only this once:\n\
             ===   {key}\n"
        );
    }
    Ok(())
}

/// The secret that signs temporary tokens, shared by every node.
async fn token_secret(db: &Db) -> anyhow::Result<Vec<u8>> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let fresh = hex::encode(fresh);
    let value = db
        .committer
        .write(move |conn| Box::pin(async move { accounts::setting_or_insert(conn, "token_secret", &fresh).await }))
        .await?;
    hex::decode(value).context("the stored token secret is not hex")
}

/// Installs the global log subscriber (stderr).
pub fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("FIELDHOOK_LOG is not a valid filter: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests start many servers in one process) is harmless.
    let _ = result;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
