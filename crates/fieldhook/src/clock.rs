//! Time as a dependency. Retries, suspension, token expiry and timestamps read
//! the injected [`Clock`], so tests move time forward instead of sleeping.

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use std::sync::{Arc, Mutex};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock, used in production.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        micros(Utc::now())
    }
}

/// A clock that tests set and advance by hand; it starts at the wall time so
/// that stored timestamps look real.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(micros(Utc::now()))))
    }
}

impl ManualClock {
    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().expect("clock poisoned");
        *t += TimeDelta::from_std(by).expect("duration in range");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock poisoned")
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// Microseconds since the epoch: how timestamps are stored (portable, sortable).
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Times are stored in microseconds; truncating at the source keeps a
/// snapshot and its stored columns identical. (Replacing the nanoseconds is
/// cheaper than `duration_trunc`, which divides the whole timestamp, and a
/// delivery reads the clock several times.)
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}
