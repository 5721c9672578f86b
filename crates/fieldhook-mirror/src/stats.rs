//! Counters of what the mirror did, by path (deliveries or catch-up): they
//! show an operator — and the end-to-end test — which mechanism kept the
//! replica up to date.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the webhook handler and catch-up.
#[derive(Debug, Default)]
pub struct Stats {
    delivered_applied: AtomicU64,
    delivered_ignored: AtomicU64,
    delivered_gaps: AtomicU64,
    caught_up_versions: AtomicU64,
    full_catch_ups: AtomicU64,
    gap_catch_ups: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Deliveries applied (the next version of their resource).
    pub delivered_applied: u64,
    /// Deliveries ignored: duplicates, older versions, and events the
    /// mirror does not replicate.
    pub delivered_ignored: u64,
    /// Deliveries answered 422 because a version was missing.
    pub delivered_gaps: u64,
    /// Versions applied by catch-up from the history API.
    pub caught_up_versions: u64,
    /// Completed catch-ups of the whole account.
    pub full_catch_ups: u64,
    /// Catch-ups of one resource whose gap outlasted the gap timeout.
    pub gap_catch_ups: u64,
}

fn bump(counter: &AtomicU64, by: u64) {
    // Counters are independent tallies; no ordering with other memory is needed.
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            delivered_applied: get(&self.delivered_applied),
            delivered_ignored: get(&self.delivered_ignored),
            delivered_gaps: get(&self.delivered_gaps),
            caught_up_versions: get(&self.caught_up_versions),
            full_catch_ups: get(&self.full_catch_ups),
            gap_catch_ups: get(&self.gap_catch_ups),
        }
    }

    pub(crate) fn delivered_applied(&self) {
        bump(&self.delivered_applied, 1);
    }

    pub(crate) fn delivered_ignored(&self) {
        bump(&self.delivered_ignored, 1);
    }

    pub(crate) fn delivered_gap(&self) {
        bump(&self.delivered_gaps, 1);
    }

    pub(crate) fn caught_up(&self, versions: u64) {
        bump(&self.caught_up_versions, versions);
    }

    pub(crate) fn full_catch_up(&self) {
        bump(&self.full_catch_ups, 1);
    }

    pub(crate) fn gap_catch_up(&self) {
        bump(&self.gap_catch_ups, 1);
    }
}
