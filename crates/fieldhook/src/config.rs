//! Configuration (operations.md, "Configuration"). Every setting has a flag,
//! an environment variable and a key in the TOML file given by `--config`;
//! precedence is flag > environment > file > built-in default. Values are
//! validated here, at start, and a bad one stops the start naming the
//! setting.

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a `serve` process does (operations.md, "Scale-out").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves `/v2`; sends nothing.
    Api,
    /// Sends webhooks; serves only the service endpoints.
    Worker,
    All,
}

impl Role {
    pub fn serves_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }
    pub fn delivers(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings as given on the command line and in the environment, before
/// the file and the defaults fill the gaps. One macro lists each setting
/// once: its flag, variable, file key, default and meaning.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $field:ident : $env:literal = $default:expr ; )*) => {
        #[derive(Debug, Clone, Default, Args)]
        pub struct Settings {
            /// TOML file with any of these settings (keys as the flags, with `_`).
            #[arg(long, env = "FIELDHOOK_CONFIG", global = true)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env, global = true, help = concat!($($doc,)* " [default: ", $default, "]"))]
                pub $field: Option<String>,
            )*
        }

        /// The same settings as read from the TOML file.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileSettings {
            $( $field: Option<toml::Value>, )*
        }

        impl Settings {
            /// Fills unset settings from the file, then from the defaults.
            fn layered(mut self) -> anyhow::Result<Self> {
                let file: FileSettings = match &self.config {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("--config: cannot read {}", path.display()))?;
                        toml::from_str(&text).with_context(|| format!("--config: {} is not a valid fieldhook config", path.display()))?
                    }
                    None => FileSettings::default(),
                };
                $(
                    if self.$field.is_none() {
                        self.$field = file.$field.map(|v| match v {
                            toml::Value::String(s) => s,
                            other => other.to_string(),
                        });
                    }
                    if self.$field.is_none() {
                        self.$field = Some(String::from($default));
                    }
                )*
                Ok(self)
            }
        }
    };
}

settings! {
    /// `sqlite://PATH` (created if missing) or `postgres://...`.
    database_url: "FIELDHOOK_DATABASE_URL" = "sqlite://fieldhook.db";
    /// API address; port 0 picks a free port (the chosen address is logged).
    listen: "FIELDHOOK_LISTEN" = "127.0.0.1:7400";
    /// `api`, `worker` or `all`.
    role: "FIELDHOOK_ROLE" = "all";
    /// Time limit of one webhook request.
    delivery_timeout: "FIELDHOOK_DELIVERY_TIMEOUT" = "10s";
    /// Delays after each failed attempt; its length is the number of retries.
    retry_schedule: "FIELDHOOK_RETRY_SCHEDULE" = "15s,30s,1m,2m,5m,10m,20m,30m,1h,2h,3h,5h,8h,12h,24h,48h,72h";
    /// ± fraction applied to each retry delay.
    retry_jitter: "FIELDHOOK_RETRY_JITTER" = "0.1";
    /// Requests in flight at once to one webhook.
    max_in_flight_per_webhook: "FIELDHOOK_MAX_IN_FLIGHT_PER_WEBHOOK" = "16";
    /// Consecutive failed attempts before a webhook can be suspended.
    suspend_min_failures: "FIELDHOOK_SUSPEND_MIN_FAILURES" = "20";
    /// ... and no success for this long.
    suspend_after: "FIELDHOOK_SUSPEND_AFTER" = "24h";
    /// How often a suspended webhook is probed.
    probe_interval: "FIELDHOOK_PROBE_INTERVAL" = "5m";
    /// Allow webhook URLs on loopback/private addresses (development and tests).
    allow_private_targets: "FIELDHOOK_ALLOW_PRIVATE_TARGETS" = "false";
    /// Lifetime of the X-Planado-Api-Token handed to receivers.
    temp_token_ttl: "FIELDHOOK_TEMP_TOKEN_TTL" = "60s";
    /// Requests per second per API key (burst 2x); 0 turns the limit off.
    rate_limit: "FIELDHOOK_RATE_LIMIT" = "100";
    /// How long sent requests are kept.
    request_retention: "FIELDHOOK_REQUEST_RETENTION" = "30d";
    /// Push gateway URL for assignee notifications (unset: none).
    push_url: "FIELDHOOK_PUSH_URL" = "";
    /// Log filter (tracing EnvFilter syntax).
    log: "FIELDHOOK_LOG" = "info";
    /// `text` or `json`.
    log_format: "FIELDHOOK_LOG_FORMAT" = "text";
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub role: Role,
    pub delivery_timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub retry_jitter: f64,
    pub max_in_flight_per_webhook: u32,
    pub suspend_min_failures: u32,
    pub suspend_after: Duration,
    pub probe_interval: Duration,
    pub allow_private_targets: bool,
    pub temp_token_ttl: Duration,
    pub rate_limit: u32,
    pub request_retention: Duration,
    pub push_url: Option<url::Url>,
    pub log: String,
    pub log_format: LogFormat,
}

