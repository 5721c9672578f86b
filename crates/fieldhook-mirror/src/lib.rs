//! # fieldhook-mirror
//!
//! A reference receiver for fieldhook: it keeps a local SQLite replica of one
//! account's jobs, clients and sites, every resource at exactly the version
//! the server has, using *full replication* (webhooks.md, "Out of order").
//!
//! * **Deliveries** (`POST /webhook`, subscribed to the CRUD events) are
//!   verified with the webhook's signing secret and/or `X-Planado-Secret`,
//!   and a snapshot is applied only when its version is the stored one + 1
//!   (1 for a creation): an older or equal version is a duplicate (200), a
//!   higher one a gap (422: fieldhook retries it after the missing one).
//!   The check, the write and the recording of the version are one SQLite
//!   transaction (the receiver SDK's `SqliteVersionStore::begin`).
//! * **Catch-up** reads the history API when deliveries cannot help: at
//!   start (changes made while the mirror was away) and when a gap outlasts
//!   the gap timeout. See [`catch_up`] for why it ends at exactly the
//!   server's state.
//!
//! The modules follow the data: [`webhook`] (HTTP in) and [`catch_up`] (via
//! [`server_api`]) both produce [`replica::Change`]s, and [`replica`] is the
//! only writer. [`app`] wires them; [`config`] is the command line.

#![warn(missing_docs)]

pub mod app;
pub mod catch_up;
pub mod config;
pub mod replica;
pub mod server_api;
pub mod stats;
pub mod webhook;

pub use app::{Mirror, MirrorHandle};
pub use catch_up::{CatchUp, CatchUpError, CatchUpReport};
pub use config::Config;
pub use replica::{Change, Kind, LoggedChange, Replica, Source, Stored};
pub use stats::StatsSnapshot;
