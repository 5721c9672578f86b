//! End-to-end tests of fieldhook-mirror: the real fieldhook server
//! in-process, the mirror in-process, and between them a chaos proxy that
//! drops, delays, reorders and duplicates deliveries. Each test ends by
//! comparing the replica with the server field by field and version by
//! version. `TEST_LOG=1` shows the logs; `CHAOS_SEED=N` replays another
//! sequence of chaos and workload choices.

mod harness;
mod proxy;
mod replication;
mod workload;
