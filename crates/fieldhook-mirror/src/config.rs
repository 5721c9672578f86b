//! The mirror's settings: one clap struct, every field a flag and a
//! `FIELDHOOK_MIRROR_*` environment variable, validated once at start so a
//! bad value stops the mirror naming the setting.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// fieldhook-mirror: keeps a local SQLite replica of a fieldhook account's jobs,
/// clients and sites, from its webhooks (full replication) and, where they
/// leave a gap, from its history API.
#[derive(Debug, Clone, Parser)]
#[command(name = "fieldhook-mirror", version)]
pub struct Config {
    /// Address the webhook endpoint (`POST /webhook`) listens on; port 0 picks a free port.
    #[arg(long, env = "FIELDHOOK_MIRROR_LISTEN", default_value = "127.0.0.1:7500")]
    pub listen: SocketAddr,

    /// SQLite file holding the replica (created if missing).
    #[arg(long, env = "FIELDHOOK_MIRROR_DATABASE", default_value = "fieldhook-mirror.db")]
    pub database: PathBuf,

    /// Base URL of the fieldhook server, for catch-up through its history API.
    #[arg(long, env = "FIELDHOOK_MIRROR_SERVER_URL", default_value = "http://127.0.0.1:7400")]
    pub server_url: String,

    /// API key for catch-up (scopes jobs:read, clients:read, sites:read). Without it the
    /// mirror uses the temporary X-Planado-Api-Token of the latest delivery, so catch-up
    /// waits for a delivery.
    #[arg(long, env = "FIELDHOOK_MIRROR_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// The webhook's `signing_secret` (`whsec_…`): deliveries must carry a valid Standard
    /// Webhooks signature made with it.
    #[arg(long, env = "FIELDHOOK_MIRROR_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<Secret>,

    /// The webhook's `secret`: deliveries must carry it as X-Planado-Secret. At least one
    /// of this and --signing-secret is required.
    #[arg(long, env = "FIELDHOOK_MIRROR_PLANADO_SECRET", hide_env_values = true)]
    pub planado_secret: Option<Secret>,

    /// How long a resource may wait for a missing version before the mirror stops waiting
    /// for fieldhook's retry and reads the resource's history instead.
    #[arg(long, env = "FIELDHOOK_MIRROR_GAP_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    pub gap_timeout: Duration,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `fieldhook_mirror=debug`).
    #[arg(long, env = "FIELDHOOK_MIRROR_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// Settings for a mirror of `server_url` that verifies with
    /// `signing_secret`, everything else at its default (listening on a
    /// random local port): what tests and embedders start from.
    pub fn new(database: impl Into<PathBuf>, server_url: impl Into<String>, signing_secret: &str) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: database.into(),
            server_url: server_url.into(),
            api_key: None,
            signing_secret: Some(Secret::from(signing_secret)),
            planado_secret: None,
            gap_timeout: Duration::from_secs(60),
            log: "info".into(),
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("expected a duration such as 500ms, 30s or 5m: {e}"))
}

/// A secret setting (API key, webhook secrets): `Debug` never prints it, so
/// logging the configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_secrets_stay_out_of_debug_output() {
        let config = Config::try_parse_from([
            "fieldhook-mirror",
            "--listen",
            "0.0.0.0:9000",
            "--signing-secret",
            "whsec_abc",
            "--api-key",
            "fh_topsecret",
            "--gap-timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.gap_timeout, Duration::from_secs(90));
        assert_eq!(config.api_key.as_ref().map(Secret::expose), Some("fh_topsecret"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("topsecret") && !shown.contains("whsec_abc"), "{shown}");
    }

    #[test]
    fn a_bad_duration_names_the_setting() {
        let err = Config::try_parse_from(["fieldhook-mirror", "--gap-timeout", "soon"]).unwrap_err().to_string();
        assert!(err.contains("--gap-timeout"), "{err}");
    }
}
