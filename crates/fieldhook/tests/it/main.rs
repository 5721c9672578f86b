//! The one integration-test binary: the real server on a random port, on
//! SQLite and on PostgreSQL, driven over HTTP.

mod helpers;
mod receiver;

mod accounts_and_keys;
mod cli;
mod contract;
mod crash;
mod delivery;
mod errors;
mod fuzz;
mod jobs;
mod lifecycle;
mod outbox;
mod resources;
mod scale_out;
mod storage;
mod users_and_teams;