impl Config {
    /// Layers and validates `settings`.
    ///
    /// # Errors
    /// Names the first setting whose value is not understood.
    pub fn load(settings: Settings) -> anyhow::Result<Config> {
        let s = settings.layered()?;
        let get = |v: &Option<String>| v.clone().unwrap_or_default();
        Ok(Config {
            database_url: get(&s.database_url),
            listen: parse_listen(&get(&s.listen)).context("FIELDHOOK_LISTEN")?,
            role: match get(&s.role).as_str() {
                "api" => Role::Api,
                "worker" => Role::Worker,
                "all" => Role::All,
                other => bail!("FIELDHOOK_ROLE must be api, worker or all, got {other:?}"),
            },
            delivery_timeout: duration("FIELDHOOK_DELIVERY_TIMEOUT", &get(&s.delivery_timeout))?,
            retry_schedule: get(&s.retry_schedule)
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| duration("FIELDHOOK_RETRY_SCHEDULE", p))
                .collect::<anyhow::Result<_>>()?,
            retry_jitter: match get(&s.retry_jitter).parse::<f64>() {
                Ok(j) if (0.0..1.0).contains(&j) => j,
                _ => bail!("FIELDHOOK_RETRY_JITTER must be a fraction in [0, 1), got {:?}", get(&s.retry_jitter)),
            },
            max_in_flight_per_webhook: positive(
                "FIELDHOOK_MAX_IN_FLIGHT_PER_WEBHOOK",
                &get(&s.max_in_flight_per_webhook),
            )?,
            suspend_min_failures: positive("FIELDHOOK_SUSPEND_MIN_FAILURES", &get(&s.suspend_min_failures))?,
            suspend_after: duration("FIELDHOOK_SUSPEND_AFTER", &get(&s.suspend_after))?,
            probe_interval: duration("FIELDHOOK_PROBE_INTERVAL", &get(&s.probe_interval))?,
            allow_private_targets: match get(&s.allow_private_targets).as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => bail!("FIELDHOOK_ALLOW_PRIVATE_TARGETS must be true or false, got {other:?}"),
            },
            temp_token_ttl: duration("FIELDHOOK_TEMP_TOKEN_TTL", &get(&s.temp_token_ttl))?,
            rate_limit: get(&s.rate_limit).parse().map_err(|_| {
                anyhow::anyhow!("FIELDHOOK_RATE_LIMIT must be a whole number, got {:?}", get(&s.rate_limit))
            })?,
            request_retention: duration("FIELDHOOK_REQUEST_RETENTION", &get(&s.request_retention))?,
            push_url: match get(&s.push_url).as_str() {
                "" => None,
                u => Some(
                    url::Url::parse(u)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .ok_or_else(|| anyhow::anyhow!("FIELDHOOK_PUSH_URL must be an http(s) URL, got {u:?}"))?,
                ),
            },
            log: get(&s.log),
            log_format: match get(&s.log_format).as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => bail!("FIELDHOOK_LOG_FORMAT must be text or json, got {other:?}"),
            },
        })
    }
}

/// `HOST:PORT`, or `:PORT` for every interface.
fn parse_listen(s: &str) -> anyhow::Result<SocketAddr> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_string() };
    full.parse().map_err(|_| anyhow::anyhow!("must be HOST:PORT (e.g. 127.0.0.1:7400 or :0), got {s:?}"))
}

/// `500ms`, `15s`, `5m`, `2h`, `3d`.
pub fn duration(setting: &str, s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s.trim())
        .map_err(|_| anyhow::anyhow!("{setting} must be a duration such as 500ms, 15s, 5m, 2h or 3d, got {s:?}"))
}

fn positive(setting: &str, s: &str) -> anyhow::Result<u32> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{setting} must be a positive whole number, got {s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(Settings::default()).unwrap();
        assert_eq!(c.retry_schedule.len(), 17);
        assert_eq!(c.retry_schedule[16], Duration::from_secs(72 * 3600));
        assert_eq!(c.listen.port(), 7400);
        assert_eq!(c.role, Role::All);
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        let s = Settings { retry_jitter: Some("2".into()), ..Default::default() };
        assert!(Config::load(s).unwrap_err().to_string().contains("FIELDHOOK_RETRY_JITTER"));
        let s = Settings { delivery_timeout: Some("soon".into()), ..Default::default() };
        assert!(format!("{:#}", Config::load(s).unwrap_err()).contains("FIELDHOOK_DELIVERY_TIMEOUT"));
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fh.toml");
        std::fs::write(&path, "rate_limit = 7\nrole = \"worker\"\n").unwrap();
        let s = Settings { config: Some(path), role: Some("api".into()), ..Default::default() };
        let c = Config::load(s).unwrap();
        assert_eq!(c.rate_limit, 7);
        assert_eq!(c.role, Role::Api);
    }
}
