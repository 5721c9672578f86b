//! The `fieldhook-mirror` binary: parses the command line, binds the
//! listener and hands over to the library.

use anyhow::Context;
use clap::Parser;
use fieldhook_mirror::{Config, Mirror};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fieldhook-mirror: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log).context("FIELDHOOK_MIRROR_LOG")?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("FIELDHOOK_MIRROR_LISTEN: cannot listen on {}", config.listen))?;
    let mirror = Mirror::build(&config, listener).await?;
    mirror.run_until(shutdown_signal()).await
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
