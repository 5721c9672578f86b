//! fieldhook: keeps a field-service company's jobs, clients and sites in sync
//! with its other systems — an inbound REST API (`/v2`) and outbound webhooks.
//!
//! The modules follow the data: [`api`] (HTTP) → [`domain`] (rules, no I/O) →
//! [`storage`] (SQLite or PostgreSQL, with the outbox) → `delivery` (the
//! webhook engine) → the receiver. [`config`] and [`server`] wire them up for
//! the `fieldhook` binary.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod server;
pub mod storage;
