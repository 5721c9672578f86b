//! The `fieldhook` command line (operations.md, "One binary").

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Settings};
use crate::domain::scope::Scopes;
use crate::server::{self, Server};
use crate::storage::sql;
use crate::storage::{Db, OpenOptions, accounts};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::sync::Arc;

/// fieldhook: jobs, clients and sites in through a REST API, out through webhooks.
#[derive(Debug, Parser)]
#[command(name = "fieldhook", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and the delivery workers (migrates the database first).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Manage API keys.
    #[command(name = "api-key")]
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account; prints {"account_uuid", "api_key"} (an owner key with scope *).
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; prints {"api_key_uuid", "api_key"}.
    Create {
        #[arg(long)]
        account: uuid::Uuid,
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. jobs:write,clients:read (or *).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
}

/// Runs the command line.
///
/// # Errors
/// Whatever stopped the command; `main` prints it and exits non-zero.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.settings)?;
    server::init_logging(&config.log, config.log_format)?;
    match cli.command {
        Command::Serve => {
            let server = Server::build(config, Arc::new(SystemClock)).await?;
            server.run_until(server::shutdown_signal()).await
        }
        Command::Migrate => {
            let db = Db::open(&config.database_url, OpenOptions::default()).await?;
            db.migrate().await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Account { command: AccountCommand::Create { name } } => {
            let name = name.trim().to_string();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let db = migrated(&config).await?;
            let now = SystemClock.now();
            let (account, key) = db
                .committer
                .write(move |conn| {
                    Box::pin(async move {
                        let account = accounts::create_account(conn, &name, now).await?;
                        let key =
                            accounts::create_key(conn, account, "owner", &Scopes::parse(["*"]).expect("valid"), now)
                                .await?;
                        Ok((account, key))
                    })
                })
                .await?;
            println!("{}", serde_json::json!({ "account_uuid": account, "api_key": key.api_key }));
            Ok(())
        }
        Command::ApiKey { command: ApiKeyCommand::Create { account, name, scopes } } => {
            let scopes = Scopes::parse(&scopes).map_err(|s| anyhow::anyhow!("--scopes: {s:?} is not a scope"))?;
            anyhow::ensure!(!scopes.is_empty(), "--scopes must name at least one scope");
            let db = migrated(&config).await?;
            let now = SystemClock.now();
            let key = db
                .committer
                .write(move |conn| {
                    Box::pin(async move {
                        let exists: i64 = sql::query_scalar("SELECT COUNT(*) FROM accounts WHERE uuid = $1")
                            .bind(account.to_string())
                            .fetch_one(&mut *conn)
                            .await?;
                        if exists == 0 {
                            return Err(crate::error::Error::NotFound("account"));
                        }
                        accounts::create_key(conn, account, &name, &scopes, now).await
                    })
                })
                .await
                .with_context(|| format!("--account {account}"))?;
            println!("{}", serde_json::to_string(&key)?);
            Ok(())
        }
    }
}

async fn migrated(config: &Config) -> anyhow::Result<Db> {
    let db = Db::open(&config.database_url, OpenOptions::default()).await?;
    db.migrate().await?;
    Ok(db)
}
